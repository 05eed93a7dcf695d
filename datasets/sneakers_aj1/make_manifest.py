"""Rebuild manifest.csv from a local copy of zhengwu123/Machine_learning_group_project (how the committed one
was made).

Usage: python datasets/sneakers_aj1/make_manifest.py GIT_DIR_OR_CLONE [COMMIT]

The photos are in the repository's history only: commit 4dcde687 ("dataset", 2020-03-27) added
dataset/真/ (Chinese "real") and dataset/假/ ("fake"); a later commit removed them, so COMMIT defaults to
4dcde687, not HEAD. Labels: 真 -> genuine, 假 -> counterfeit. Group: the file name without its " (N).ext"
counter (the colourway and, where present, the number the collector gave that pair or listing, e.g.
"aj1 ow chi 6"), per label. Excluded: seven 假 groups that are legit-check guide pictures rather than photos
of one shoe (side-by-side "Fake"/"Real" composites with text, article screenshots); see README.md.
Byte-identical files would be listed once (there are none at this commit).
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from train.data.real_data import drop_identical, manifest_from_tree, write_manifest  # noqa: E402

SOURCE = "zhengwu123/Machine_learning_group_project"
COMMIT = "4dcde6873bb09c984d91ddc4e8e460489386cf08"
PREFIX = "dataset/"
LABELS = {"真": ("genuine", "genuine"), "假": ("counterfeit", "fake")}
NAME = re.compile(r"^(.+?)\s*\((\d+)\)\.(jpe?g|png)$", re.IGNORECASE)
# Fake-class groups made of comparison composites (one real and one fake shoe in one picture, often labelled
# "Fake"/"Real" in the image) or screenshots of guide articles: not photos of one counterfeit item.
GUIDE_GROUPS = {"aj1 ow chi", "aj1 ow chi 4", "aj1 ow chi co", "aj1 ow unc", "aj1 ow unc 5", "aj1 ow white",
                "aj1 ow white 4"}


def rule(path: str):
    parts = path[len(PREFIX):].split("/")
    if len(parts) != 2 or parts[0] not in LABELS:
        return None
    m = NAME.match(parts[1])
    if m is None:
        raise SystemExit(f"{path}: unexpected file name")
    item = " ".join(m.group(1).split())
    label, tag = LABELS[parts[0]]
    if label == "counterfeit" and item in GUIDE_GROUPS:
        return None
    return label, f"{item.replace(' ', '-')}-{tag}"


if __name__ == "__main__":
    entries = manifest_from_tree(sys.argv[1], SOURCE, PREFIX, rule, *(sys.argv[2:3] or [COMMIT]))
    unique = drop_identical(entries)
    print(f"{len(entries) - len(unique)} byte-identical duplicates dropped")
    out = Path(__file__).with_name("manifest.csv")
    print(f"wrote {write_manifest(out, unique)} rows to {out}")
