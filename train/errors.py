"""Typed errors of the training side. All subclass MgfenError so a CLI prints one line and exits non-zero."""

from edge_runtime.errors import MgfenError


class PretrainedError(MgfenError):
    """Pretrained weights that cannot be found, read or mapped onto the backbone."""


class CheckpointError(MgfenError):
    """A file that is not an MGFEN checkpoint, or one of another architecture than expected."""


class DataError(MgfenError):
    """A data folder that is missing, empty, has one class only, or holds unreadable images."""


class ConfigError(MgfenError):
    """An invalid training/model configuration (unknown preset or backbone, bad sizes, no CUDA)."""
