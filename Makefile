# aiimg: every target installs what it needs itself.
#   make demo   set everything up, run the whole loop on the built-in tiny model, build the gallery
#   make test   the test suite (tiny real model, real browser)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: a CPU wheel here; set TORCH= to your CUDA build on a GPU machine
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
GALLERY := $(VENV)/.installed-gallery

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_VERBOSITY ?= error
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install gallery-install chromium demo run build serve test lint fmt bench golden clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[studio,rank,dev,search,ray]"
	# spandrel without its torchvision pin: PyPI's torchvision only loads beside a CUDA torch, and the
	# upscaler code paths never call it (tests/test_finishing.py stands in for it during import)
	$(BIN)/pip install -q --no-deps "spandrel==0.4.2" "einops>=0.8"
	touch $(STAMP) $(GALLERY)

# the gallery alone needs no torch: `make build` on a machine that only publishes
$(GALLERY): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $(GALLERY)

install: $(STAMP)

gallery-install: $(GALLERY)

# Debian's chromium for the browser tests (Playwright cannot download browsers offline)
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: install
	$(BIN)/python -m pipeline.demo

run: install
	$(BIN)/aiimg run

build: gallery-install
	$(BIN)/aiimg build

serve: gallery-install
	$(BIN)/aiimg serve

test: install chromium lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# ruff: lint and format check (line length in pyproject.toml); `make fmt` applies both
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install chromium
	OMP_NUM_THREADS=1 $(BIN)/python bench/studio.py
	$(BIN)/python bench/gallery.py
	$(BIN)/python bench/ranking.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/prompts.py
	$(BIN)/python bench/steering.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/finishing.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/workers.py

# refresh the golden pages on purpose, after a deliberate change to the templates
golden: install
	AIIMG_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q tests/test_gallery_golden.py

clean:
	rm -rf output build *.egg-info .pytest_cache
