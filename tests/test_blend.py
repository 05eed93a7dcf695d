"""Background replacement: feathered alpha, Poisson, hard paste, the training transform, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from train.enhance.backgrounds import BackgroundError, BackgroundLibrary
from train.enhance.blend import (BLEND_MODES, BackgroundReplacer, BlendError, feather_alpha, fit_background,
                                 replace_background)

H = W = 96


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reddish textured object (square) on a grey frame, its mask, and a blue noisy background."""
    rng = np.random.default_rng(seed)
    frame = np.full((H, W, 3), 128, np.uint8)
    frame[24:72, 30:70] = np.clip(rng.normal((40, 60, 200), 10, (48, 40, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[24:72, 30:70] = 255
    bg = np.clip(rng.normal((200, 80, 30), 15, (H, W, 3)), 0, 255).astype(np.uint8)
    return frame, mask, bg


def test_alpha_keeps_foreground_and_background_exactly_away_from_the_seam():
    frame, mask, bg = _scene()
    out = replace_background(frame, mask, bg, "alpha")
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[34:62, 40:60], frame[34:62, 40:60])  # deep inside: colours kept
    np.testing.assert_array_equal(out[:10], bg[:10])  # far outside: the new background
    # on the seam the value lies between the two sources
    edge = out[48, 30].astype(int)
    lo = np.minimum(frame[48, 30], bg[48, 30]).astype(int)
    hi = np.maximum(frame[48, 30], bg[48, 30]).astype(int)
    assert np.all(edge >= lo - 1) and np.all(edge <= hi + 1)
    assert not np.array_equal(edge, frame[48, 30].astype(int))


def test_feather_alpha_is_a_ramp_centred_on_the_edge():
    _, mask, _ = _scene()
    a = feather_alpha(mask, radius=4)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert a[48, 50] == pytest.approx(1.0) and a[5, 5] == pytest.approx(0.0)
    assert 0.3 < a[48, 30] < 0.7  # first pixel inside the edge
    np.testing.assert_array_equal(feather_alpha(mask, radius=0), (mask > 0).astype(np.float32))


@pytest.mark.parametrize("mode", ["poisson", "poisson_mixed"])
def test_poisson_changes_only_the_object_region(mode):
    frame, mask, bg = _scene()
    out = replace_background(frame, mask, bg, mode)
    assert out.shape == frame.shape and out.dtype == np.uint8
    outside = np.ones((H, W), bool)
    outside[20:76, 26:74] = False
    np.testing.assert_array_equal(out[outside], bg[outside])
    # Poisson keeps gradients, not colours: the object's texture survives but it is no plain copy
    inside = out[34:62, 40:60].astype(float)
    assert inside.std() > 3
    assert np.abs(inside - frame[34:62, 40:60]).mean() > 5


def test_hard_paste_and_mask_touching_the_border():
    frame, mask, bg = _scene()
    mask[:, :20] = 255  # object touching the frame border must not break seamlessClone
    hard = replace_background(frame, mask, bg, "hard")
    np.testing.assert_array_equal(hard[mask > 0], frame[mask > 0])
    np.testing.assert_array_equal(hard[mask == 0], bg[mask == 0])
    assert replace_background(frame, mask, bg, "poisson").shape == frame.shape


def test_background_of_another_size_is_fitted():
    frame, mask, _ = _scene()
    big = np.random.default_rng(1).integers(0, 255, (150, 300, 3), dtype=np.uint8)
    assert fit_background(big, H, W).shape == (H, W, 3)
    for mode in BLEND_MODES:
        assert replace_background(frame, mask, big, mode).shape == (H, W, 3)


def test_bad_input_raises_clear_errors():
    frame, mask, bg = _scene()
    with pytest.raises(BlendError, match="mask is 50x40 but the frame is 96x96"):
        replace_background(frame, np.zeros((40, 50), np.uint8) + 255, bg)
    with pytest.raises(BlendError, match="empty"):
        replace_background(frame, np.zeros_like(mask), bg)
    with pytest.raises(BlendError, match="unknown blend mode"):
        replace_background(frame, mask, bg, "laplacian")
    with pytest.raises(BlendError, match="HxWx3 uint8"):
        replace_background(frame.astype(np.float32), mask, bg)
    with pytest.raises(BlendError, match="probability"):
        BackgroundReplacer(BackgroundLibrary(None, ("gradient",)), p=1.5)


def test_replacer_probability_reproducibility_and_missing_mask():
    frame, mask, _ = _scene()
    lib = BackgroundLibrary(None, ("gradient", "weave"))
    never = BackgroundReplacer(lib, p=0.0)
    assert never(frame, mask, np.random.default_rng(0)) is frame
    always = BackgroundReplacer(lib, p=1.0, mode="alpha")
    a = always(frame, mask, np.random.default_rng(7))
    assert always.last_name in ("gradient", "weave")
    b = always(frame, mask, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)  # same seed, same frame
    c = always(frame, mask, np.random.default_rng(8))
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a[34:62, 40:60], frame[34:62, 40:60])  # the object itself is kept
    assert not np.array_equal(a[:10], frame[:10])  # the background is not
    assert always(frame, None, np.random.default_rng(0)) is frame  # no mask: nothing to cut out
    half = BackgroundReplacer(lib, p=0.5)
    changed = sum(half(frame, mask, np.random.default_rng(i)) is not frame for i in range(200))
    assert 70 < changed < 130


def test_photo_folder_library_and_empty_folder(tmp_path):
    import cv2

    with pytest.raises(BackgroundError, match="holds no images"):
        BackgroundLibrary(tmp_path, ())
    (tmp_path / "sub").mkdir()
    photo = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "sub" / "p.png"), photo)
    frame, mask, _ = _scene()
    rep = BackgroundReplacer(BackgroundLibrary(tmp_path, ()), p=1.0)
    out = rep(frame, mask, np.random.default_rng(0))
    assert rep.last_name == "sub/p.png" and out.shape == frame.shape
