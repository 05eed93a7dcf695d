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

# The main job on the embedded synthetic dataset: data -> edge training -> INT8 bundle -> scanner replay
# of the test split (accuracy, confusion matrix, latency per stage) -> latency benchmark. Each step
# writes a file the next depends on, so a second `make demo` only redoes what changed.
demo: install $(DEMO)/sheet.png $(DEMO)/scan_summary.json
	$(BIN)/mgfen-bench --bundle $(DEMO)/bundle --frames 50 --prefetch --json $(DEMO)/bench.json

$(DEMO)/data/card.json:
	$(BIN)/mgfen-data synth --out $(DEMO)/data --seed 0 --overwrite

$(DEMO)/sheet.png: $(DEMO)/data/card.json
	$(BIN)/mgfen-data show $(DEMO)/data --out $@

$(DEMO)/edge/best.pt: $(DEMO)/data/card.json
	$(BIN)/mgfen-train --data $(DEMO)/data --out $(DEMO)/edge --preset edge

# Both INT8 flavours (CPU for this machine, TensorRT for a Jetson), scored on the val split. It has 64
# images: one flipped image is a 1.6-point drop, hence a 2-point gate.
$(DEMO)/bundle/manifest.json: $(DEMO)/edge/best.pt
	$(BIN)/mgfen-export $(DEMO)/edge/best.pt --out $(DEMO)/bundle --int8 \
	  --calib $(DEMO)/data --max-int8-drop 2

$(DEMO)/scan_summary.json: $(DEMO)/bundle/manifest.json
	$(BIN)/mgfen-scan run --bundle $(DEMO)/bundle --source file://$(abspath $(DEMO))/data/test \
	  --labels $(DEMO)/data/test --out $(DEMO)/events.jsonl --audit $(DEMO)/audit.db \
	  --summary-json $@

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
