"""One-shot foreground extraction: pipeline logic with a tiny feature function, the real backbone on small
synthetic frames, the `mgfen-data masks` command, and bad reference input."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from train.enhance.foreground import (ForegroundConfig, ForegroundError, ForegroundExtractor, largest_component,
                                      load_references, mask_iou, read_mask)

SIZE = 160


class ColourFeatures:
    """Stand-in for the CNN: the Lab colour of each grid cell, unit length (enough for a coloured object)."""

    def __init__(self, res: int) -> None:
        self.res = res

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        small = cv2.resize(bgr, (self.res, self.res), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB).astype(np.float32) - 128.0
        return lab / (np.linalg.norm(lab, axis=2, keepdims=True) + 1e-6)


def _object_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A red rotated rectangle with white print at a random pose on green/blue noise."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal((150, 160, 40), 25, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    centre = rng.uniform(55, 105, 2)
    box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (70, 45), float(rng.uniform(-40, 40))))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 255)
    obj = np.clip(rng.normal((40, 40, 210), 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    img[mask > 0] = obj[mask > 0]
    cv2.putText(img, "MG", (int(centre[0]) - 10, int(centre[1]) + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1)
    img[mask == 0] = np.where(rng.random((int((mask == 0).sum()), 1)) < 0.5, img[mask == 0], img[mask == 0] // 2 + 20)
    return img, mask


def _colour_extractor() -> ForegroundExtractor:
    cfg = ForegroundConfig(work_size=160, feature_res=20, grabcut_size=96)
    return ForegroundExtractor(cfg, features=ColourFeatures(cfg.feature_res))


def test_pipeline_segments_a_coloured_object_from_one_reference():
    fg = _colour_extractor().fit([_object_scene(0)])
    assert fg.reference_iou > 0.8
    ious, confs = [], []
    for seed in (1, 2, 3):
        img, gt = _object_scene(seed)
        res = fg.segment(img)
        assert res.mask.shape == gt.shape and res.mask.dtype == np.uint8
        assert set(np.unique(res.mask)) <= {0, 255}
        assert res.probability.shape == (20, 20)
        assert 0.0 <= res.confidence <= 1.0
        ious.append(mask_iou(res.mask, gt))
        confs.append(res.confidence)
    assert min(ious) > 0.9, ious
    assert min(confs) > 0.3


def test_confidence_is_low_without_an_object():
    fg = _colour_extractor().fit([_object_scene(0)])
    good = fg.segment(_object_scene(4)[0]).confidence
    flat = np.clip(np.random.default_rng(5).normal((150, 160, 40), 25, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    assert fg.segment(flat).confidence < good


def test_several_references_and_size_independence():
    fg = _colour_extractor().fit([_object_scene(0), _object_scene(6)])
    img, gt = _object_scene(7)
    big = cv2.resize(img, (240, 240), interpolation=cv2.INTER_LINEAR)
    big_gt = cv2.resize(gt, (240, 240), interpolation=cv2.INTER_NEAREST)
    res = fg.segment(big)
    assert res.mask.shape == (240, 240)
    assert mask_iou(res.mask, big_gt) > 0.85


def test_largest_component_and_iou():
    m = np.zeros((40, 40), np.uint8)
    m[5:25, 5:25] = 1
    m[12:16, 12:16] = 0  # a hole
    m[30:35, 30:35] = 1  # a small island
    kept = largest_component(m)
    assert kept[31, 31] == 0 and kept[13, 13] == 1 and kept.sum() == 400
    assert largest_component(m, fill_holes=False)[13, 13] == 0
    assert mask_iou(m, m) == 1.0 and mask_iou(np.zeros_like(m), np.zeros_like(m)) == 1.0
    assert mask_iou(kept, np.zeros_like(m)) == 0.0


def test_bad_references_raise_clear_errors(tmp_path):
    img, mask = _object_scene(0)
    fg = _colour_extractor()
    with pytest.raises(ForegroundError, match="mask is 80x80 but the image is 160x160"):
        fg.fit([(img, mask[:80, :80])])
    with pytest.raises(ForegroundError, match="empty"):
        fg.fit([(img, np.zeros_like(mask))])
    with pytest.raises(ForegroundError, match="whole image"):
        fg.fit([(img, np.full_like(mask, 255))])
    with pytest.raises(ForegroundError, match="at least one"):
        fg.fit([])
    with pytest.raises(ForegroundError, match="fit"):
        fg.segment(img)
    cv2.imwrite(str(tmp_path / "ref.png"), img)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    with pytest.raises(ForegroundError, match="pair each --ref"):
        load_references([tmp_path / "ref.png"], [])
    with pytest.raises(ForegroundError, match="not found"):
        read_mask(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ForegroundError, match="not a readable mask"):
        read_mask(tmp_path / "bad.png")
    one = (mask > 0).astype(np.uint8)  # a 0/1 mask is accepted as well
    cv2.imwrite(str(tmp_path / "m01.png"), one)
    assert mask_iou(read_mask(tmp_path / "m01.png"), mask) == 1.0


# ------------------------------------------------------------------------- real backbone + the command


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    """Five 256 px synthetic tag frames in the dataset layout, with their exact masks."""
    from train.data.synth import render_sample
    from train.data.synth_config import SynthConfig

    root = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(n=20, size=256, seed=3)
    for i, (label, bg) in enumerate([(0, "wood"), (1, "weave"), (0, "leather"), (1, "gradient"), (0, "plaid")]):
        img, mask, _ = render_sample(cfg, i, label, bg)
        rel = f"test/{'genuine' if label == 0 else 'counterfeit'}/item{i:04d}_0.png"
        for base, arr in ((root, img), (root / "ref_masks", mask)):
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(base / rel), arr)
    return root


def test_backbone_features_segment_synthetic_tags(tiny_synth):
    from edge_runtime.preprocess import read_image

    cfg = ForegroundConfig(work_size=256, feature_res=16, grabcut_size=128)
    paths = sorted((tiny_synth / "test").rglob("*.png"))
    ref = paths[0]
    fg = ForegroundExtractor(cfg).fit([(read_image(ref), read_mask(tiny_synth / "ref_masks" / ref.relative_to(tiny_synth)))])
    ious = [mask_iou(fg.segment(read_image(p)).mask, read_mask(tiny_synth / "ref_masks" / p.relative_to(tiny_synth))) for p in paths[1:]]
    assert np.mean(ious) > 0.8, ious


def test_masks_command_writes_layout_confidence_and_sheet(tiny_synth, tmp_path):
    import click

    from train.cli.data_background import masks_cmd

    @click.group()
    def group():
        pass

    group.add_command(masks_cmd)
    ref = sorted((tiny_synth / "test").rglob("*.png"))[0]
    ref_mask = tiny_synth / "ref_masks" / ref.relative_to(tiny_synth)
    out = tmp_path / "masks"
    runner = CliRunner()
    res = runner.invoke(group, ["masks", "--ref", str(ref), "--ref-mask", str(ref_mask), "--data", str(tiny_synth / "test"),
                                "--out", str(out), "--json", "--threads", "1"])
    assert res.exit_code == 0, res.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["counterfeit/item0001_0.png", "counterfeit/item0003_0.png", "genuine/item0000_0.png",
                       "genuine/item0002_0.png", "genuine/item0004_0.png"]
    with open(out / "confidence.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    sheet = cv2.imread(str(out / "contact_sheet.jpg"))
    assert sheet is not None and sheet.shape[0] >= 200
    # existing masks are kept unless --overwrite
    again = runner.invoke(group, ["masks", "--ref", str(ref), "--ref-mask", str(ref_mask), "--data", str(tiny_synth / "test"),
                                  "--out", str(out), "--threads", "1"])
    assert again.exit_code == 0 and "(5 kept)" in again.output

    # a reference mask of another size: one clear line, non-zero exit, no traceback
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((64, 64), 255, np.uint8))
    bad = runner.invoke(group, ["masks", "--ref", str(ref), "--ref-mask", str(small), "--data", str(tiny_synth / "test")])
    assert bad.exit_code != 0
    assert "mask is 64x64 but the image is 256x256" in bad.output and isinstance(bad.exception, SystemExit)
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.zeros((256, 256), np.uint8))
    bad = runner.invoke(group, ["masks", "--ref", str(ref), "--ref-mask", str(empty), "--data", str(tiny_synth / "test")])
    assert bad.exit_code != 0 and "mask is empty" in bad.output


def _bbox(mask: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the mask's foreground grown by `margin` px, inside the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x0, y0 = max(0, int(xs.min()) - margin), max(0, int(ys.min()) - margin)
    return x0, y0, min(w, int(xs.max()) + 1 + margin) - x0, min(h, int(ys.max()) + 1 + margin) - y0


def test_box_seeded_grabcut_recovers_the_exact_synthetic_mask():
    """GrabCut from a box 5% larger than the tag: measured IoU 0.965-0.991 on eight 256 px frames (mean 0.984;
    0.985-0.993 at 1024 px), so 0.95 is the bar."""
    from train.data.synth import render_sample
    from train.data.synth_config import SynthConfig
    from train.enhance.foreground import box_mask

    cfg = SynthConfig(n=20, size=256, seed=3)
    for i, (label, bg) in enumerate([(0, "wood"), (1, "weave"), (0, "leather"), (1, "gradient")]):
        img, mask, _ = render_sample(cfg, i, label, bg)
        box = _bbox(mask, 13)
        got = box_mask(img, box)
        assert mask_iou(got, mask) > 0.95, (i, mask_iou(got, mask))
        x, y, w, h = box
        assert not got[:y].any() and not got[:, :x].any() and not got[y + h:].any() and not got[:, x + w:].any()


def test_bad_boxes_are_clear_errors():
    from train.enhance.foreground import box_mask, check_box, parse_box

    assert parse_box("1,2,30,40") == (1, 2, 30, 40)
    with pytest.raises(ForegroundError, match="expected X,Y,W,H"):
        parse_box("1,2,30")
    with pytest.raises(ForegroundError, match="expected X,Y,W,H"):
        parse_box("a,b,c,d")
    with pytest.raises(ForegroundError, match="reaches outside the 160x120 image"):
        check_box((100, 10, 80, 50), 160, 120)
    with pytest.raises(ForegroundError, match="reaches outside"):
        check_box((-1, 10, 20, 20), 160, 120)
    with pytest.raises(ForegroundError, match="too small"):
        check_box((10, 10, 4, 40), 160, 120)
    with pytest.raises(ForegroundError, match="whole image"):
        check_box((0, 0, 160, 120), 160, 120)
    img, _ = _object_scene(0)
    with pytest.raises(ForegroundError, match="reaches outside"):
        box_mask(img, (0, 0, SIZE + 1, 10))


def test_masks_command_from_a_reference_box(tiny_synth, tmp_path):
    """`mgfen-data masks --ref IMG --ref-box X,Y,W,H`: the box-made reference mask segments the other frames;
    bad boxes are one-line errors."""
    import click

    from edge_runtime.preprocess import read_image
    from train.cli.data_background import masks_cmd

    @click.group()
    def group():
        pass

    group.add_command(masks_cmd)
    paths = sorted((tiny_synth / "test").rglob("*.png"))
    ref = paths[0]
    x, y, w, h = _bbox(read_mask(tiny_synth / "ref_masks" / ref.relative_to(tiny_synth)), 13)
    out = tmp_path / "masks"
    runner = CliRunner()
    res = runner.invoke(group, ["masks", "--ref", str(ref), "--ref-box", f"{x},{y},{w},{h}", "--data",
                                str(tiny_synth / "test"), "--out", str(out), "--json", "--threads", "1"])
    assert res.exit_code == 0, res.output
    ious = [mask_iou(read_mask(out / p.relative_to(tiny_synth / "test")),
                     read_mask(tiny_synth / "ref_masks" / p.relative_to(tiny_synth))) for p in paths[1:]]
    assert np.mean(ious) > 0.9, ious  # measured: 0.964-0.991, mean 0.983 (default ForegroundConfig)
    assert read_image(ref).shape[:2] == (256, 256)
    for args, words in (([f"{x},{y},{w}"], "expected X,Y,W,H"), (["200,10,100,50"], "reaches outside the 256x256 image"),
                        ([f"{x},{y},{w},{h}", "--ref-mask", str(tiny_synth / "ref_masks" / ref.relative_to(tiny_synth))],
                         "not both")):
        bad = runner.invoke(group, ["masks", "--ref", str(ref), "--ref-box", *args, "--data", str(tiny_synth / "test"),
                                    "--out", str(tmp_path / "bad")])
        assert bad.exit_code != 0 and isinstance(bad.exception, SystemExit), bad.output
        assert bad.output.count("Error:") == 1 and words in bad.output, bad.output

