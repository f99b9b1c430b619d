# FlexUNet developer targets. Python 3.10+ and pip; torch==2.13.0 (CPU) is pinned.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# 2 cores: keep BLAS from oversubscribing pytest workers
export OMP_NUM_THREADS ?= 2

.PHONY: venv docs-check test test-slow demo bench-speed bench-quality bench-models bench-zoo-quality bench-augment bench-memory bench-demo-variants bench-quality-settings clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

docs-check: $(STAMP)
	$(BIN)/python tools/docs_check.py

test: $(STAMP) docs-check
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/flexunet demo demo_run

bench-speed: $(STAMP)
	$(BIN)/python bench/speed.py

bench-quality: $(STAMP)
	$(BIN)/python bench/quality.py

bench-models: $(STAMP)
	$(BIN)/python bench/models.py

bench-quality-settings: $(STAMP)
	$(BIN)/python bench/quality_settings.py

bench-zoo-quality: $(STAMP)
	$(BIN)/python bench/zoo_quality.py

bench-augment: $(STAMP)
	$(BIN)/python bench/augment_speed.py

bench-memory: $(STAMP)
	$(BIN)/python bench/memory.py

bench-demo-variants: $(STAMP)
	$(BIN)/python bench/demo_variants.py

clean:
	rm -rf demo_run bench/results .pytest_cache
