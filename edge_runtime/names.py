"""Names defined once: tensor names of the two graphs, bundle file names, class order.

Every other module (export, calibration, runtime, tests) imports these instead of spelling them.
"""

from __future__ import annotations

# global.onnx: image [1,3,S,S] float32 RGB in [0,1] (mean/std inside the graph)
GLOBAL_INPUT = "image"
GLOBAL_LOGITS = "global_logits"  # [1,C] float32
HEATMAP = "heatmap"  # [1,1,h,w] float32 in [0,1]
BOXES = "boxes"  # [1,K,4] float32, normalised x1,y1,x2,y2 in [0,1]
BOX_SCORES = "box_scores"  # [1,K] float32, mean heatmap response inside each box
GLOBAL_OUTPUTS = (GLOBAL_LOGITS, HEATMAP, BOXES, BOX_SCORES)  # what every bundle's global graph has
GLOBAL_FEATURES = "global_features"  # [1,D] float32 pooled backbone features (novelty score); newer bundles
EXPORTED_GLOBAL_OUTPUTS = GLOBAL_OUTPUTS + (GLOBAL_FEATURES,)  # what export writes

# parts.onnx: crops [K,3,R,R] float32 RGB in [0,1] -> part logits [K,C]
PARTS_INPUT = "crops"
PART_LOGITS = "part_logits"
PARTS_OUTPUTS = (PART_LOGITS,)

GRAPHS = ("global", "parts")
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"  # Ed25519 signature over manifest.json's bytes (edge_runtime.bundle.signing)
REPORT_FILE = "report.json"
NOVELTY_FILE = "novelty.npz"  # edge_runtime.novelty table; listed in the manifest's files as graph "novelty"
NOVELTY = "novelty"
ENGINE_DIR = "engines"

# Default class order; index 1 is the positive class whose probability events report.
CLASS_NAMES = ("genuine", "counterfeit")
POSITIVE_CLASS = "counterfeit"


def model_file(graph: str, precision: str = "fp32", flavour: str | None = None) -> str:
    """File name of one graph in a bundle: global.onnx, parts.int8.cpu.onnx, global.int8.trt.onnx."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; expected one of {GRAPHS}")
    if precision == "fp32":
        return f"{graph}.onnx"
    if precision == "int8":
        if flavour not in ("cpu", "trt"):
            raise ValueError("an int8 file needs flavour 'cpu' or 'trt'")
        return f"{graph}.int8.{flavour}.onnx"
    raise ValueError(f"unknown precision {precision!r} for an ONNX file")
