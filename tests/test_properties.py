"""Property-based tests (hypothesis) on the two input gates every user file passes: the image
preprocessing (arrays, encoded bytes, ROI crops) and the bundle manifest loader.

The properties are the error contract: arbitrary input either gives a well-formed result or the typed
error (ImageError / BundleError), never another exception. Derandomized, so CI sees the same examples.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_runtime.bundle.manifest import FLAVOURS, PRECISIONS, FileEntry, Manifest, load_bundle
from edge_runtime.errors import BundleError, ImageError
from edge_runtime.names import MANIFEST_FILE
from edge_runtime.preprocess import MAX_PIXELS, MIN_SIDE, PreprocessConfig, decode_image, prepare_frame, to_bgr8
from edge_runtime.roi import Thresholds, crop_rois

PROPS = settings(deadline=None, max_examples=60, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CFG = PreprocessConfig(frame_size=48, global_size=32, crop_size=16, clahe_grid=4)


# -------------------------------------------------------------------------------------- arrays


def _elements(dtype):
    if dtype == np.float32:  # mostly valid [0, 1] values, sometimes anything (NaN, inf, negatives)
        return st.one_of(st.floats(0.0, 1.0, width=32), st.floats(width=32))
    if dtype == np.bool_:
        return st.booleans()
    return st.integers(0, np.iinfo(dtype).max)


@st.composite
def arrays(draw):
    """Arrays a camera API or a careless caller might hand over: uint8/uint16/float32/bool, 0..4 dims,
    sides around MIN_SIDE (incl. 0 and 1), 1..5 channels, sometimes a non-contiguous view."""
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32, np.bool_]))
    # image-like values first: hypothesis draws (and shrinks towards) the front of a sampled list most
    ndim = draw(st.sampled_from([3, 2, 4, 1, 0]))
    side = st.sampled_from([40, 57, MIN_SIDE, MIN_SIDE + 1, MIN_SIDE - 1, 2, 1, 0])
    shape = [draw(side) for _ in range(min(ndim, 2))]
    if ndim >= 3:
        shape.append(draw(st.sampled_from([3, 4, 1, 2, 5])))
    if ndim == 4:
        shape.insert(0, draw(st.integers(1, 2)))
    fill = st.just(np.zeros((), dtype)[()]) if dtype == np.float32 else _elements(dtype)
    arr = draw(hnp.arrays(dtype, tuple(shape), elements=_elements(dtype), fill=fill))
    view = draw(st.sampled_from(["as is", "flipped", "transposed"]))
    if view == "flipped" and arr.ndim >= 2:
        arr = arr[::-1, ::-1]
    elif view == "transposed" and arr.ndim >= 2:
        arr = arr.swapaxes(0, 1)
    return arr


@settings(PROPS, max_examples=150)
@given(arrays())
def test_to_bgr8_and_prepare_frame_give_a_frame_or_image_error(arr):
    try:
        bgr = to_bgr8(arr)
    except ImageError:
        return
    assert bgr.dtype == np.uint8 and bgr.shape == (*arr.shape[:2], 3) and bgr.flags.c_contiguous
    if arr.dtype == np.uint16 and arr.ndim == 2:  # 16-bit: round(x / 257), exactly
        assert np.array_equal(bgr[:, :, 1], ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8))
    frame = prepare_frame(bgr, CFG)
    assert frame.shape == (CFG.frame_size, CFG.frame_size, 3) and frame.dtype == np.uint8


def test_16bit_conversion_is_exact_for_every_value():
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert np.array_equal(to_bgr8(values)[:, :, 2], expected)
    rgba = np.stack([values] * 4, axis=2)
    assert np.array_equal(to_bgr8(rgba), np.stack([expected] * 3, axis=2))


# ---------------------------------------------------------------------------------- encoded bytes


def _png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG with a real IHDR for width x height, one empty IDAT and IEND (no pixel data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def _bmp_header(width: int, height: int) -> bytes:
    return (b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0) + bytes(64))


def _check_decoded(data: bytes) -> np.ndarray | None:
    try:
        img = decode_image(data, "x")
    except ImageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("x: ")
        return None
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= MIN_SIDE
    return img


SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBP"]


@settings(PROPS, max_examples=100)
@given(st.sampled_from(SIGNATURES), st.binary(max_size=600))
@example(b"", _bmp_header(100_000, 100_000))  # beyond OpenCV's own limit: cv2.error before the fix
@example(b"", _png_header(100_000, 100_000))
@example(b"", _png_header(20_000, 20_000, 16, 6))  # 400 Mpx of 16-bit RGBA (3.2 GB) claimed
@example(b"", _png_header(64, 64))  # a real header without pixel data
def test_decode_image_on_arbitrary_bytes(prefix, body):
    _check_decoded(prefix + body)


def _encodings() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    out = {}
    for name, ext, arr, params in [
        ("png", ".png", img, []), ("jpg", ".jpg", img, []),
        ("jpg-progressive", ".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        ("png16", ".png", img.astype(np.uint16) * 257, []), ("gray", ".png", img[:, :, 0], []),
        ("rgba", ".png", cv2.cvtColor(img, cv2.COLOR_BGR2BGRA), []), ("bmp", ".bmp", img, []),
    ]:
        ok, buf = cv2.imencode(ext, arr, params)
        assert ok
        out[name] = buf.tobytes()
    return out


ENCODED = _encodings()


@settings(PROPS, max_examples=100)
@given(st.sampled_from(sorted(ENCODED)), st.floats(0.0, 1.0))
def test_truncated_valid_files_give_an_image_or_image_error(kind, where):
    data = ENCODED[kind]
    _check_decoded(data[: int(where * len(data))])


@pytest.mark.parametrize("kind", sorted(ENCODED))
def test_whole_valid_files_decode(kind):
    img = _check_decoded(ENCODED[kind])
    assert img is not None and img.shape == (40, 48, 3)


def test_header_bomb_is_refused_without_decoding(monkeypatch):
    """A header claiming more than MAX_PIXELS is refused from the header: OpenCV's decoder is never called
    (so no pixel memory is allocated; the RSS is measured by benchmarks/bench_memory.py)."""
    import edge_runtime.preprocess as preprocess

    def no_decode(*args):
        raise AssertionError("cv2.imdecode was called on a refused header")

    monkeypatch.setattr(preprocess.cv2, "imdecode", no_decode)
    with pytest.raises(ImageError, match=r"20000x20000 is too large"):
        decode_image(_png_header(20_000, 20_000, 16, 6), "bomb.png")
    assert 20_000 * 20_000 > MAX_PIXELS


# ----------------------------------------------------------------------------------------- crops


@st.composite
def crop_cases(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    frame = draw(hnp.arrays(np.uint8, (h, w, 3), elements=st.integers(0, 255), fill=st.sampled_from([0, 255])))
    unit = st.floats(0.0, 1.0)
    boxes = []
    for _ in range(draw(st.integers(0, 5))):
        x1, y1 = draw(unit), draw(unit)
        boxes.append([x1, y1, draw(st.floats(x1, 1.0)), draw(st.floats(y1, 1.0))])
    return frame, np.array(boxes, np.float32).reshape(-1, 4), draw(st.integers(1, 9))


@PROPS
@given(crop_cases())
@example((np.full((7, 5, 3), 255, np.uint8), np.array([[0.1, 0.13, 0.77, 0.9]], np.float32), 7))
def test_crop_rois_shape_dtype_and_range(case):
    frame, boxes, size = case
    out = crop_rois(frame, boxes, size)
    assert out.shape == (len(boxes), 3, size, size) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min(initial=0.0) >= 0.0 and out.max(initial=0.0) <= 1.0


# -------------------------------------------------------------------------------------- manifest

FINITE = st.floats(allow_nan=False, allow_infinity=False)
# JSON as json.loads can return it (NaN and Infinity included).
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                      st.text(max_size=8))
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                    max_leaves=8)
JSON_FINITE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), FINITE,
                                     st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)
FILE_NAME = st.text(st.characters(blacklist_characters="/\\", blacklist_categories=("Cs",)), min_size=1,
                    max_size=12).filter(lambda s: not s.startswith("."))


@st.composite
def preprocess_configs(draw):
    frame = draw(st.integers(1, 4096))
    return PreprocessConfig(
        frame_size=frame, global_size=draw(st.integers(1, frame)), crop_size=draw(st.integers(1, frame)),
        ace=draw(st.booleans()), clahe_clip=draw(st.floats(1e-3, 1e3)), clahe_grid=draw(st.integers(1, 64)),
        brightness_target=draw(st.none() | st.floats(0.0, 1.0, exclude_min=True, exclude_max=True)))


@st.composite
def manifests(draw):
    genuine = draw(st.floats(0.0, 1.0))
    files = draw(st.dictionaries(FILE_NAME, st.builds(
        FileEntry, graph=st.sampled_from(["global", "parts"]), precision=st.sampled_from(PRECISIONS),
        sha256=st.text("0123456789abcdef", min_size=64, max_size=64), flavour=st.sampled_from(FLAVOURS)),
        max_size=4))
    return Manifest(
        classes=tuple(draw(st.lists(st.text(max_size=10), min_size=2, max_size=4))),
        preprocess=draw(preprocess_configs()), k=draw(st.integers(1, 64)),
        box_size=draw(st.floats(0.0, 1.0, exclude_min=True)), global_weight=draw(FINITE),
        use_parts=draw(st.booleans()), thresholds=Thresholds(genuine, draw(st.floats(genuine, 1.0))),
        tensors=draw(st.dictionaries(st.text(max_size=6), JSON_FINITE, max_size=3)), files=files,
        provenance=draw(st.dictionaries(st.text(max_size=6), JSON_FINITE, max_size=3)),
        calibration=draw(st.none() | st.dictionaries(st.text(max_size=6), JSON_FINITE, max_size=3)))


@PROPS
@given(manifests())
def test_manifest_round_trip_is_identity(manifest):
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest


def _parse(data) -> None:
    try:
        assert isinstance(Manifest.from_dict(data), Manifest)
    except BundleError as exc:
        assert "\n" not in str(exc)


@PROPS
@given(JSON)
def test_manifest_from_arbitrary_json(value):
    _parse(value)


NESTED = ("preprocess", "thresholds", "files")


@PROPS
@given(manifests(), st.data())
def test_manifest_with_keys_removed_added_or_retyped(manifest, data):
    doc = json.loads(json.dumps(manifest.to_dict()))
    where = data.draw(st.sampled_from([None, *NESTED]), label="where")
    target = doc if where is None else doc[where]
    if where == "files":
        if not target:
            return
        target = target[data.draw(st.sampled_from(sorted(target)), label="file")]
    action = data.draw(st.sampled_from(["remove", "add", "retype"]), label="action")
    if action == "add":
        target[data.draw(st.text(max_size=8), label="key")] = data.draw(JSON, label="value")
    elif target:
        key = data.draw(st.sampled_from(sorted(target)), label="key")
        if action == "remove":
            del target[key]
        else:
            target[key] = data.draw(JSON, label="value")
    _parse(doc)


@PROPS
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
@example(b"\xef\xbb\xbf{}")
@example(b"\xff\xfe{\x00}\x00")
@example(b"NaN")
def test_load_bundle_with_random_manifest_bytes(raw):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MANIFEST_FILE).write_bytes(raw)
        with pytest.raises(BundleError):
            load_bundle(tmp)


def test_manifest_infinite_k_is_a_bundle_error():
    doc = json.loads(json.dumps(Manifest(
        classes=("genuine", "counterfeit"), preprocess=PreprocessConfig(), k=4, box_size=0.25, global_weight=1.0,
        use_parts=True, thresholds=Thresholds(), tensors={}, files={}).to_dict()))
    doc["k"] = math.inf  # what json.loads makes of `"k": 1e999` or `"k": Infinity`
    with pytest.raises(BundleError):
        Manifest.from_dict(doc)


def test_manifest_nested_too_deep_is_a_bundle_error(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text("[" * 100_000)
    with pytest.raises(BundleError):
        load_bundle(tmp_path)
