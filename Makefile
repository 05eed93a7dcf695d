# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := runs/demo
EXTRAS := train,dev,serve
# The scanner runtime and the engine path (`mgfen-export BUNDLE --engine`): they must run on Python 3.8
# (JetPack 5). vermin checks them here; tests/test_py38.py checks this list covers what they import.
RUNTIME_PY := edge_runtime export/__init__.py export/cli.py export/engine.py export/engine_check.py \
              calibration/__init__.py calibration/accuracy.py calibration/cpu_features.py
# The TensorRT + CUDA glue, type-checked against TensorRT's published stubs (settings in setup.cfg [mypy]).
TRT_GLUE := export/engine.py export/engine_check.py edge_runtime/inference/trt_buffers.py edge_runtime/inference/backends.py
TRT_STUBS := $(VENV)/trt-stubs
TRT_STUBS_VERSION := 10.13.0.35.1

.PHONY: install demo test static bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

install: $(BIN)/python $(TRT_STUBS)/.ready
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"

# tensorrt-stubs depends on the real tensorrt (not installable off NVIDIA's index): stubs only, kept out of
# site-packages, where their code-less `tensorrt` folder would import as a namespace package. The generated
# stubs have lines Python cannot parse (parameters named `in`, a required parameter after defaults) and
# import tensorrt_libs (CUDA libraries, no stub): mended in place.
$(TRT_STUBS)/.ready: | $(BIN)/python
	rm -rf $(TRT_STUBS)
	$(BIN)/python -m pip install -q --no-deps --target $(TRT_STUBS) "tensorrt-stubs==$(TRT_STUBS_VERSION)"
	sed -i -E 's/([(,] *)in: /\1in_: /g; s/(power: Weights = None, channel_axis: int)\)/\1 = ...)/' \
	  $(TRT_STUBS)/tensorrt_bindings/tensorrt.pyi
	touch $(TRT_STUBS)/tensorrt_libs.pyi $@

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

# Both INT8 flavours (CPU for this machine, TensorRT for a Jetson), gated on the val split's verdicts at
# the bundle's thresholds (calibration/verdict_gate.py, default gate), calibrated on the whole train split
# (206 images; 7-bit CPU weights on a CPU without VNNI). A failing flavour goes through the FP32-fallback
# search (calibration/fallback.py); --force keeps one that still fails, recorded failed-forced, so the
# scanner's auto precision skips it and says why. What each flavour did last time: docs/results/demo.md.
$(DEMO)/bundle/manifest.json: $(DEMO)/edge/best.pt
	$(BIN)/mgfen-export $(DEMO)/edge/best.pt --out $(DEMO)/bundle --int8 --calib $(DEMO)/data --force

$(DEMO)/scan_summary.json: $(DEMO)/bundle/manifest.json
	$(BIN)/mgfen-scan run --bundle $(DEMO)/bundle --source file://$(abspath $(DEMO))/data/test \
	  --labels $(DEMO)/data/test --out $(DEMO)/events.jsonl --audit $(DEMO)/audit.db \
	  --summary-json $@

# Static checks first (seconds): the Python 3.8 rules of the runtime, the TensorRT glue against the stubs.
static: install
	$(BIN)/vermin --target=3.8- --no-tips --violations -q $(RUNTIME_PY)
	$(BIN)/mypy $(TRT_GLUE)

test: static
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
