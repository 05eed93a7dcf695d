"""Rebuild manifest.csv from a local copy of taseen-israque/thesis- (how the committed one was made).

Usage: python datasets/signatures_bhsig260_bengali/make_manifest.py GIT_DIR_OR_CLONE [COMMIT]

Files dataset/BHSig260-Bengali/BHSig260-Bengali/<writer>/B-S-<writer>-<G|F>-<nn>.tif: G -> genuine,
F -> counterfeit (a skilled forgery of that writer). Group: the writer, per label ("wN-genuine", "wN-forged").
Byte-identical files (the copy holds 931 blobs two to six times, always within one writer and label) are
listed once, under the first path in sort order.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from train.data.real_data import drop_identical, manifest_from_tree, write_manifest  # noqa: E402

PREFIX = "dataset/BHSig260-Bengali/BHSig260-Bengali/"
NAME = re.compile(r"^(\d+)/B-S-(\d+)-([GF])-(\d+)\.tif$")


def rule(path: str):
    m = NAME.match(path[len(PREFIX):])
    if m is None:
        return None
    folder, writer, kind, _ = m.groups()
    if folder != writer:
        raise SystemExit(f"{path}: folder and file name name different writers")
    return ("genuine", f"w{int(writer):03d}-genuine") if kind == "G" else ("counterfeit", f"w{int(writer):03d}-forged")


if __name__ == "__main__":
    entries = manifest_from_tree(sys.argv[1], "taseen-israque/thesis-", PREFIX, rule, *sys.argv[2:3])
    unique = drop_identical(entries)
    print(f"{len(entries) - len(unique)} byte-identical duplicates dropped")
    out = Path(__file__).with_name("manifest.csv")
    print(f"wrote {write_manifest(out, unique)} rows to {out}")
