PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test properties demo bench serve lint types clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

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

demo: $(STAMP)
	$(BIN)/arkor-trio demo

serve: $(STAMP)
	$(BIN)/arkor-trio serve

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
