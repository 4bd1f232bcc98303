# influence-lab: `make demo` sets up and runs the demo; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow test-soak test-fast bench lint docs data clean slurm-up slurm-down

setup: $(STAMP)

# torch first and pinned: it takes the CPU build on this machine's disk (no CUDA download);
# the project's torch range is then already satisfied. kronfluence (the `kfac` / `ekfac`
# attributors) goes in without its declared torchvision, which it never imports: PyPI's torchvision
# wheel does not load beside the CPU torch ("operator torchvision::nms does not exist"), and an
# unpinned one pulls another torch with CUDA; its other needs are installed first.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,diffusers]'
	$(BIN)/pip install --quiet accelerate einconv einops opt_einsum safetensors
	$(BIN)/pip install --quiet --no-deps kronfluence==1.0.1
	touch $(STAMP)

demo: setup
	$(BIN)/influence-lab pipeline

# the suite without the integration runs (`slow`) and the soak; CI runs all three targets
test: setup docs
	$(BIN)/ruff check src tests
	$(BIN)/pytest -q -m "not soak and not slow" --durations=15

# the integration runs: whole pipelines, the custom-model example, fashion end to end, gpu-check --cpu
test-slow: setup
	$(BIN)/pytest -q -m "slow and not soak" --durations=15

# the kill-every-20-seconds soak test (minutes on 2 cores); CI runs it after `make test`
test-soak: setup
	$(BIN)/pytest -q -m soak

test-fast: setup
	$(BIN)/pytest -q -m "not slow and not slurm"

lint: setup
	$(BIN)/ruff check src tests

# the documentation site (docs/ + mkdocs.yml) into outputs/site; warnings fail the build
docs: setup
	$(BIN)/mkdocs build --strict --quiet --site-dir outputs/site

# Fashion-MNIST from Debian's dataset-fashion-mnist (installed as root; otherwise says how)
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST is installed in /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null && \
	  echo "installed Fashion-MNIST into /usr/share/datasets/fashion-mnist"; \
	else \
	  echo "Fashion-MNIST is missing: as root run 'apt-get install dataset-fashion-mnist', or put the four"; \
	  echo "standard files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,"; \
	  echo "t10k-labels-idx1-ubyte.gz) into a folder and pass data.source.path=FOLDER"; \
	fi

clean:
	rm -rf outputs

bench: setup
	$(BIN)/python benchmarks/retrain_throughput.py
	$(BIN)/python -m benchmarks.pack_step
	$(BIN)/python -m benchmarks.projection
	$(BIN)/python benchmarks/search_scale.py --attribute
	$(BIN)/python benchmarks/default_models.py --out outputs --docs docs

# a single-node SLURM cluster on this machine (Debian's slurm-wlm, installed if missing);
# then: export SLURM_CONF=$(CURDIR)/.slurm/slurm.conf
slurm-up:
	bash scripts/slurm-up.sh

slurm-down:
	bash scripts/slurm-down.sh
