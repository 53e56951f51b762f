# Two commands for a new user: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	@command -v iptables >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q iptables >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q iptables >/dev/null; }; } || true; }
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m hyphal.demo examples/shop

bench: $(STAMP)
	$(PY) bench/run_all.py

LINT_STAMP := $(VENV)/.lint-installed

$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,dev]'
	touch $(LINT_STAMP)

# Both checks always run; the target fails if either found something.
lint: $(LINT_STAMP)
	@rc=0; \
	$(PY) -m ruff check src tests || rc=1; \
	$(PY) -m mypy src || rc=1; \
	exit $$rc

clean:
	rm -rf $(VENV) .hyphal
