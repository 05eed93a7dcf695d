"""ROI crops and the vote: the numpy runtime path equals the torch training path."""

import numpy as np
import pytest

from edge_runtime.roi import Thresholds, boxes_to_source_pixels, box_weights, crop_rois, softmax, vote_logits

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _roi_align(frame: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    h, w = frame.shape[:2]
    img = torch.from_numpy(frame.astype(np.float32)).permute(2, 0, 1)[None]
    if frame.dtype == np.uint8:
        img = img / 255.0
    px = torch.from_numpy(boxes * np.array([w, h, w, h])).float()
    return torchvision.ops.roi_align(img, [px], output_size=size, spatial_scale=1.0, sampling_ratio=1,
                                     aligned=True).numpy()


def test_crop_rois_equals_roi_align_on_fractional_and_edge_boxes():
    rng = np.random.default_rng(0)
    frame = rng.random((90, 77, 3)).astype(np.float32)
    boxes = np.array([
        [0.1, 0.2, 0.5, 0.6],      # fractional, upsampled
        [0.0, 0.0, 1.0, 1.0],      # whole frame, downsampled
        [-0.05, 0.9, 0.3, 1.1],    # partly outside: zeros there
        [0.33, 0.41, 0.34, 0.42],  # tiny
    ])
    ours = crop_rois(frame, boxes, 19)
    assert ours.shape == (4, 3, 19, 19) and ours.dtype == np.float32
    assert np.abs(ours - _roi_align(frame, boxes, 19)).max() < 1e-5


def test_pixel_aligned_boxes_are_exact_slices():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    boxes = np.array([[8, 4, 24, 20], [40, 40, 56, 56]], dtype=np.float64) / 64
    ours = crop_rois(frame, boxes, 16)
    assert np.allclose(ours[0], frame[4:20, 8:24].transpose(2, 0, 1) / 255.0, atol=1e-7, rtol=0)
    assert np.abs(ours - _roi_align(frame, boxes, 16)).max() < 1e-6


def test_vote_is_the_same_function_for_numpy_and_torch():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(3, 2)).astype(np.float32)
    p = rng.normal(size=(3, 4, 2)).astype(np.float32)
    s = rng.random((3, 4)).astype(np.float32)
    np_out = vote_logits(g, p, s, 0.5)
    tg, tp, ts = (torch.from_numpy(a).requires_grad_() for a in (g, p, s))
    t_out = vote_logits(tg, tp, ts, 0.5)
    assert np.allclose(np_out, t_out.detach().numpy(), atol=1e-6)
    t_out[:, 1].sum().backward()
    assert ts.grad is not None and ts.grad.abs().sum() > 0  # the heatmap scores get a gradient
    w = box_weights(s)
    assert np.allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np_out, 0.5 * g + (w[..., None] * p).sum(1), atol=1e-6)
    assert np.array_equal(vote_logits(g, p, s, 0.5, use_parts=False), g)


def test_softmax_and_thresholds():
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    assert np.allclose(probs, [[0.5, 0.5], [0.25, 0.75]])
    t = Thresholds(genuine_at=0.3, counterfeit_at=0.7)
    assert [t.decide(p) for p in (0.1, 0.3, 0.5, 0.7, 0.95)] == [
        "genuine", "genuine", "uncertain", "counterfeit", "counterfeit"]
    with pytest.raises(ValueError):
        Thresholds(genuine_at=0.8, counterfeit_at=0.2)


def test_boxes_to_source_pixels_undoes_centre_crop():
    # A 200x100 (w x h) frame is cropped to the square x in [50, 150).
    px = boxes_to_source_pixels(np.array([[0.0, 0.0, 0.5, 1.0]]), height=100, width=200)
    assert np.allclose(px, [[50, 0, 100, 100]])
