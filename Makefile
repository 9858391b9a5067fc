# Set-up is idempotent and incremental: the venv is (re)built only when a
# requirements file or setup.py changes (the stamp name is their hash), and
# mmcv is rebuilt only when the torch version changes (build_mmcv.sh's cache).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
REQ_HASH := $(shell cat setup.py requirements/*.txt requirements/*.sh | sha256sum | cut -c1-16)
STAMP := $(VENV)/.stamp-$(REQ_HASH)
PIP := $(VPY) -m pip install -c requirements/constraints.txt

.PHONY: env demo test clean-env

env: $(STAMP)

$(STAMP):
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip 'setuptools>=77,<81' wheel ninja
	$(PIP) torch==2.14.1 torchvision==0.29.1
	bash requirements/build_mmcv.sh $(VPY)
	$(PIP) -e '.[cls,deploy,serve,tests]'
	$(VPY) -c 'import repvgg_seg, mmseg.models, mmcv.ops, mmpretrain.models, ray.serve'
	rm -f $(VENV)/.stamp-*
	touch $@

demo: env
	$(VPY) tools/demo.py

test: env
	$(VPY) -m pytest -q tests

clean-env:
	rm -rf $(VENV)
