# Set-up and the two jobs of a fresh checkout: `make book` (execute + render) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PRESET ?= tiny
# torch is pinned exactly: here the pin takes the CPU wheel on disk; an open range pulls a
# multi-GB CUDA build. On another CPU-only machine set TORCH_INDEX to PyTorch's CPU wheel index.
TORCH_INDEX ?=
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: book build test setup lab bench lint clean

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

lab: setup                        ## open the chapters in JupyterLab
	$(BIN)/jupyter lab chapters/

bench: setup                      ## side-by-side ratios: tokenizers, training throughput, inference
	$(BIN)/python bench/tokenizer.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/inference.py

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf _book runs/*/
