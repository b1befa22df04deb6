# `make demo` and `make test` create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision pinned to the releases known to import together here (see README).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# the test tools, and Ray (federation.executor=ray) so that `make test` runs its tests too
EXTRAS ?= dev,ray

.PHONY: demo test test-fast lint bench gpu-check clean-runs mutate

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(PY) scripts/compare.py experiment=demo --seeds 0,1,2

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check afl callbacks scripts tests
	$(VENV)/bin/mypy afl callbacks

# Mutation testing of afl/server, afl/sim, afl/data/partition.py and afl/client/cohort.py against their fast tests (mutmut; see
# docs/testing.md). Not part of `make test`. Results are kept in mutants/: a re-run tests only new or changed
# mutants (rm -rf mutants for a fresh run); MUTANTS='afl.server.*' runs only those.
# One test process per core (mutmut's default).
mutate: $(VENV)/.installed
	HYPOTHESIS_PROFILE=mutation $(VENV)/bin/mutmut run $(MUTANTS)
	$(PY) scripts/mutation_score.py

bench: $(VENV)/.installed
	$(PY) scripts/bench.py

# On a CUDA GPU machine, with the Python that has torch there (no virtual environment, no install): the gpu
# tests, the device benchmarks and a paper_cifar10 run that must learn, in about 8 minutes (docs/gpu.md).
gpu-check:
	$(PYTHON) scripts/gpu_check.py

clean-runs:
	rm -rf runs
