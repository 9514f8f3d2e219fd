# Set-up and the two jobs of a fresh checkout: `make book` (execute + render) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PRESET ?= tiny
# torch is pinned exactly: here the pin takes the CPU wheel on disk; an open range pulls a
# multi-GB CUDA build. On another CPU-only machine set TORCH_INDEX to PyTorch's CPU wheel index.
TORCH_INDEX ?=
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: book build test setup lab hooks bench lint clean

book: setup                       ## execute every stale chapter at PRESET, then render _book/
	$(BIN)/nanobook make --preset $(PRESET)

build: setup                      ## render _book/ from what runs/ holds (never executes)
	$(BIN)/nanobook build --preset $(PRESET)

test: setup                       ## the test suite (offline)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

lab: setup hooks                  ## open the chapters in JupyterLab (served from the root, so jupytext.toml applies)
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/chapters

# Strip outputs and volatile metadata from notebooks as git stages them (nbstripout as a git
# filter; the same flags tests/test_pairing.py checks).
NBSTRIP := $(abspath $(BIN))/nbstripout --keep-id --extra-keys "metadata.language_info cell.metadata.execution"
hooks: setup                      ## install the notebook output filter into this clone's git config
	git config filter.nbstripout.clean '$(NBSTRIP)'
	git config filter.nbstripout.smudge cat
	git config filter.nbstripout.required true

bench: setup                      ## side-by-side ratios: tokenizers, training throughput, inference
	$(BIN)/python bench/tokenizer.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/inference.py

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf _book runs/*/
