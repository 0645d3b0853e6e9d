# medhash — two set-up commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## make demo: write the synthetic demo cohort as DICOM, ingest it, print the archive summary
demo: $(STAMP)
	$(BIN)/medhash demo --out demo-data
	$(BIN)/medhash ingest demo-data --archive demo-archive
	$(BIN)/medhash info --archive demo-archive

## make test: the whole test suite (tests needing ../shared/data skip cleanly without it)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## make bench: ingest throughput (needs ../shared/data for the OpenKBP part)
bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) demo-data demo-archive .pytest_cache
