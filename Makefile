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
	$(BIN)/medhash evaluate --archive demo-archive --channel ct --quick --out demo-output/report
	@echo
	@echo "outputs: demo-archive/ (archive, models, indexes), demo-output/search-ct.png, demo-output/search-joint.png,"
	@echo "         demo-output/report/report.html (evaluation report)"

## make test: the whole test suite (tests needing ../shared/data skip cleanly without it)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## make bench: ingest throughput (the OpenKBP part needs ../shared/data) and search latency
bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/search.py

clean:
	rm -rf $(VENV) demo-data demo-archive demo-output .pytest_cache
