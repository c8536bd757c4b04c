# The two commands of the README. Each creates .venv and installs the pinned
# requirements first (again only when requirements or setup.cfg change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test

train: $(STAMP)
	$(PY) experiments/train.py --config=experiments/configs/mnist_cnn.py --workdir=runs/mnist_cnn

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadgroup --durations=25

$(STAMP): requirements.txt requirements-test.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)
