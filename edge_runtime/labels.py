"""Ground-truth labels for a folder of images (mgfen-scan --labels, mgfen-bench --labels)."""

from __future__ import annotations

import csv
from pathlib import Path

from edge_runtime.errors import MgfenError


def load_labels(folder: Path, classes: tuple[str, ...]) -> dict[str, str]:
    """{resolved image path: class} from folder/manifest.csv (path,label columns) if present, else from
    class-named folders (DIR/.../genuine/x.png). Raises MgfenError if the folder labels nothing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MgfenError(f"--labels {folder}: no such folder")
    labels: dict[str, str] = {}
    table = folder / "manifest.csv"
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("path") and row.get("label") in classes:
                    labels[str((folder / row["path"]).resolve())] = row["label"]
    else:
        for path in folder.rglob("*"):
            cls = next((p for p in reversed(path.relative_to(folder).parts[:-1]) if p in classes), None)
            if cls is not None and path.is_file():
                labels[str(path.resolve())] = cls
    if not labels:
        raise MgfenError(f"--labels {folder}: found no images under folders named {', '.join(classes)}")
    return labels
