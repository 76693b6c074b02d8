# Set-up and the two commands of the README. Each target is idempotent: a
# second call skips what is already installed.
PYTHON ?= python3
VENV ?= .venv
# A GPU machine picks its own build, e.g. TORCH_SPEC='torch==2.13.0' with its CUDA index.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.coldstart-installed
DEMO_OUT ?= out/demo
DEMO_PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install demo test test-fast clean

install: $(STAMP)

# torch goes in first, pinned, so that no later requirement can pull another build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/coldstart pipeline --config configs/demo.yaml --out $(DEMO_OUT)
	$(BIN)/coldstart serve --artifacts $(DEMO_OUT) --port $(DEMO_PORT) --smoke
	@echo "report: $(DEMO_OUT)/report/report.md"
	@echo "to keep the server up: $(BIN)/coldstart serve --artifacts $(DEMO_OUT) --port $(DEMO_PORT)"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf out .pytest_cache
