# The two commands a newcomer needs: `make run` and `make test`.
# Everything installs into .venv from uv.lock; only Python 3.11+ must be on the machine.
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.8

.PHONY: install run test test-unit test-integration lint clean promtool asyncapi

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv sync --frozen --python $(VENV)/bin/python
	touch $@

run: install
	$(VENV)/bin/switchboard up

test: install promtool
	$(VENV)/bin/pytest

# tests/deploy checks the alert rules with promtool and scrapes the running services with a real
# Prometheus server: both come from Debian's `prometheus` package, installed here when missing
# (CI runs as root; elsewhere this uses sudo).
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# Regenerate the committed AsyncAPI documents (deploy/asyncapi/) from the services' code.
asyncapi: install
	$(VENV)/bin/python -m tools.asyncapi_export

test-unit: install
	$(VENV)/bin/pytest tests/unit

test-integration: install
	$(VENV)/bin/pytest -m integration

clean:
	rm -rf $(VENV) .switchboard .pytest_cache
