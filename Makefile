# The two commands a newcomer needs: `make run` and `make test`.
# Everything installs into .venv from uv.lock; only Python 3.11+ must be on the machine.
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.8

.PHONY: install run test test-unit test-integration clean test-programs asyncapi

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv sync --frozen --python $(VENV)/bin/python
	touch $@

run: install
	$(VENV)/bin/switchboard up

test: install test-programs
	$(VENV)/bin/pytest

# The tests' programs from Debian's packages, installed when missing (CI runs as root; elsewhere this
# uses sudo): tests/deploy checks the alert rules with promtool and scrapes the running services with
# a real Prometheus server (package `prometheus`); the pages' tests drive a real headless chromium
# through Playwright (package `chromium`; Playwright's own browser download is never used).
test-programs:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -z "$$missing" ] || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

# Regenerate the committed AsyncAPI documents (deploy/asyncapi/) from the services' code.
asyncapi: install
	$(VENV)/bin/python -m tools.asyncapi_export

test-unit: install
	$(VENV)/bin/pytest tests/unit

test-integration: install test-programs
	$(VENV)/bin/pytest -m integration

clean:
	rm -rf $(VENV) .switchboard .pytest_cache
