# robustctl — every target sets itself up: `make run` / `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned to the builds that install from local disk on the reference machine.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run train test test-system test-slow test-slurm test-gpu test-all lint bench ui report smoke paper-digits verdict-digits verdict-fashion paper-fashion paper-mnist paper-cifar10 detectors-digits detectors-cifar10 robust-digits robust-cifar10 clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_%-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install robustctl with its dev tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	# adv-lib: the FMN reference of tests/attacks/test_fmn_reference.py; without its dependencies,
	# since visdom (used only by its loggers) does not build here
	$(BIN)/pip install --quiet --no-deps "adv-lib==0.2.8"
	touch $(STAMP)

run: install  ## the main job on the embedded default (digits): train + evaluate, logged to MLflow
	$(BIN)/robustctl run $(ARGS)

train: install  ## train only (pass overrides with ARGS="dataset=fashion_mnist ...")
	$(BIN)/robustctl train $(ARGS)

# Test tiers (markers in pyproject.toml). `make test`: everything that needs no cluster, browser,
# server or GPU and takes under ~10 s a test; `make test-system`: the rest. Extra pytest
# arguments: PYTEST_ARGS, e.g. PYTEST_ARGS="--durations=25" (what .ci/run passes).
SYSTEM_TESTS := slow or server or slurm or browser or gpu
PYTEST_ARGS ?=
PYTEST := $(BIN)/pytest -q $(PYTEST_ARGS)

test: install  ## fast tier: no cluster, browser, server or GPU, no test over ~10 s (< 8 min on 2 CPU cores)
	$(PYTEST) -m "not ($(SYSTEM_TESTS))"

test-system: install  ## system tier: slow (real data, end-to-end jobs, sweeps), server, slurm, browser, gpu tests
	$(PYTEST) -m "$(SYSTEM_TESTS)"

test-slow: install  ## only the slow tests of the system tier (real data, long runs, end-to-end subprocess jobs)
	$(PYTEST) -m slow

test-slurm: install  ## sweeps on a real SLURM cluster (start one: sudo .ci/slurm-cluster up)
	$(PYTEST) -m slurm

test-gpu: install  ## real-CUDA tests (device placement of every stage); skipped without a GPU
	$(PYTEST) -m gpu

test-all: install  ## every test (make test + make test-system)
	$(PYTEST)

lint: install  ## ruff: lint rules (line length 100 included) and formatting
	$(BIN)/ruff check robustctl tests benchmarks
	$(BIN)/ruff format --check robustctl tests benchmarks

bench: install  ## benchmarks (ratios against named references, same run)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

report: install  ## paper Tables 1-4 from the runs in MLflow -> reports/latest (md, csv, html)
	$(BIN)/robustctl report $(ARGS)

smoke: install  ## experiments/smoke.yaml: the whole protocol on synthetic data in about a minute
	$(BIN)/robustctl experiment smoke $(ARGS)

paper-digits: install  ## experiments/paper_digits.yaml: CE/RCE/PDM x 5 seeds on digits, Tables 1-4 with converged white-box ladders and intervals (2 CPU cores)
	$(BIN)/robustctl experiment paper_digits $(ARGS)

verdict-digits: install  ## experiments/verdict_digits.yaml: converged white-box attacks on CE/RCE/PDM x 5 seeds x 2 starts, the PDM ratio with intervals
	$(BIN)/robustctl experiment verdict_digits $(ARGS)

verdict-fashion: install  ## experiments/verdict_fashion.yaml: converged FMN-wb on CE/RCE/PDM x 5 seeds on Fashion-MNIST (needs dataset-fashion-mnist), the PDM ratio with intervals
	$(BIN)/robustctl experiment verdict_fashion $(ARGS)

paper-fashion: install  ## experiments/paper_fashion_cpu.yaml: Tables 1-4 on Fashion-MNIST, CPU budget
	$(BIN)/robustctl experiment paper_fashion_cpu $(ARGS)

paper-mnist: install  ## experiments/paper_mnist.yaml: the paper's MNIST settings (GPU)
	$(BIN)/robustctl experiment paper_mnist $(ARGS)

paper-cifar10: install  ## experiments/paper_cifar10.yaml: the paper's CIFAR-10 settings (GPU)
	$(BIN)/robustctl experiment paper_cifar10 $(ARGS)

robust-digits: install  ## experiments/robust_accuracy_digits.yaml: AutoAttack robust accuracy of CE/PDM x plain/PGD training/TRADES, with and without KDE (CPU)
	$(BIN)/robustctl experiment robust_accuracy_digits $(ARGS)

robust-cifar10: install  ## experiments/robust_accuracy_cifar10.yaml: its CIFAR-10 twin at the standard budgets (GPU)
	$(BIN)/robustctl experiment robust_accuracy_cifar10 $(ARGS)

detectors-digits: install  ## experiments/detectors_digits.yaml: 6 detectors x CE/RCE/PDM on digits, gray-box + adaptive white-box, Table 5 (<1 h, 2 CPU cores)
	$(BIN)/robustctl experiment detectors_digits $(ARGS)

detectors-cifar10: install  ## experiments/detectors_cifar10.yaml: the detectors comparison on CIFAR-10, paper budgets (GPU)
	$(BIN)/robustctl experiment detectors_cifar10 $(ARGS)

taxonomy-%: install  ## experiments/taxonomy_<hypothesis>_<dataset>.yaml, e.g. make taxonomy-category2-digits (category1 | category2 | batchnorm | ensemble; digits < 1 h on 2 CPU cores, cifar10 on a GPU)
	$(BIN)/robustctl experiment taxonomy_$(subst -,_,$*) $(ARGS)

ui: install  ## open the MLflow UI on the project's tracking store
	$(BIN)/robustctl ui

clean:  ## remove outputs, stores and caches (keeps .venv)
	rm -rf outputs multirun checkpoints mlartifacts mlruns mlruns.db mlruns.db.lock reports .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
