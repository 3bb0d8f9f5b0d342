# The two commands a newcomer needs: `make run` and `make test`.
# Everything installs into .venv from uv.lock; only Python 3.11+ must be on the machine.
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.8

.PHONY: install run test test-unit test-integration lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv sync --frozen --python $(VENV)/bin/python
	touch $@

run: install
	$(VENV)/bin/switchboard up

test: install
	$(VENV)/bin/pytest

test-unit: install
	$(VENV)/bin/pytest tests/unit

test-integration: install
	$(VENV)/bin/pytest -m integration

clean:
	rm -rf $(VENV) .switchboard .pytest_cache
