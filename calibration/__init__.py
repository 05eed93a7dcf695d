"""INT8 calibration: deterministic calibration-image selection, ONNX Runtime calibration readers that feed
the shared preprocessing, QDQ quantisation (TensorRT and CPU flavours), the TensorRT Q/DQ lint and the
INT8-vs-FP32 accuracy gate. No torch: it runs wherever onnxruntime does."""

from edge_runtime.errors import MgfenError


class CalibrationError(MgfenError):
    """No usable calibration images, images overlapping the evaluation split, or a quantisation failure."""
