"""How a data folder's splits are read (train.data.folders.index_folder): given splits are kept, images without
one are split among themselves by group, and a split name other than train/val/test is refused."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.data.folders import SPLITS, index_folder, split_samples
from train.errors import DataError


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


def _manifest(root: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """rows: (path, label, group, split); writes the images and manifest.csv."""
    for i, (rel, *_rest) in enumerate(rows):
        _image(root / rel, i)
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "split", "label", "group"])
        w.writerows([(p, s, lab, g) for p, lab, g, s in rows])


def _rows(n_items: int, prefix: str, split: str) -> list[tuple[str, str, str, str]]:
    """Two shots per item, alternating classes."""
    out = []
    for i in range(n_items):
        label = ("genuine", "counterfeit")[i % 2]
        out += [(f"{label}/{prefix}{i}_{k}.png", label, f"{prefix}{i}", split) for k in range(2)]
    return out


def test_unknown_split_name_names_value_and_line(tmp_path):
    rows = _rows(4, "a", "train")
    rows[3] = (*rows[3][:3], "valid")
    _manifest(tmp_path, rows)
    with pytest.raises(DataError) as err:
        index_folder(tmp_path)
    msg = str(err.value)
    assert "manifest.csv line 5" in msg and "'valid'" in msg and "\n" not in msg


def test_unknown_split_folder_is_refused(tmp_path):
    for split in ("train", "valid"):
        for label in ("genuine", "counterfeit"):
            _image(tmp_path / split / label / f"{split}{label}.png", 1)
    with pytest.raises(DataError, match="folder 'valid' is not a split"):
        index_folder(tmp_path)


def test_given_splits_are_kept_and_the_rest_split_among_themselves(tmp_path):
    given = _rows(2, "tr", "train") + _rows(2, "va", "val") + _rows(2, "te", "test")
    free = _rows(20, "new", "")
    _manifest(tmp_path, given + free)
    index = index_folder(tmp_path, seed=3)
    by_path = {s.path: s for s in index.samples}
    assert {p: by_path[p].split for p, *_ in given} == {p: s for p, _l, _g, s in given}
    assert index.assigned == tuple(sorted(p for p, *_ in free))
    split_of_group: dict[str, set[str]] = {}
    for p, *_ in free:
        split_of_group.setdefault(by_path[p].group, set()).add(by_path[p].split)
    assert all(len(s) == 1 for s in split_of_group.values())  # an item never spans two splits
    counts = {n: sum(1 for p, *_ in free if by_path[p].split == n) for n in SPLITS}
    assert counts["train"] > counts["val"] > 0 and counts["test"] > 0
    assert index.split_note() == (f"split: 40 of 52 images had no split; assigned by group (train "
                                  f"{counts['train']} / val {counts['val']} / test {counts['test']})")


def test_without_any_split_everything_is_split_as_before(tmp_path):
    free = _rows(20, "x", "")
    _manifest(tmp_path, free)
    index = index_folder(tmp_path, seed=1)
    expected = sorted(split_samples([s for s in index.samples], 1), key=lambda s: s.path)
    assert [s.split for s in index.samples] == [s.split for s in expected]
    assert len(index.assigned) == 40 and index.split_note().startswith("split: 40 of 40 images had no split")


def test_all_given_means_nothing_assigned(tmp_path):
    _manifest(tmp_path, _rows(2, "tr", "train") + _rows(2, "te", "test"))
    index = index_folder(tmp_path)
    assert index.assigned == () and index.split_note() == ""


def test_an_item_with_and_without_a_split_is_refused(tmp_path):
    rows = _rows(4, "a", "test")
    rows[1] = (*rows[1][:3], "")  # second shot of item a0 has no split
    _manifest(tmp_path, rows)
    with pytest.raises(DataError, match="group 'a0' has split 'test' on some rows"):
        index_folder(tmp_path)
