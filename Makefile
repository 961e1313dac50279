# Two commands do everything: `make book` and `make test` (see README.md).
# Choose another torch build with TORCH_SPEC / TORCH_INDEX, for example a CUDA wheel:
#   make book TORCH_SPEC=torch==2.13.0 TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu126"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PROFILE ?= cpu
DATASET ?= synthetic
DATA_ROOT ?=
SET ?=
REMOTE ?= origin

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BOOK_ARGS := --profile $(PROFILE) --dataset $(DATASET) $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) \
	$(foreach s,$(SET),--set $(s))

.PHONY: setup book notebooks test lint format benchmark publish clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

book: $(STAMP)
	unset MPLBACKEND; $(BIN)/python -m cmi.book $(BOOK_ARGS)

notebooks: $(STAMP)
	unset MPLBACKEND; $(BIN)/python -m cmi.book $(BOOK_ARGS) --no-build

test: $(STAMP)
	unset MPLBACKEND; $(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

benchmark: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/quality.py

publish: $(STAMP)
	$(BIN)/python -m cmi.publish --remote $(REMOTE)

clean:
	rm -rf _build book/chapters book/reproducibility.md
