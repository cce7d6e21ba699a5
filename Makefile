PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make demo` and `make serve` need only the server extra (NumPy, Starlette, hypercorn, rich),
# not the dev extra's test, lint and browser tools (533 MB with Playwright).
SERVER_STAMP := $(VENV)/.installed-server

.PHONY: test properties demo bench serve lint types clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP) $(SERVER_STAMP)

$(SERVER_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[server]'
	touch $(SERVER_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check arkor_trio tests benchmarks examples
	$(BIN)/ruff format --check arkor_trio tests benchmarks examples

types: $(STAMP)
	$(BIN)/mypy --strict arkor_trio

test: lint types
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The property tests with fresh random examples and a far larger budget (outside CI): 50,000
# examples per test by default, about 35 CPU minutes; ARKOR_HYPOTHESIS_EXAMPLES=N to change it.
PROPERTY_TESTS := tests/test_codec.py tests/test_sse_properties.py tests/testing/test_proxy_frames.py
properties: $(STAMP)
	ARKOR_HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest -q -p no:cacheprovider \
		--hypothesis-show-statistics $(PROPERTY_TESTS)

demo: $(SERVER_STAMP)
	$(BIN)/arkor-trio demo

serve: $(SERVER_STAMP)
	$(BIN)/arkor-trio serve

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
