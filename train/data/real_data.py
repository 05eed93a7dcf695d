"""Real photo datasets from public git repositories, without committing a single image.

A dataset is described by datasets/<name>/manifest.csv with the columns

    source  github owner/name the files come from
    commit  40-hex commit the manifest was made at
    path    file path inside that repository
    sha1    SHA-1 of the file's bytes
    label   genuine | counterfeit (edge_runtime.names.CLASS_NAMES), or unknown for a set of out-of-domain
            images (not what a scanner is trained on: textures, other products), used only to measure refusal
    group   the physical item (all shots of one item stay in one split)

`arrange(manifest, repo, out)` reads every listed file from a local copy of the repository (a bare mirror, a
normal clone, or a plain folder holding the repository's files), checks its SHA-1 and writes the bytes
unchanged to OUT/<label>/<file> plus OUT/manifest.csv in the project's format (path, split, label, group,
background; split left empty, so train.data.folders.index_folder applies its seeded group-aware split). Nothing is
decoded or re-encoded. Every problem is a DataError with one line naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from edge_runtime.names import CLASS_NAMES
from edge_runtime.novelty import UNKNOWN
from train.errors import DataError

MANIFEST_LABELS = (*CLASS_NAMES, UNKNOWN)  # unknown: an out-of-domain set, for refusal tests only
MANIFEST_COLUMNS = ("source", "commit", "path", "sha1", "label", "group")
# Columns of the arranged OUT/manifest.csv: the project's five, then provenance.
OUT_COLUMNS = ("path", "split", "label", "group", "background", "source", "commit", "source_path", "sha1")

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Entry:
    """One manifest row."""

    source: str
    commit: str
    path: str
    sha1: str
    label: str
    group: str

    def out_name(self) -> str:
        """File name in OUT/<label>/: the repository path with '/' -> '__' (unique, keeps the suffix)."""
        return self.path.replace("/", "__")


def sha1_bytes(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def read_manifest(path: str | Path) -> list[Entry]:
    """Rows of a dataset manifest, validated (columns, commit and sha1 format, label, unique paths)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (need {','.join(MANIFEST_COLUMNS)})")
        entries = []
        for line, row in enumerate(reader, start=2):
            e = Entry(**{c: (row[c] or "").strip() for c in MANIFEST_COLUMNS})
            where = f"{path}:{line}"
            if not _SOURCE.match(e.source):
                raise DataError(f"{where}: source {e.source!r} is not owner/name")
            if not _HEX40.match(e.commit):
                raise DataError(f"{where}: commit {e.commit!r} is not 40 lower-case hex digits")
            if not e.path or e.path.startswith("/") or "\n" in e.path or ".." in e.path.split("/"):
                raise DataError(f"{where}: bad path {e.path!r}")
            if not _HEX40.match(e.sha1):
                raise DataError(f"{where}: sha1 {e.sha1!r} of {e.path} is not 40 lower-case hex digits")
            if e.label not in MANIFEST_LABELS:
                raise DataError(f"{where}: unknown label {e.label!r} for {e.path} (expected {' or '.join(MANIFEST_LABELS)})")
            if not e.group:
                raise DataError(f"{where}: empty group for {e.path}")
            entries.append(e)
    if not entries:
        raise DataError(f"{path}: no rows")
    names = Counter(e.out_name() for e in entries)
    dup = [n for n, k in names.items() if k > 1]
    if dup:
        raise DataError(f"{path}: {dup[0]} listed {names[dup[0]]} times")
    return entries


def write_manifest(path: str | Path, entries: Iterable[Entry]) -> int:
    """Write a dataset manifest (sorted by label, group, path); returns the number of rows."""
    rows = sorted(entries, key=lambda e: (e.label, e.group, e.path))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        for e in rows:
            w.writerow([e.source, e.commit, e.path, e.sha1, e.label, e.group])
    return len(rows)


class RepoReader:
    """Reads file bytes at a commit from a git directory (bare mirror or .git), a clone's work tree, or a
    plain folder with the repository's files (no git: the files are read as they are, the SHA-1 check
    still guards them)."""

    def __init__(self, repo: str | Path):
        self.repo = Path(repo)
        if not self.repo.exists():
            raise DataError(f"{self.repo}: repository not found")
        self._git: list[str] | None = None
        if (self.repo / "HEAD").is_file() and (self.repo / "objects").is_dir():
            self._git = ["git", "--git-dir", str(self.repo)]
        elif (self.repo / ".git").exists():
            self._git = ["git", "-C", str(self.repo)]
        self._proc: subprocess.Popen | None = None
        self._commits: dict[str, bool] = {}

    @property
    def is_git(self) -> bool:
        return self._git is not None

    def __enter__(self) -> "RepoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.stdout.close()
            self._proc.wait()
            self._proc = None

    def has_commit(self, commit: str) -> bool:
        if self._git is None:
            return True
        if commit not in self._commits:
            r = subprocess.run(self._git + ["cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
            self._commits[commit] = r.returncode == 0
        return self._commits[commit]

    def read(self, commit: str, path: str) -> bytes | None:
        """The file's bytes at `commit`, or None when the path is not there."""
        if self._git is None:
            p = self.repo / path
            return p.read_bytes() if p.is_file() else None
        if self._proc is None:
            try:
                self._proc = subprocess.Popen(self._git + ["cat-file", "--batch"], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            except OSError as exc:
                raise DataError(f"cannot run git: {exc}") from None
        self._proc.stdin.write(f"{commit}:{path}\n".encode())
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode(errors="replace").split()
        if len(header) != 3:
            return None  # "<name> missing" / "ambiguous"
        if header[1] != "blob":
            self._proc.stdout.read(int(header[2]) + 1)
            return None
        size = int(header[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # trailing newline
        if len(data) != size:
            raise DataError(f"{self.repo}: git stopped while reading {path}")
        return data


def _blobs(entries: list[Entry], repo: str | Path) -> Iterator[tuple[Entry, bytes]]:
    with RepoReader(repo) as reader:
        for e in entries:
            if not reader.has_commit(e.commit):
                raise DataError(f"{repo}: commit {e.commit} of {e.source} not found "
                                f"(clone https://github.com/{e.source} and 'git checkout {e.commit}')")
            data = reader.read(e.commit, e.path)
            if data is None:
                raise DataError(f"{e.path}: missing in {repo} at {e.commit[:12]}")
            if data.startswith(b"version https://git-lfs.github.com/spec/"):
                raise DataError(f"{e.path}: is a Git LFS pointer in {repo}, not the image (run 'git lfs pull')")
            got = sha1_bytes(data)
            if got != e.sha1:
                raise DataError(f"{e.path}: sha1 {got} does not match the manifest's {e.sha1}")
            yield e, data


def arrange(manifest: str | Path, repo: str | Path, out: str | Path, overwrite: bool = False) -> dict:
    """Arrange the manifest's files from `repo` into OUT/<label>/<file> + OUT/manifest.csv (bytes unchanged).

    OUT must not exist or be empty unless `overwrite`; the copy is built beside OUT and moved into place
    only when every file checked out, so a failure leaves no half-arranged folder. Returns a summary.
    """
    entries = read_manifest(manifest)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: not empty (pass --overwrite to replace it)")
    tmp = out.with_name(out.name + ".arranging")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        n_bytes = 0
        rows = []
        for e, data in _blobs(entries, repo):
            rel = f"{e.label}/{e.out_name()}"
            dest = tmp / rel
            dest.parent.mkdir(exist_ok=True)
            dest.write_bytes(data)
            n_bytes += len(data)
            rows.append([rel, "", e.label, e.group, "", e.source, e.commit, e.path, e.sha1])
        with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(OUT_COLUMNS)
            w.writerows(rows)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary(entries) | {"out": str(out), "bytes": n_bytes}


def summary(entries: list[Entry]) -> dict:
    """Images and groups per label, groups shared by both labels, sources."""
    images = Counter(e.label for e in entries)
    groups = {lab: len({e.group for e in entries if e.label == lab}) for lab in images}
    by_group: dict[str, set[str]] = {}
    for e in entries:
        by_group.setdefault(e.group, set()).add(e.label)
    mixed = sorted(g for g, labs in by_group.items() if len(labs) > 1)
    return {"images": dict(sorted(images.items())), "groups": dict(sorted(groups.items())),
            "mixed_label_groups": mixed, "sources": sorted({e.source for e in entries}), "total": len(entries)}


def manifest_from_tree(repo: str | Path, source: str, prefix: str, rule, commit: str = "HEAD") -> list[Entry]:
    """Entries for every file under `prefix` at `commit` of a git copy `repo` that `rule(path)` labels:
    rule returns (label, group) or None to skip. The commit is resolved to its 40-hex id, SHA-1s are taken
    from the bytes. Used by datasets/<name>/make_manifest.py."""
    reader = RepoReader(repo)
    if not reader.is_git:
        raise DataError(f"{repo}: not a git directory or clone")
    git = reader._git
    try:
        commit = subprocess.run(git + ["rev-parse", f"{commit}^{{commit}}"], check=True, capture_output=True,
                                text=True).stdout.strip()
        paths = subprocess.run(git + ["ls-tree", "-r", "--name-only", "-z", commit, "--", prefix], check=True,
                               capture_output=True, text=True).stdout.split("\0")
    except subprocess.CalledProcessError as exc:
        raise DataError(f"{repo}: git failed: {exc.stderr.strip()}") from None
    entries = []
    with reader:
        for path in filter(None, paths):
            labelled = rule(path)
            if labelled is None:
                continue
            data = reader.read(commit, path)
            if data is None:
                raise DataError(f"{path}: listed at {commit[:12]} but its blob is absent in {repo}")
            entries.append(Entry(source, commit, path, sha1_bytes(data), labelled[0], labelled[1]))
    return entries


def drop_identical(entries: Iterable[Entry]) -> list[Entry]:
    """Entries with byte-identical files (same sha1) listed once, the first by path kept, in path order.
    DataError when two copies disagree on label or group (the source contradicts itself)."""
    seen: dict[str, Entry] = {}
    unique = []
    for e in sorted(entries, key=lambda e: e.path):
        first = seen.setdefault(e.sha1, e)
        if first is e:
            unique.append(e)
        elif (first.label, first.group) != (e.label, e.group):
            raise DataError(f"{e.path}: same bytes as {first.path} but another label/group")
    return unique
