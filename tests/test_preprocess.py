"""The shared preprocessing path: reading, validation, conversions, enhancement, shapes and dtypes."""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import ImageError
from edge_runtime.preprocess import (
    PreprocessConfig,
    decode_image,
    enhance,
    global_input,
    list_images,
    load_frame,
    prepare_frame,
    read_image,
    square_frame,
    to_bgr8,
    to_nchw,
)

CFG = PreprocessConfig(frame_size=128, global_size=64, crop_size=32)


def _photo(h=96, w=128, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(40, 200, size=3, dtype=np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 3, (20, 220, 90), -1)
    return cv2.add(img, rng.integers(0, 20, size=img.shape, dtype=np.uint8))


def _write(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img)
    return path


def test_read_png_and_jpeg_roundtrip(tmp_path):
    img = _photo()
    png = read_image(_write(tmp_path / "a.png", img))
    assert png.dtype == np.uint8 and png.shape == (96, 128, 3)
    assert np.array_equal(png, img)
    jpg = read_image(_write(tmp_path / "a.jpg", img))
    assert jpg.shape == (96, 128, 3) and np.abs(jpg.astype(int) - img).mean() < 10


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"this is not an image at all" * 10, "not a readable image"),
    ],
)
def test_bad_bytes_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        read_image(path)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_files_are_refused(tmp_path, ext):
    ok, buf = cv2.imencode(ext, _photo())
    data = buf.tobytes()
    path = tmp_path / f"cut{ext}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(path)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file"):
        read_image(tmp_path)


def test_grayscale_rgba_and_16bit_are_converted(tmp_path):
    img = _photo()
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    out = read_image(_write(tmp_path / "g.png", gray))
    assert out.shape == (96, 128, 3) and np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)

    bgra = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = 7
    assert np.array_equal(read_image(_write(tmp_path / "a.png", bgra)), img)

    img16 = img.astype(np.uint16) * 257
    assert np.array_equal(read_image(_write(tmp_path / "w.png", img16)), img)


def test_to_bgr8_array_inputs():
    img = _photo()
    assert np.array_equal(to_bgr8(img.astype(np.float32) / 255.0), img)
    assert to_bgr8(img[:, :, :1]).shape == (96, 128, 3)
    with pytest.raises(ImageError, match="too small"):
        to_bgr8(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="unsupported image shape"):
        to_bgr8(np.zeros((64, 64, 2), np.uint8))
    with pytest.raises(ImageError, match="unsupported pixel type"):
        to_bgr8(np.zeros((64, 64, 3), np.int32))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        to_bgr8(np.full((64, 64, 3), 2.0, np.float32))
    with pytest.raises(ImageError, match="numpy array"):
        to_bgr8("frame")


def test_prepare_frame_shapes_and_centre_crop():
    img = _photo(96, 160)
    frame = prepare_frame(img, CFG)
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
    plain = prepare_frame(img, PreprocessConfig(frame_size=96, global_size=64, crop_size=32, ace=False,
                                                brightness_target=None))
    # No enhancement and no resize: the centred 96x96 square, converted to RGB.
    assert np.array_equal(plain, cv2.cvtColor(img[:, 32:128], cv2.COLOR_BGR2RGB))


def test_enhance_normalises_brightness_and_keeps_colour():
    img = _photo()
    dark = (img * 0.3).astype(np.uint8)
    cfg = PreprocessConfig(frame_size=128, global_size=64, crop_size=32, ace=False, brightness_target=0.5)
    out = enhance(dark, cfg)
    lum = cv2.cvtColor(out, cv2.COLOR_BGR2LAB)[:, :, 0]
    assert abs(float(lum.mean()) - 127.5) < 6
    # CLAHE raises local contrast of a flat, low-contrast image.
    flat = np.full((128, 128, 3), 100, np.uint8)
    flat[:, 64:] = 110
    ace = enhance(flat, PreprocessConfig(frame_size=128, global_size=64, crop_size=32, brightness_target=None))
    assert ace.std() > flat.std()


def test_global_input_and_nchw():
    frame = prepare_frame(_photo(), CFG)
    x = global_input(frame, CFG)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    assert 0.0 <= x.min() and x.max() <= 1.0
    batch = to_nchw(np.stack([frame, frame]))
    assert batch.shape == (2, 3, 128, 128)
    assert np.allclose(batch[0, 0], frame[:, :, 0] / 255.0)


def test_load_frame_and_sorted_listing(tmp_path):
    (tmp_path / "b").mkdir()
    _write(tmp_path / "b" / "2.png", _photo(seed=2))
    _write(tmp_path / "1.jpg", _photo(seed=1))
    (tmp_path / "notes.txt").write_text("x")
    files = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["1.jpg", "b/2.png"]
    assert load_frame(files[1], CFG).shape == (128, 128, 3)


def test_luma_spaces_enhance_alike_and_old_files_mean_lab():
    # The same CLAHE + gain on Y instead of L: brightness normalised, the colour of a uniform patch kept,
    # the two outputs close but not equal (so a bundle must say which one it was trained on).
    img = (_photo() * 0.4).astype(np.uint8)
    lab_cfg = PreprocessConfig(frame_size=128, global_size=64, crop_size=32)
    ycc_cfg = PreprocessConfig(frame_size=128, global_size=64, crop_size=32, luma_space="ycrcb")
    lab, ycc = enhance(img, lab_cfg), enhance(img, ycc_cfg)
    assert abs(float(cv2.cvtColor(ycc, cv2.COLOR_BGR2YCrCb)[:, :, 0].mean()) - 127.5) < 6
    diff = np.abs(lab.astype(int) - ycc.astype(int))
    assert 0 < diff.mean() < 20
    patch = np.zeros((64, 64, 3), np.uint8)
    patch[:] = (40, 60, 120)  # a dark red-brown, BGR
    bright = enhance(patch, dataclasses.replace(ycc_cfg, ace=False))
    hue = lambda bgr: cv2.cvtColor(bgr[:1, :1], cv2.COLOR_BGR2HSV)[0, 0, 0]
    assert abs(int(hue(bright)) - int(hue(patch))) <= 2 and bright.mean() > patch.mean()
    old = lab_cfg.to_dict()
    del old["luma_space"]  # a checkpoint or manifest written before the field existed
    assert PreprocessConfig.from_dict(old).luma_space == "lab"
    assert PreprocessConfig.from_dict(ycc_cfg.to_dict()) == ycc_cfg
    with pytest.raises(ValueError, match="luma_space must be one of lab, ycrcb"):
        PreprocessConfig(luma_space="hsv")


def test_config_validation_and_roundtrip():
    assert PreprocessConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match="unknown preprocess keys"):
        PreprocessConfig.from_dict({"frame_size": 128, "colour": 1})
    with pytest.raises(ValueError):
        PreprocessConfig(frame_size=64, global_size=128, crop_size=32)
    with pytest.raises(ValueError):
        PreprocessConfig(brightness_target=1.5)


def test_decode_image_names_source():
    with pytest.raises(ImageError, match="cam0"):
        decode_image(b"", "cam0")


@pytest.mark.parametrize("cfg", [CFG, PreprocessConfig(frame_size=96, global_size=64, crop_size=32, ace=False),
                                 PreprocessConfig(frame_size=80, global_size=64, crop_size=32, clahe_grid=4,
                                                  brightness_target=None),
                                 PreprocessConfig(frame_size=128, global_size=64, crop_size=32, luma_space="ycrcb")])
@pytest.mark.parametrize("shape", [(96, 160), (150, 150), (40, 33)])
def test_prepare_frame_is_square_frame_enhance_then_rgb(cfg, shape):
    # prepare_frame fuses space -> BGR -> RGB into one conversion; it must stay the documented composition,
    # bit for bit, and leave the caller's array alone.
    img = _photo(*shape, seed=shape[0])
    before = img.copy()
    expected = cv2.cvtColor(enhance(square_frame(img, cfg.frame_size), cfg), cv2.COLOR_BGR2RGB)
    frame = prepare_frame(img, cfg)
    assert np.array_equal(frame, expected) and frame.flags.c_contiguous
    assert np.array_equal(img, before)
    to_space, to_bgr = {"lab": (cv2.COLOR_BGR2LAB, cv2.COLOR_LAB2BGR),
                        "ycrcb": (cv2.COLOR_BGR2YCrCb, cv2.COLOR_YCrCb2BGR)}[cfg.luma_space]
    manual = cv2.cvtColor(square_frame(img, cfg.frame_size), to_space)
    if cfg.ace or cfg.brightness_target is not None:
        lum = manual[:, :, 0]
        if cfg.ace:
            lum = cv2.createCLAHE(cfg.clahe_clip, (cfg.clahe_grid, cfg.clahe_grid)).apply(lum)
        if cfg.brightness_target is not None:
            lum = cv2.convertScaleAbs(lum, alpha=cfg.brightness_target * 255.0 / max(float(lum.mean()), 1.0))
        manual[:, :, 0] = lum
    assert np.array_equal(cv2.cvtColor(cv2.cvtColor(manual, to_bgr), cv2.COLOR_BGR2RGB), frame)


def test_crops_of_float32_whole_pixel_boxes_equal_roi_align():
    # The model's boxes are whole frame pixels divided by F in float32, so most are a rounding off whole
    # pixels: crop_rois interpolates them with views instead of gathers; still roi_align's numbers.
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from edge_runtime.roi import crop_rois

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    xy = np.array([[5, 7], [0, 0], [64, 64], [33, 70]])
    boxes = (np.concatenate([xy, xy + 24], 1) / 96).astype(np.float32)
    ours = crop_rois(frame, boxes, 24)
    img = torch.from_numpy(frame.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    px = torch.from_numpy(boxes.astype(np.float64) * 96).float()
    ref = torchvision.ops.roi_align(img, [px], output_size=24, spatial_scale=1.0, sampling_ratio=1,
                                    aligned=True).numpy()
    assert np.abs(ours - ref).max() < 1e-5  # float64 positions here, float32 in roi_align
    assert np.abs(ours[0] - frame[7:31, 5:29].transpose(2, 0, 1) / 255.0).max() < 1e-4
