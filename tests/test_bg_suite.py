"""Background-reliance suite (variants, BG-Gap, adversarial backgrounds) with predictors whose reliance is
known, the suite on a real (tiny, untrained) checkpoint, and offline augmentation."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from train.evaluate.bg_suite import (VARIANTS, SuiteConfig, SuiteError, SuiteItem, build_variant, inpaint_background,
                                     item_backgrounds, load_items, pair_indices, run_suite, variant_sheet)

S = 64
FG_COLOURS = ((0, 0, 220), (0, 220, 0))  # class 0: red object, class 1: green object (BGR)
BG_COLOURS = ((200, 60, 0), (0, 200, 200))  # class 0 shot on blue, class 1 on yellow (the shortcut)


def _item(i: int, label: int) -> SuiteItem:
    rng = np.random.default_rng(i)
    img = np.clip(rng.normal(BG_COLOURS[label], 8, (S, S, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((S, S), bool)
    x, y = int(rng.integers(8, 24)), int(rng.integers(8, 24))
    mask[y : y + 28, x : x + 28] = True
    img[mask] = FG_COLOURS[label]
    return SuiteItem(f"test/c{label}/{i}.png", label, img, mask)


def _items(n: int = 10) -> list[SuiteItem]:
    return [_item(i, i % 2) for i in range(n)]


def _mean_colour(img: np.ndarray, where: np.ndarray) -> np.ndarray:
    return img[where].reshape(-1, 3).mean(axis=0) if where.any() else np.zeros(3)


def foreground_model(images):
    """Looks at the centre-most object pixels only: green-dominant -> class 1."""
    out = []
    for img in images:
        g, r = img[..., 1].astype(int), img[..., 2].astype(int)
        obj_r, obj_g = (r > 180) & (g < 60), (g > 180) & (r < 60)
        p1 = 1.0 if obj_g.sum() > obj_r.sum() else 0.0
        out.append([1 - p1, p1])
    return np.array(out)


def background_model(images):
    """Looks at the border (background) only: yellow-ish border -> class 1."""
    out = []
    for img in images:
        border = np.concatenate([img[:3].reshape(-1, 3), img[-3:].reshape(-1, 3)]).mean(axis=0)
        p1 = 1.0 if border[1] + border[2] > 2 * border[0] else 0.0
        out.append([1 - p1, p1])
    return np.array(out)


CFG = SuiteConfig(work_size=S, adversarial_m=4, background_source="inpaint", batch=4)


def test_foreground_model_has_no_gap_and_survives_every_background():
    r = run_suite(_items(), foreground_model, CFG, num_classes=2)
    acc = {k: v["accuracy"] for k, v in r["variants"].items()}
    assert set(acc) == set(VARIANTS)
    for name in ("original", "only_fg", "mixed_same", "mixed_rand", "mixed_next"):
        assert acc[name] == 1.0, (name, acc)
    assert r["bg_gap"] == 0.0
    assert r["adversarial"]["accuracy"] == 1.0 and r["adversarial"]["m"] == 4
    assert r["background_source"] == "inpaint"


def test_background_model_shows_the_shortcut():
    r = run_suite(_items(), background_model, CFG, num_classes=2)
    acc = {k: v["accuracy"] for k, v in r["variants"].items()}
    assert acc["original"] == 1.0 and acc["mixed_same"] == 1.0
    assert acc["mixed_next"] == 0.0  # the other class's background flips every verdict
    # the border model follows the donor's background: right exactly when the donor shares the item's class
    items = _items()
    bgs, _ = item_backgrounds(items, CFG.background_source, CFG.seed)
    _, donors = build_variant("mixed_rand", items, bgs, CFG.blend, CFG.seed, 2)
    same_class = np.mean([items[j].label == it.label for it, j in zip(items, donors)])
    assert 0.0 < same_class < 1.0 and acc["mixed_rand"] == pytest.approx(same_class)
    assert r["bg_gap"] == pytest.approx(1.0 - same_class)  # mixed_same 1.0 minus mixed_rand
    assert r["adversarial"]["accuracy"] == 0.0 and r["adversarial"]["fooled_rate"] == 1.0


def test_variants_are_built_from_the_masks():
    items = _items(6)
    bgs, _ = item_backgrounds(items, "inpaint", 0)
    only_fg, _ = build_variant("only_fg", items, bgs, "hard", 0, 2)
    no_fg, _ = build_variant("no_fg", items, bgs, "hard", 0, 2)
    for it, a, b in zip(items, only_fg, no_fg):
        np.testing.assert_array_equal(a[it.mask], it.image[it.mask])
        assert a[~it.mask].max() == 0 and b[it.mask].max() == 0
    mixed, donors = build_variant("mixed_next", items, bgs, "hard", 0, 2)
    for i, (it, img, j) in enumerate(zip(items, mixed, donors)):
        assert items[j].label != it.label and j != i
        np.testing.assert_array_equal(img[it.mask], it.image[it.mask])
    # inpainting removes the donor's own object from its background
    for it, bg in zip(items, bgs):
        assert np.abs(_mean_colour(bg, it.mask) - np.array(BG_COLOURS[it.label])).max() < 40


def test_pairing_rules_and_reproducibility():
    labels = [0, 0, 0, 1, 1]
    same = pair_indices(labels, "same", np.random.default_rng(0), 2)
    assert all(labels[j] == labels[i] and i != j for i, j in enumerate(same))
    rand = pair_indices(labels, "rand", np.random.default_rng(0), 2)
    assert all(i != j for i, j in enumerate(rand))
    with pytest.raises(SuiteError, match="too few images per class"):
        pair_indices(labels + [2], "same", np.random.default_rng(0), 3)  # class 2 has a single image
    nxt = pair_indices([0, 0, 1, 1], "next", np.random.default_rng(0), 2)
    assert [nxt[0] in (2, 3), nxt[2] in (0, 1)] == [True, True]
    a = run_suite(_items(), background_model, CFG, 2)
    b = run_suite(_items(), background_model, CFG, 2)
    assert a == b


def test_manifest_backgrounds_render_the_named_family():
    items = _items(4)
    for it, fam in zip(items, ("wood", "weave", "wood", "plaid")):
        it.background_name = fam
    bgs, source = item_backgrounds(items, "auto", 0)
    assert source == "manifest" and all(b.shape == (S, S, 3) for b in bgs)
    items[0].background_name = "my_photo.jpg"
    assert item_backgrounds(items, "auto", 0)[1] == "inpaint"
    with pytest.raises(SuiteError, match="--bg-source inpaint"):
        item_backgrounds(items, "manifest", 0)


def test_suite_errors_and_sheet():
    with pytest.raises(SuiteError, match="two classes"):
        run_suite([_item(0, 0), _item(2, 0)], foreground_model, CFG, 2)
    with pytest.raises(SuiteError, match="at least two images"):
        run_suite([_item(0, 0)], foreground_model, CFG, 2)
    with pytest.raises(SuiteError, match="blend"):
        SuiteConfig(blend="nope")
    sheet = variant_sheet(_items(4), CFG, 2, rows=2, thumb=32)
    assert sheet.shape == (24 + 2 * 32, 32 * len(VARIANTS), 3)
    hole = np.zeros((S, S), bool)
    hole[10:30, 10:30] = True
    img = np.full((S, S, 3), 90, np.uint8)
    img[hole] = 255
    assert np.abs(inpaint_background(img, hole)[hole].astype(int) - 90).max() < 40


# ------------------------------------------------------------------------------------- data on disk


@dataclass(frozen=True)
class _S:
    path: str
    label: int


def _write_dataset(root, n=8, size=S, with_masks=True, manifest=True):
    rows = []
    for i in range(n):
        it = _item(i, i % 2)
        img = cv2.resize(it.image, (size, size), interpolation=cv2.INTER_NEAREST)
        mask = cv2.resize(it.mask.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_NEAREST)
        cls = ("genuine", "counterfeit")[it.label]
        split = "test" if i >= n - 4 else ("val" if i >= n - 6 else "train")
        rel = f"{split}/{cls}/item{i:04d}_0.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img)
        if with_masks:
            (root / "masks" / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "masks" / rel), mask)
        rows.append((rel, split, cls, f"item{i:04d}", "gradient"))
    if manifest:
        with open(root / "manifest.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(("path", "split", "label", "group", "background"))
            w.writerows(rows)
    return root


def test_load_items_needs_masks(tmp_path):
    root = _write_dataset(tmp_path / "d", with_masks=False)
    with pytest.raises(SuiteError, match="mgfen-data masks"):
        load_items(root, [_S("test/genuine/item0004_0.png", 0)], 32)
    (root / "masks/test/genuine").mkdir(parents=True)
    cv2.imwrite(str(root / "masks/test/genuine/item0004_0.png"), np.zeros((S, S), np.uint8))
    with pytest.raises(SuiteError, match="empty"):
        load_items(root, [_S("test/genuine/item0004_0.png", 0)], 32)
    cv2.imwrite(str(root / "masks/test/genuine/item0004_0.png"), np.zeros((10, 12), np.uint8))
    with pytest.raises(SuiteError, match="12x10 but the image is 64x64"):
        load_items(root, [_S("test/genuine/item0004_0.png", 0)], 32)


def test_bg_suite_report_on_a_tiny_checkpoint(tmp_path):
    import torch

    from edge_runtime.preprocess import PreprocessConfig
    from train.evaluate.bg_report import bg_suite_report
    from train.model.checkpoint import save_checkpoint
    from train.model.mgfen import ModelConfig, build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tiny = ModelConfig(backbone="resnet18", fpn_channels=16, preprocess=PreprocessConfig(frame_size=128, global_size=64, crop_size=32))
    model = build_model(tiny)
    with torch.no_grad():  # a model that calls everything counterfeit, whatever the image (parts share this head)
        model.global_net.fc.weight.zero_()
        model.global_net.fc.bias.copy_(torch.tensor([0.0, 3.0]))
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, model, ["genuine", "counterfeit"], metrics={}, data_hash="x", epoch=1)
    root = _write_dataset(tmp_path / "d", n=12, size=160)
    # drop one genuine image: 5 genuine, 6 counterfeit, so a mix-up of labels would change every accuracy
    gone = "train/genuine/item0000_0.png"
    (root / gone).unlink()
    (root / "masks" / gone).unlink()
    lines = (root / "manifest.csv").read_text().splitlines()
    (root / "manifest.csv").write_text("\n".join(ln for ln in lines if not ln.startswith(gone)) + "\n")
    out = tmp_path / "suite"
    r = bg_suite_report(ckpt, root, split="all", out=out, adversarial_m=2, batch=4, progress=False)
    assert r["n"] == 11 and r["background_source"] == "manifest" and set(r["variants"]) == set(VARIANTS)
    # by hand: every variant of every image is called counterfeit -> 6/11 right; no gap; backgrounds never
    # change a call, so nothing right is fooled and no call flips
    for name, v in r["variants"].items():
        assert v["accuracy"] == pytest.approx(6 / 11), name
    assert r["bg_gap"] == 0.0
    assert r["adversarial"] == {"m": 2, "accuracy": pytest.approx(6 / 11), "fooled_rate": 0.0, "flip_rate": 0.0}
    assert 0.0 <= r["boxes_on_item"] <= 1.0
    assert json.loads((out / "bg_suite.json").read_text())["n"] == 11
    assert "BG-Gap" in (out / "bg_suite.md").read_text()
    assert cv2.imread(str(out / "bg_variants.png")) is not None


def test_offline_augment_layout_manifest_and_reproducibility(tmp_path):
    from train.enhance.augment import AugmentError, OfflineAugmentConfig, augment_dataset
    from train.enhance.backgrounds import make_library

    root = _write_dataset(tmp_path / "d")
    lib = make_library(None, None)
    cfg = OfflineAugmentConfig(copies=2, seed=1)
    s = augment_dataset(root, tmp_path / "o", lib, cfg)
    assert s["originals"] == 8 and s["copies"] == 2 * 2  # the 2 train images get copies
    with open(tmp_path / "o" / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and set(rows[0]) == {"path", "split", "label", "group", "background"}
    copies = [r for r in rows if "_bg" in r["path"]]
    assert all(r["split"] == "train" and r["background"] in lib.names for r in copies)
    orig = {r["path"]: r for r in rows if "_bg" not in r["path"]}
    for r in copies:  # a copy stays in its original's group
        assert orig[r["path"].replace("_bg1", "").replace("_bg2", "")]["group"] == r["group"]
        assert (tmp_path / "o" / "masks" / r["path"]).is_file()
    # the object is kept, the background changed
    src = cv2.imread(str(root / "train/genuine/item0000_0.png"))
    cp = cv2.imread(str(tmp_path / "o/train/genuine/item0000_0_bg1.png"))
    m = cv2.imread(str(root / "masks/train/genuine/item0000_0.png"), 0) > 0
    inner = cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    np.testing.assert_array_equal(cp[inner], src[inner])
    assert np.abs(cp[~m].astype(int) - src[~m]).mean() > 10
    # same arguments, same bytes; a non-empty --out needs --overwrite
    with pytest.raises(AugmentError, match="--overwrite"):
        augment_dataset(root, tmp_path / "o", lib, cfg)
    augment_dataset(root, tmp_path / "o2", lib, cfg)
    assert (tmp_path / "o/train/genuine/item0000_0_bg2.png").read_bytes() == (tmp_path / "o2/train/genuine/item0000_0_bg2.png").read_bytes()
    # images of an augmented split without masks: a clear error
    bare = _write_dataset(tmp_path / "bare", with_masks=False)
    with pytest.raises(AugmentError, match="have no mask"):
        augment_dataset(bare, tmp_path / "o3", lib, cfg)


def test_augment_command_and_empty_background_folder(tmp_path):
    import click
    from click.testing import CliRunner

    from train.cli.data_background import augment_cmd

    @click.group()
    def group():
        pass

    group.add_command(augment_cmd)
    root = _write_dataset(tmp_path / "d")
    runner = CliRunner()
    ok = runner.invoke(group, ["augment", "--data", str(root), "--out", str(tmp_path / "o"), "--copies", "1", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output[ok.output.index("{"):])["copies"] == 2
    (tmp_path / "empty").mkdir()
    bad = runner.invoke(group, ["augment", "--data", str(root), "--out", str(tmp_path / "o4"), "--backgrounds", str(tmp_path / "empty")])
    assert bad.exit_code != 0 and "holds no images" in bad.output and isinstance(bad.exception, SystemExit)
