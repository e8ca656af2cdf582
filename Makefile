# Set-up and the two entry points. `make demo` and `make test` install first when needed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# GPU machines: make install TF='tensorflow[and-cuda]==2.21.0'
TF ?=
STAMP := $(VENV)/.installed
# SageMaker's training toolkits (tests/sagemaker_container.py runs them), beside the environment:
# installed without their dependency pins (numpy<1.24), which do not matter at run time.
TOOLKIT := $(VENV)/sagemaker-toolkit
# The listening page's browser tests (tests/test_page.py) drive Debian's Chromium through Playwright
# (`playwright install` downloads browsers, which cannot work here): installed when missing.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install demo lint shape test bench screenshot clean
install: $(STAMP) $(TOOLKIT)/.installed $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	US8K_TF_PACKAGE='$(TF)' $(BIN)/pip install -q -c constraints.txt -e '.[aws,gcp,test]'
	touch $(STAMP)

$(TOOLKIT)/.installed: tests/sagemaker_toolkit.txt $(STAMP)
	rm -rf $(TOOLKIT)
	$(BIN)/pip install -q --no-deps --target $(TOOLKIT) -r tests/sagemaker_toolkit.txt
	touch $@

demo: install
	$(BIN)/python -m us8k demo --workdir demo_run

# The code's rules: ruff (ruff.toml) and the import layers (.importlinter, import-linter).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Module sizes, functions over 50 lines, imports inside functions (tests/code_shape.py [ROOT] compares another checkout).
shape:
	$(PY) tests/code_shape.py

# Lint first, then four workers, two per core of the CI machine (docs/testing.md: measured), each test
# file one scheduling scope and each process one TensorFlow intra-op thread (tests/conftest.py); the
# 20 slowest last. Another count: make test WORKERS=N.
WORKERS ?= 4
test: lint
	$(BIN)/python -m pytest -q -n $(WORKERS) --durations=20 tests

# Every benchmark; the Markdown report is the docs' benchmarks page.
bench: install
	$(BIN)/us8k bench all --output bench_report --markdown docs/benchmarks.md

# The listening page's picture (docs/listening-page.md; the test suite writes no tracked file).
screenshot: install
	$(BIN)/us8k page-screenshot --output docs/listening_page.png

clean:
	rm -rf $(VENV) demo_run bench_report
