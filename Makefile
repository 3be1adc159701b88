# Everything runs from .venv/, which the first target to need it creates.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test chromium demo up lint check bench soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

test: $(STAMP) chromium
	$(PY) -m pytest -q

# The staff console's tests drive Debian's Chromium through Playwright (never `playwright install`,
# which downloads a browser build). Installed once when missing; the machine and CI run as root.
chromium:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

demo: $(STAMP)
	$(VENV)/bin/margin-call demo

up: $(STAMP)
	$(VENV)/bin/margin-call up

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# What CI enforces before the tests: lint, format and types.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

BENCH_ACCOUNTS ?= 2000
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	$(PY) -m tools.bench --accounts $(BENCH_ACCOUNTS) $(BENCH_ARGS)

SOAK_MINUTES ?= 10
SOAK_SEED ?= 42
soak: $(STAMP)
	$(PY) -m tools.soak --minutes $(SOAK_MINUTES) --seed $(SOAK_SEED)

clean:
	rm -rf $(VENV) .data
