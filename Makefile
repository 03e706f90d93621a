# Two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo_output

.PHONY: setup demo test lint bench clean models

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch first, so nothing pulls a multi-GB CUDA build
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/glacierfacies run -o $(DEMO_OUT)

# rebuild the built-in models (src/glacierfacies/model/builtin/) from ../shared/data/aberle
models: setup
	$(VENV)/bin/glacierfacies models build --data ../shared/data/aberle --overwrite

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
