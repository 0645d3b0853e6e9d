# medhash — two set-up commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench docs clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## make demo: the whole chain on the synthetic demo cohort (about 2 minutes): DICOM -> archive ->
## auto-encoders -> kernel-LSH indexes -> one search, drawn as a PNG grid -> a quick evaluation report
demo: $(STAMP)
	$(BIN)/medhash demo --out demo-data
	$(BIN)/medhash ingest demo-data --archive demo-archive
	$(BIN)/medhash info --archive demo-archive
	$(BIN)/medhash train --archive demo-archive --channel ct --arch shallow --epochs 8
	$(BIN)/medhash train --archive demo-archive --channel dose --arch shallow --epochs 8
	$(BIN)/medhash index --archive demo-archive --name ct256 --channel ct --bits 256 --rebuild
	$(BIN)/medhash index --archive demo-archive --name joint256 --channel ct+dose --bits 256 --rebuild
	$(BIN)/medhash search --archive demo-archive DEMO001:25 --index ct256 --k 5 --png demo-output/search-ct.png
	$(BIN)/medhash search --archive demo-archive DEMO001:25 --index joint256 --k 5 --rerank 50 \
		--png demo-output/search-joint.png
	$(BIN)/medhash fit-dose-model --archive demo-archive
	$(BIN)/medhash predict-dose --archive demo-archive --patient DEMO001 --out demo-output/DEMO001-dose
	$(BIN)/medhash evaluate --archive demo-archive --channel ct --quick --out demo-output/report
	@echo
	@echo "outputs: demo-archive/ (archive, models, indexes, dose model), demo-output/search-ct.png,"
	@echo "         demo-output/search-joint.png, demo-output/DEMO001-dose-dvh.png (predicted DVHs),"
	@echo "         demo-output/report/report.html (evaluation report)"

## make test: the whole test suite (tests needing ../shared/data skip cleanly without it)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## make bench: ingest throughput (the OpenKBP part needs ../shared/data) and search latency, written into
## docs/benchmarks.md (benchmarks/report.py --help: the other benchmarks, with a trained archive)
bench: $(STAMP)
	$(BIN)/python benchmarks/report.py

## make docs: the documentation site in site/ (MkDocs, Material theme), built with --strict: any warning
## fails. The docs extra (mkdocs, mkdocs-material, mkdocstrings) is installed into .venv once.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

clean:
	rm -rf $(VENV) demo-data demo-archive demo-output .pytest_cache site
