"""Rebuild manifest.csv from a local copy of pan8915/DeepTexture (how the committed one was made).

Usage: python datasets/textures_dtd10/make_manifest.py GIT_DIR_OR_CLONE [COMMIT]

The repository holds 120 photos each of ten texture categories of the Describable Textures Dataset under
images/<category>/. Every file of the first PER_CATEGORY names (sorted) per category is listed, labelled
`unknown` (an out-of-domain set: none of it is a genuine or counterfeit item), grouped by category.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from train.data.real_data import drop_identical, manifest_from_tree, write_manifest  # noqa: E402

SOURCE = "pan8915/DeepTexture"
COMMIT = "522f46f683af11e93673bff29f81df14f49edfb2"
PREFIX = "images/"
PER_CATEGORY = 20


def make_rule():
    kept: dict[str, int] = {}

    def rule(path: str):
        parts = path[len(PREFIX):].split("/")
        if len(parts) != 2 or not parts[1].lower().endswith(".jpg"):
            return None
        if kept.get(parts[0], 0) >= PER_CATEGORY:
            return None
        kept[parts[0]] = kept.get(parts[0], 0) + 1
        return "unknown", parts[0]

    return rule


if __name__ == "__main__":
    entries = manifest_from_tree(sys.argv[1], SOURCE, PREFIX, make_rule(), *(sys.argv[2:3] or [COMMIT]))
    unique = drop_identical(entries)
    print(f"{len(entries) - len(unique)} byte-identical duplicates dropped")
    out = Path(__file__).with_name("manifest.csv")
    print(f"wrote {write_manifest(out, unique)} rows to {out}")
