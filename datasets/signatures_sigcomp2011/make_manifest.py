"""Rebuild manifest.csv from a local copy of Abhikrsh/Signature-verification (how the committed one was made).

Usage: python datasets/signatures_sigcomp2011/make_manifest.py GIT_DIR_OR_CLONE [COMMIT]

Only sign_data/Dataset/train is used: every file of sign_data/Dataset/test is a byte-identical copy of one in
train. Labels: folder NNN -> genuine, NNN_forg -> counterfeit (a forgery of writer NNN). Group: the writer
whose signature it is, per label ("wNNN-genuine", "wNNN-forged").
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from train.data.real_data import manifest_from_tree, write_manifest  # noqa: E402

PREFIX = "sign_data/Dataset/train/"


def rule(path: str):
    if not path.lower().endswith(".png"):
        return None
    folder = path[len(PREFIX):].split("/")[0]
    forged = folder.endswith("_forg")
    writer = folder.removesuffix("_forg")
    return ("counterfeit", f"w{writer}-forged") if forged else ("genuine", f"w{writer}-genuine")


if __name__ == "__main__":
    entries = manifest_from_tree(sys.argv[1], "Abhikrsh/Signature-verification", PREFIX, rule, *sys.argv[2:3])
    out = Path(__file__).with_name("manifest.csv")
    print(f"wrote {write_manifest(out, entries)} rows to {out}")
