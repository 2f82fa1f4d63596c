# The README's two commands: `make run` and `make test`. Each installs what it needs first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install system-packages run test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $@

install: $(INSTALLED)

# Debian packages the tests use (Prometheus, promtool, docker-compose, redis-server, PostgreSQL).
# Installed when running as root with apt available; tests that need them skip with the reason
# otherwise (the job tests fail under CI).
system-packages:
	@./scripts/install-system-packages.sh

# Host, port, model and the rest come from AMANUENSIS_* (see config/amanuensis.env.example).
run: install
	$(VENV)/bin/amanuensis serve

test: install system-packages
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check app npu tests

clean:
	rm -rf $(VENV) kernels/build
