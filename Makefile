# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
UNIMP  := $(VENV)/bin/unimp
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-all bench venv clean

venv: $(STAMP)

# torch/torchvision are pinned (pyproject) to the builds measured here; open-flamingo pins torch 2.0.1
# in its metadata, so it goes in with --no-deps and its real needs are in our `model` extra.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	DS_BUILD_OPS=0 $(PY) -m pip install -q -e '.[model,dev]'
	$(PY) -m pip install -q --no-deps open-flamingo==2.0.1
	touch $(STAMP)

# The main job on the bundled SYNTHETIC sample: prepare it, train the tiny model for ~2 minutes,
# evaluate it against popularity, and recommend for one user (terminal + HTML page).
demo: $(STAMP)
	$(UNIMP) prepare --config examples/prepare-sample.yaml
	rm -rf demo/runs/sample-tiny
	$(UNIMP) train --config examples/train-sample-tiny.yaml
	$(UNIMP) evaluate --run demo/runs/sample-tiny
	$(UNIMP) generate --run demo/runs/sample-tiny --user 1 --html demo/user-1.html
	@echo "open demo/user-1.html to see user 1's history and recommendations"

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) benchmarks/bench_prepare.py
	$(PY) benchmarks/bench_download.py
	$(PY) benchmarks/bench_parse.py
	$(PY) benchmarks/bench_evaluate.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_tokenize.py
	$(PY) benchmarks/bench_serve.py

clean:
	rm -rf demo .pytest_cache
