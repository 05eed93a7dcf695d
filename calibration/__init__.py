"""INT8 calibration: deterministic calibration-image selection, ONNX Runtime calibration readers that feed
the shared preprocessing, QDQ quantisation (TensorRT and CPU flavours), the TensorRT Q/DQ lint and the
INT8-vs-FP32 accuracy gate. No torch: it runs wherever onnxruntime does."""

from edge_runtime.errors import MgfenError

# Defaults of mgfen-export's INT8 options, here because export/cli.py reads them without onnxruntime.
DEFAULT_CALIB_N = 512  # calibration images: the whole train split up to this many, stratified by class
DEFAULT_FALLBACK = True  # calibration.fallback's search when a flavour fails the verdict gate


class CalibrationError(MgfenError):
    """No usable calibration images, images overlapping the evaluation split, or a quantisation failure."""
