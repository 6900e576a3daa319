# Two commands on a fresh machine:
#   make demo   set everything up, open the quickstart notebook in JupyterLab (NO_BROWSER=1: print the URL only)
#   make test   set everything up, run every test (browser tests included)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PORT   ?= 8888

.PHONY: test demo bench browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,notebooks,bench]"
	rm -f $(VENV)/.installed-*; touch $@

# Debian's chromium for the real-browser tests; fails (never skips) when it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation; }
	@chromium --version

test: $(STAMP) browser
	REQUIRE_BROWSER=1 $(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m nbviz.demo.launch --port $(PORT) $(if $(NO_BROWSER),--no-browser,)

bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
