# minillada: the two commands a newcomer needs are `make reproduce` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PRESET ?= cpu
# A CPU wheel that lies on these machines' disk; on a GPU machine set TORCH_SPEC to a CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.minillada-installed

.PHONY: help setup reproduce test lint lab clean-results

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'
	@echo "  variables: PRESET=smoke|cpu|cpu-seeds|gpu (default cpu; cpu-seeds: the committed multi-seed study, hours), TORCH_SPEC, PYTHON"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP) ## create .venv and install the project (idempotent)

reproduce: $(STAMP) ## run the study notebooks 01-05 at PRESET through papermill
	$(BIN)/python -m minillada reproduce --preset $(PRESET)

test: $(STAMP) ## lint, then the whole test suite (CPU, < 10 min)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP) ## ruff only
	$(BIN)/ruff check .

lab: $(STAMP) ## JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/

clean-results: ## remove executed notebooks and run folders (keeps committed figures)
	rm -rf notebooks/output runs
