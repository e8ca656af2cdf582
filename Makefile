# Set-up and the two entry points. `make demo` and `make test` install first when needed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# GPU machines: make install TF='tensorflow[and-cuda]==2.21.0'
TF ?=
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean
install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	US8K_TF_PACKAGE='$(TF)' $(BIN)/pip install -q -c constraints.txt -e '.[aws,gcp,test]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m us8k demo --workdir demo_run

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/us8k bench all

clean:
	rm -rf $(VENV) demo_run
