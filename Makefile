# influence-lab: `make demo` sets up and runs the demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench lint docs clean slurm-up slurm-down

setup: $(STAMP)

# torch first and pinned: it takes the CPU build on this machine's disk (no CUDA download);
# the project's torch range is then already satisfied.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/influence-lab pipeline

test: setup docs
	$(BIN)/ruff check src tests
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not slow and not slurm"

lint: setup
	$(BIN)/ruff check src tests

# the documentation site (docs/ + mkdocs.yml) into outputs/site; warnings fail the build
docs: setup
	$(BIN)/mkdocs build --strict --quiet --site-dir outputs/site

clean:
	rm -rf outputs

bench: setup
	$(BIN)/python benchmarks/retrain_throughput.py
	$(BIN)/python benchmarks/search_scale.py --attribute
	$(BIN)/python benchmarks/default_models.py --out outputs --docs docs

# a single-node SLURM cluster on this machine (Debian's slurm-wlm, installed if missing);
# then: export SLURM_CONF=$(CURDIR)/.slurm/slurm.conf
slurm-up:
	bash scripts/slurm-up.sh

slurm-down:
	bash scripts/slurm-down.sh
