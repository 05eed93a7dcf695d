"""Tests of the synthetic dataset (train.data.synth, train.enhance.backgrounds, mgfen-data synth/show). Small frames only."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from train.cli.mgfen_data import main
from train.data.synth import (REGION_NAMES, SPLITS, generate_dataset, measured_bias, plan_dataset, region_mask,
                              render_sample)
from train.data.synth_config import SynthConfig, SynthError
from train.enhance.backgrounds import FAMILIES, BackgroundError, BackgroundLibrary

SMALL = SynthConfig(n=24, size=256)


def _flat(size: int, colour=(200, 0, 200)) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[:] = colour
    return img


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "d"
    generate_dataset(out, SMALL, workers=1)
    return out


# -------------------------------------------------------------------------------------------- backgrounds
def test_every_family_renders_reproducibly_with_macro_structure():
    lib = BackgroundLibrary(None, FAMILIES)
    for name in FAMILIES:
        a = lib.render(name, np.random.default_rng(3), 96, 128)
        b = lib.render(name, np.random.default_rng(3), 96, 128)
        assert a.shape == (96, 128, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b), name
        assert a.std() > 3.0, f"{name} is nearly flat"


def test_photo_library_crops_to_requested_size(tmp_path):
    (tmp_path / "sub").mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "sub" / "a.png"), rng.integers(0, 255, (50, 80, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "b.jpg"), rng.integers(0, 255, (300, 200, 3), dtype=np.uint8))
    lib = BackgroundLibrary(tmp_path, ())
    assert lib.names == ("b.jpg", "sub/a.png")
    img, name = lib.sample(np.random.default_rng(1), 120, 160)
    assert img.shape == (120, 160, 3) and name in lib.names


def test_empty_photo_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BackgroundError, match="holds no images"):
        BackgroundLibrary(tmp_path, ())


# ------------------------------------------------------------------------------------------ single frames
def test_strength_zero_makes_both_classes_identical():
    cfg = SynthConfig(n=24, size=256, strength=0.0)
    bg = BackgroundLibrary().render("weave", np.random.default_rng(5), 256, 256)
    for index in (0, 7):
        g, gm, _ = render_sample(cfg, index, "genuine", bg)
        c, cm, _ = render_sample(cfg, index, "counterfeit", bg)
        assert np.array_equal(g, c) and np.array_equal(gm, cm)


def test_strength_one_differs_only_inside_micro_regions():
    cfg = SynthConfig(n=24, size=384, strength=1.0)
    bg = BackgroundLibrary().render("plaid", np.random.default_rng(2), 384, 384)
    g, _, info = render_sample(cfg, 3, 0, bg)
    c, _, _ = render_sample(cfg, 3, 1, bg)
    diff = np.abs(g.astype(np.int16) - c.astype(np.int16)).max(axis=2) > 0
    inside = region_mask(info, 384, grow=3) > 0
    assert diff.any()
    assert not (diff & ~inside).any(), f"{int((diff & ~inside).sum())} changed pixels outside the micro regions"
    for name in REGION_NAMES:  # every micro feature differs
        assert (diff & (region_mask(info, 384, (name,)) > 0)).sum() > 20, name


def test_mask_matches_drawn_tag():
    bg = _flat(256)
    for cfg in (SynthConfig(n=24, size=256, lens_blur=0.0), SynthConfig(n=24, size=256)):
        img, mask, _ = render_sample(cfg, 4, 1, bg)
        empty, empty_mask, _ = render_sample(cfg, 4, 1, bg, draw_tag=False)
        assert set(np.unique(mask)) == {0, 255} and not empty_mask.any()
        drawn = np.abs(img.astype(np.int16) - empty.astype(np.int16)).max(axis=2) > 8
        m = mask > 0
        assert 0.08 < m.mean() < 0.6
        if cfg.lens_blur == 0:
            iou = (drawn & m).sum() / (drawn | m).sum()
            assert iou > 0.98, iou
        else:  # the optical blur softens the edge by about a pixel, never more
            grown = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
            shrunk = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
            assert not (drawn & ~grown).any()
            assert drawn[shrunk].mean() > 0.99


def test_regions_lie_inside_the_mask():
    cfg = SynthConfig(n=24, size=256)
    _, mask, info = render_sample(cfg, 9, 0, _flat(256))
    for name in REGION_NAMES:
        reg = region_mask(info, 256, (name,)) > 0
        assert (mask[reg] > 0).mean() > 0.97, name


# -------------------------------------------------------------------------------------------- the dataset
def test_layout_manifest_and_masks(small_dataset):
    rows = _manifest(small_dataset)
    assert len(rows) == SMALL.n
    assert list(rows[0].keys()) == ["path", "split", "label", "group", "background"]
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    for r in rows:
        assert r["path"].split("/")[:2] == [r["split"], r["label"]]
        img = cv2.imread(str(small_dataset / r["path"]), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(small_dataset / "masks" / r["path"]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (256, 256, 3) and mask.shape == (256, 256) and mask.dtype == np.uint8
        assert r["background"] in FAMILIES
    card = json.loads((small_dataset / "card.json").read_text())
    assert card["generator_version"] and card["config"]["seed"] == 0 and card["classes"] == ["genuine", "counterfeit"]
    regions = json.loads((small_dataset / "regions.json").read_text())
    assert set(regions) == {r["path"] for r in rows}


def test_splits_hold_both_classes_and_no_group_crosses(small_dataset):
    rows = _manifest(small_dataset)
    for split in SPLITS:
        assert {r["label"] for r in rows if r["split"] == split} == {"genuine", "counterfeit"}
    split_of: dict[str, str] = {}
    for r in rows:
        assert split_of.setdefault(r["group"], r["split"]) == r["split"]
    labels = [r["label"] for r in rows]
    assert labels.count("genuine") == labels.count("counterfeit")
    shots = np.bincount(np.unique([r["group"] for r in rows], return_inverse=True)[1])
    assert set(shots) <= {2, 3}


def test_same_seed_same_bytes_other_seed_other_bytes(small_dataset, tmp_path):
    again = tmp_path / "again"
    generate_dataset(again, SMALL, workers=2)  # more workers must not change a byte
    assert _tree_bytes(again) == _tree_bytes(small_dataset)
    other = tmp_path / "other"
    generate_dataset(other, SynthConfig(n=24, size=256, seed=1), workers=1)
    a, b = _tree_bytes(other), _tree_bytes(small_dataset)
    assert a.keys() != b.keys() or any(a[k] != b[k] for k in a)


def test_train_bias_follows_config_and_val_test_do_not():
    names = BackgroundLibrary().names
    plan, halves = plan_dataset(SynthConfig(n=4000, bias=0.8), names)
    assert abs(measured_bias(plan, halves, "train") - 0.8) < 0.03
    assert abs(measured_bias(plan, halves, "val") - 0.5) < 0.05
    assert abs(measured_bias(plan, halves, "test") - 0.5) < 0.07


def test_bias_measured_from_written_manifest(tmp_path):
    out = tmp_path / "b"
    generate_dataset(out, SynthConfig(n=160, size=128, bias=0.9), workers=2)
    card = json.loads((out / "card.json").read_text())
    halves = card["background_halves"]
    train = [r for r in _manifest(out) if r["split"] == "train"]
    own = np.mean([r["background"] in halves[r["label"]] for r in train])
    assert abs(own - 0.9) < 0.08


# ---------------------------------------------------------------------------------------------------- CLI
def _one_line_error(result) -> str:
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}: {result.output}"
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_cli_bad_bias(tmp_path):
    res = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "x"), "--bias", "1.5"])
    assert "--bias" in _one_line_error(res)


def test_cli_empty_backgrounds_folder(tmp_path):
    (tmp_path / "bg").mkdir()
    res = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "x"), "--n", "20", "--size", "128", "--backgrounds", str(tmp_path / "bg")])
    assert "no images" in _one_line_error(res)


def test_cli_refuses_non_empty_out(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    res = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "x"), "--n", "20", "--size", "128", "--overwrite"])
    assert "refusing" in _one_line_error(res)
    assert (tmp_path / "x" / "keep.txt").exists()


def test_cli_synth_json_and_show(tmp_path):
    out = tmp_path / "d"
    res = CliRunner().invoke(main, ["synth", "--out", str(out), "--n", "20", "--size", "192", "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["images"] == 20
    res2 = CliRunner().invoke(main, ["synth", "--out", str(out), "--n", "20", "--size", "192", "--workers", "1", "--overwrite"])
    assert res2.exit_code == 0, res2.output
    sheet = tmp_path / "sheet.png"
    res3 = CliRunner().invoke(main, ["show", str(out), "--out", str(sheet), "--pairs", "2"])
    assert res3.exit_code == 0, res3.output
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] > 400 and img.shape[1] > 1000


def test_config_rejects_bad_values():
    with pytest.raises(SynthError):
        SynthConfig(n=5)
    with pytest.raises(SynthError):
        SynthConfig(strength=-1)


def test_cli_show_missing_folder(tmp_path):
    res = CliRunner().invoke(main, ["show", str(tmp_path / "nope"), "--out", str(tmp_path / "s.png")])
    assert "does not exist" in _one_line_error(res)
