# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := runs/demo
EXTRAS := train,dev,serve

.PHONY: install demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"

demo: install
	$(BIN)/mgfen-data synth --out $(DEMO)/data --seed 0
	$(BIN)/mgfen-data show $(DEMO)/data --out $(DEMO)/sheet.png

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
