# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(STAMP)
	$(BIN)/openi2v serve --dev

test: $(TEST_STAMP) $(CHROMIUM)
	OPENI2V_CHROMIUM=$(CHROMIUM) OPENI2V_TEST_REQUIRE_SERVERS=1 \
	  OPENI2V_TEST_POSTGRES_URL=$$(bash scripts/test-postgres.sh) $(BIN)/python -m pytest -q

# The playground's browser test drives Debian's chromium (Playwright never downloads one).
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	  ($(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

bench: $(TEST_STAMP)
	$(BIN)/python bench/api_load.py
	$(BIN)/python bench/api_memory.py
	$(BIN)/python bench/motion_vs_ffmpeg.py
	$(BIN)/python bench/gpu_denoise.py
	$(BIN)/python bench/gpu_end_to_end.py
	$(BIN)/python bench/gpu_decode.py

clean:
	rm -rf $(VENV) data .pytest_cache
