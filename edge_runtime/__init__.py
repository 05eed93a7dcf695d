"""MGFEN scanner runtime. Imports no torch: it runs on the device with onnxruntime or TensorRT.

The pipeline (this folder): preprocess (the one preprocessing path), quality (the frame gate), model_runner
(frame -> probability, boxes, heatmap), roi (crops and the heatmap-weighted vote), novelty (the `unknown`
score), session (frames of one item -> one verdict), scanner (the loop), events (their schema), bench and
scan_summary (what a run measured), names, errors, labels. Around it, one folder per concern:

- edge_runtime/bundle/     the model bundle: manifest, signature, INT8 gate record
- edge_runtime/inference/  onnxruntime and TensorRT backends, CUDA buffers, engine cache, device info
- edge_runtime/capture/    frame sources, cameras, prefetch
- edge_runtime/cost/       MACs and bytes per graph, the target Jetsons, estimated cost per frame there
- edge_runtime/sinks/      JSON Lines, HTTP live page and SSE, MQTT, the audit log, which sinks a scan uses
- edge_runtime/cli/        mgfen-scan, mgfen-bench, mgfen-keygen and the shared error boundary (click only)
"""

# The one version number of the toolkit (setup.cfg reads it: `version = attr: edge_runtime.__version__`).
__version__ = "0.3.0"
