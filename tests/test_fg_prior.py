"""The heatmap foreground prior: masks follow the augmentation, the loss term measures heat off the item,
training uses it where masks exist, and the box-on-item share the suite reports."""

from __future__ import annotations

import numpy as np
import torch

from edge_runtime.preprocess import PreprocessConfig
from train.data.dataset import AugmentConfig, FrameDataset, augment_frame, foreground_target
from train.data.folders import index_folder
from train.evaluate.bg_suite import box_foreground_share
from train.model.loss import LossConfig, foreground_prior, mgfen_loss

torch.set_num_threads(1)


def test_augmented_mask_stays_on_the_augmented_item():
    rng_img = np.random.default_rng(1)
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[5:20, 30:60] = 200  # the "item"
    frame += rng_img.integers(0, 5, frame.shape, dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[5:20, 30:60] = 255
    cfg = AugmentConfig(gain=0.0, offset=0.0, p_rotate=1.0, max_rotation=8.0)
    for seed in range(8):
        out, m = augment_frame(frame, cfg, np.random.default_rng(seed), mask)
        plain = augment_frame(frame, cfg, np.random.default_rng(seed))
        assert np.array_equal(out, plain)  # the mask changes none of the random draws
        bright, on = out[..., 0] > 100, m >= 128
        # nearest vs bilinear rotation differ only along the item's edge
        assert np.mean(bright != on) < 0.03, seed


def test_foreground_target_and_unknown_masks():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 255
    t = foreground_target(mask, 4)
    assert t.shape == (1, 4, 4) and t.dtype == torch.float32
    assert torch.equal(t[0, :, :2], torch.ones(4, 2)) and torch.equal(t[0, :, 2:], torch.zeros(4, 2))
    assert bool((foreground_target(None, 4) == -1).all())


def test_prior_is_the_share_of_heat_off_the_item():
    fg = torch.zeros(2, 1, 8, 8)
    fg[:, :, :, :4] = 1.0
    heat = torch.zeros(2, 1, 4, 4)
    heat[0, :, :, :2] = 1.0   # all heat on the item
    heat[1, :, :, 2:] = 0.5   # all heat off it
    assert torch.isclose(foreground_prior(heat, fg), torch.tensor(0.5), atol=1e-5)
    fg[1] = -1.0  # second sample has no mask: only the first counts
    assert float(foreground_prior(heat, fg)) < 1e-5
    fg[0] = -1.0
    assert foreground_prior(heat, fg) is None


def test_loss_adds_the_prior_only_with_parts_and_weight():
    b, k, c = 2, 3, 2
    out = {"global_logits": torch.zeros(b, c), "part_logits": torch.zeros(b, k, c), "logits": torch.zeros(b, c),
           "heatmap": torch.full((b, 1, 4, 4), 0.5, requires_grad=True)}
    labels = torch.tensor([0, 1])
    fg = torch.zeros(b, 1, 8, 8)
    _, terms = mgfen_loss(out, labels, LossConfig(fg_weight=0.0), fg)
    assert "fg" not in terms
    loss, terms = mgfen_loss(out, labels, LossConfig(fg_weight=2.0), fg)
    assert terms["fg"] > 0.99  # no foreground at all: every bit of heat is off the item
    loss.backward()
    assert out["heatmap"].grad is not None


def test_dataset_with_masks_follows_flips(tmp_path):
    import cv2

    for name in ("genuine", "counterfeit"):
        img = np.zeros((96, 96, 3), np.uint8)
        img[10:40, 50:90] = 220
        mask = np.where(img[..., 0] > 0, 255, 0).astype(np.uint8)
        for root, arr in ((tmp_path, img), (tmp_path / "masks", mask)):
            (root / "train" / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "train" / name / "a.png"), arr)
    index = index_folder(tmp_path)
    pre = PreprocessConfig(frame_size=96, global_size=32, crop_size=16, ace=False, brightness_target=None)
    aug = AugmentConfig(gain=0.0, offset=0.0, max_rotation=0.0)
    ds = FrameDataset(tmp_path, index.split("train"), pre, aug, with_masks=True)
    for epoch in range(4):
        ds.set_epoch(epoch)
        image, frame, label, fg = ds[0]
        assert fg.shape == (1, 32, 32)
        small = cv2.resize(frame.numpy().transpose(1, 2, 0)[..., 0], (32, 32), interpolation=cv2.INTER_AREA) / 255.0
        assert np.abs(small / small.max() - fg[0].numpy()).max() < 0.05, epoch
    assert len(FrameDataset(tmp_path, index.split("train"), pre)[0]) == 3


def test_box_foreground_share():
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    boxes = np.array([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5]], [[0.2, 0.0, 0.8, 1.0], [0.0, 0.5, 0.5, 1.0]]])
    assert abs(box_foreground_share(boxes, [mask, mask]) - (1.0 + 0.0 + 0.5 + 1.0) / 4) < 1e-6
