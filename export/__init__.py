"""torch -> bundle: export-only wrappers, ONNX export with fixed shapes, parity checks, INT8 files,
manifest and report, and TensorRT engines built on the device. Needs torch (except export.engine)."""

from edge_runtime.errors import MgfenError


class ExportError(MgfenError):
    """A checkpoint that cannot be exported, a failed parity check, an unusable output folder or an
    INT8 accuracy drop beyond the allowed one."""
