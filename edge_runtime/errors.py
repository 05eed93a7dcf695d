"""Typed errors. Every library failure a user can cause is one of these, so a CLI can print one line."""


class MgfenError(Exception):
    """Base class: a problem the user can fix, reported as one line without a traceback."""


class ImageError(MgfenError):
    """An image file or array that cannot be read or converted (empty, truncated, not an image, odd type)."""


class BundleError(MgfenError):
    """A bundle that is missing files, has a bad manifest, or whose files no longer match their sha256."""


class BackendError(MgfenError):
    """An inference backend that is not installed or cannot run the given model."""


class SourceError(MgfenError):
    """A frame source URI that does not parse or does not open."""
