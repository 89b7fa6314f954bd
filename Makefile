# Two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MEDIAPIPE := mediapipe==0.10.21  # see the `face` extra in setup.cfg for why --no-deps

.PHONY: demo test test-fast install clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,video,face]"
	$(PY) -m pip install --quiet --no-deps $(MEDIAPIPE)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m launch.demo --workdir=runs/demo

# The whole suite (what CI runs) on TEST_WORKERS processes (pytest-xdist; tests/conftest.py
# keeps the files that share a trained run on one worker); `make test-fast` skips slow tests.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=25 tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf runs .pytest_cache
