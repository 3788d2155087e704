# dfnas_pl — everything goes through the virtual environment in .venv, which `install` builds.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# one pytest worker per core (pytest-xdist); idle workers take queued tests from busy ones
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: install test test-fast run synthesize paper-table ablation groundtruth macro-pilot macro-groundtruth macro-rank-fidelity macro-paper-table small-teacher rank-fidelity synthesis-sweep synthesis-sets synthesis-bn-weight synthesis-budget synthesis-around-default synthesis-window-confirm synthesis-first-bn synthesis-rounds distillation-budget synthesis-alternatives darts-collapse device-carry lint bench clean

install: $(VENV)/.installed $(FMNIST)

$(VENV)/.installed: setup.cfg setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Real Fashion-MNIST without a download: Debian's dataset-fashion-mnist package.
$(FMNIST):
	$(SUDO) apt-get install -y dataset-fashion-mnist || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist)

test: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

# The main job on the embedded default teacher: synthesis -> 3 searches -> retraining, then a table.
run: install
	$(PY) -m dfnas_pl pipeline --config experiments/fmnist/pipeline.yaml

synthesize: install
	$(PY) -m dfnas_pl fit --config experiments/fmnist/synthesize.yaml

# The paper's comparison at our scale (about 2 hours; a benchmark, not a test).
paper-table: install
	$(PY) -m dfnas_pl paper-table --config studies/paper_table/paper_table.yaml

ablation: install
	$(PY) -m dfnas_pl paper-table --config studies/paper_table/ablation.yaml

# The ranking-fidelity instrument (benchmarks; resumable; results committed under benchmarks/):
# real-data accuracy of fixed architectures per space (~45-60 min each), then how each search-data
# source ranks them (README, "Ranking fidelity").
groundtruth: install
	$(PY) -m dfnas_pl groundtruth --config studies/layerwise_groundtruth/groundtruth_shufflenetv2.yaml
	$(PY) -m dfnas_pl groundtruth --config studies/layerwise_groundtruth/groundtruth_mobilenetv2.yaml

# The macro space (studies/macro_pilot, studies/macro_groundtruth): the pilot that chose the recipe, then the
# ground truth itself (about 3 CPU-hours on 2 workers; resumable, records committed).
macro-pilot: install
	$(PY) -m dfnas_pl groundtruth --config studies/macro_pilot/pilot_3ep.yaml
	$(PY) studies/macro_pilot/analyse.py

macro-groundtruth: install
	$(PY) -m dfnas_pl groundtruth --config studies/macro_groundtruth/groundtruth_macro.yaml

# Rank fidelity on the macro space: the budget pilot, then every source (studies/macro_rank_fidelity; resumable).
macro-rank-fidelity: install
	$(PY) -m dfnas_pl rank-fidelity --config studies/macro_rank_fidelity/budget_pilot.yaml
	$(PY) -m dfnas_pl rank-fidelity --config studies/macro_rank_fidelity/rank_fidelity_macro.yaml

# The paper's table on the macro space, found architectures trained with the ground truth's recipe (resumable).
macro-paper-table: install
	$(PY) -m dfnas_pl paper-table --config studies/macro_paper_table/paper_table_macro.yaml

# What a small teacher of a user's own gives (studies/small_teacher; about 10 minutes).
small-teacher: install
	$(PY) studies/small_teacher/run.py

rank-fidelity: install
	$(PY) -m dfnas_pl rank-fidelity --config studies/layerwise_groundtruth/rank_fidelity.yaml

# The distillation check (3 student seeds) over synthesis variants, one factor at a time (benchmark).
synthesis-sweep: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_sweep.yaml

# Calibration x regional update, a synthetic set of its own per seed (set-to-set variance in the intervals).
synthesis-sets: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_sets.yaml

# The BN-loss weight at 10x the official, confirmed on 8 seeds (reuses synthesis-sets' seeds 0-3).
synthesis-bn-weight: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_bn_weight.yaml

# The image-count cost curve: 500 to 5,000 plain-inversion images, a set per seed, students of equal steps.
synthesis-budget: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_budget.yaml

# One factor at a time around the shipped default (calibration, zoom, window, r_feature 0.03 / 0.3).
synthesis-around-default: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_around_default.yaml

# The window regional update confirmed or not on 8 seeds (reuses the records of synthesis-around-default).
synthesis-window-confirm: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_window_confirm.yaml

# The first-BN multiplier x3 / x30 around the shipped default's x10 (reuses the default's records).
synthesis-first-bn: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_first_bn.yaml

# The official 10 rounds (hard and calibrated) around the shipped default's 2 (reuses the default's records).
synthesis-rounds: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_quality/synthesis_rounds.yaml

# The distillation check's student budget against real data of a set's size (resumable; about 2 h on 2 cores).
distillation-budget: install
	$(PY) studies/distillation_budget/run.py

# Diversity terms and the generator synthesizer against the default, at the 1,280-step check (benchmark).
synthesis-alternatives: install
	$(PY) -m dfnas_pl synthesis-sweep --config studies/synthesis_alternatives/synthesis_alternatives.yaml

lint: install
	$(PY) -m ruff check .

# DARTS collapse with and without the P-DARTS guard, on real and synthetic data (benchmark; resumable).
darts-collapse: install
	$(PY) studies/darts_collapse/run.py --synthetic runs/fmnist/synthetic

# For a session lent the GPU machine (bench/device_groundtruth.sh): what its image lacks, into git-ignored
# folders that the device tool carries: the pure-Python wheels (Python 3.12 there) and the dataset files.
# The versions are the ones installed here (the ones the tests ran with).
device-carry: install
	mkdir -p .whl .fmnist
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux2014_x86_64 -d .whl \
	  $$($(PY) -m pip freeze | grep -iE '^(jsonargparse|docstring[-_]parser|typeshed[-_]client)==')
	cp /usr/share/datasets/fashion-mnist/*.gz .fmnist/

bench: install
	$(PY) -m bench.synthesis --out bench/results.md
	$(PY) -m bench.scaling --out bench/results.md
	$(PY) -m bench.paper_configs --out bench/results.md
	$(PY) -m bench.groundtruth_loop --out bench/results.md

clean:
	rm -rf runs lightning_logs wandb .pytest_cache
