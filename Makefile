# skuvision — set-up is two commands on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install quickstart lint format test test-slow test-all test-torch24 clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e '.[dev]' --config-settings editable_mode=compat
	touch $@

quickstart: install
	$(PY) train.py

# ruff: lint (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and formatting; import-linter: the layers
# contract (imports only point down, no cycles); all as configured in pyproject.toml
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: install lint
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

test-all: install
	$(PY) -m pytest -m "slow or not slow"

# The SageMaker image pins torch 2.4.1: run the core and distributed tests against it in a side venv
# (downloads ~3 GB from PyPI once; not part of CI).
VENV24 ?= .venv-torch24
test-torch24:
	test -x $(VENV24)/bin/python || $(PYTHON) -m venv $(VENV24)
	printf 'torch==2.4.1\ntorchvision==0.19.1\n' > $(VENV24)/constraints.txt
	$(VENV24)/bin/pip install --quiet 'torch==2.4.1' 'torchvision==0.19.1'
	$(VENV24)/bin/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat -c $(VENV24)/constraints.txt
	$(VENV24)/bin/python -m pytest tests/test_model.py tests/test_train.py tests/test_datamodule.py tests/test_shards.py \
		tests/test_input_pipeline.py tests/test_distributed_units.py tests/test_distributed_entry.py tests/test_labels.py \
		tests/test_export.py

clean:
	rm -rf logs outputs .pytest_cache
