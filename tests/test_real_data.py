"""mgfen-data arrange: real datasets from a manifest (source, commit, path, sha1, label, group) and a local
git copy of the source repository. A tiny repository is built here; no network."""

from __future__ import annotations

import csv
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from train.cli.mgfen_data import main as data_main
from train.data.folders import index_folder
from train.data.real_data import Entry, arrange, drop_identical, read_manifest, sha1_bytes, write_manifest
from train.errors import DataError

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]


def _image(seed: int, ext: str) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.fixture()
def repo(tmp_path):
    """A git work tree with 4 items x 2 shots (2 genuine items, 2 counterfeit) in nested folders; returns
    (work tree, commit, entries, {repo path: bytes})."""
    work = tmp_path / "src"
    files = {}
    entries = []
    for item in range(4):
        label = "genuine" if item < 2 else "counterfeit"
        for shot in range(2):
            ext = ".png" if shot == 0 else ".jpg"
            path = f"data/{'real' if item < 2 else 'fake'}/note {item}_{shot}{ext}"
            files[path] = _image(10 * item + shot, ext)
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_bytes(files[path])
    subprocess.run(GIT + ["init", "-q", str(work)], check=True)
    subprocess.run(GIT + ["-C", str(work), "add", "."], check=True)
    subprocess.run(GIT + ["-C", str(work), "commit", "-q", "-m", "images"], check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    for path, data in files.items():
        item = int(path.split("note ")[1].split("_")[0])
        entries.append(Entry("owner/name", commit, path, sha1_bytes(data), "genuine" if item < 2 else "counterfeit",
                             f"note{item}"))
    return work, commit, entries, files


def _check_arranged(out, files):
    rows = list(csv.DictReader(open(out / "manifest.csv", newline="")))
    assert len(rows) == len(files)
    for row in rows:
        data = (out / row["path"]).read_bytes()
        assert data == files[row["source_path"]]  # bytes unchanged, no re-encoding
        assert row["path"].startswith(row["label"] + "/")
        assert row["split"] == ""
        assert row["group"] == "note" + row["source_path"].split("note ")[1].split("_")[0]
    assert {r["label"] for r in rows} == {"genuine", "counterfeit"}
    return rows


@pytest.mark.parametrize("kind", ["worktree", "bare", "plain"])
def test_arrange_copies_bytes_labels_groups(tmp_path, repo, kind):
    work, commit, entries, files = repo
    manifest = tmp_path / "manifest.csv"
    assert write_manifest(manifest, entries) == 8
    src = work
    if kind == "bare":
        src = tmp_path / "mirror.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(src)], check=True)
    elif kind == "plain":
        src = tmp_path / "plain"
        shutil.copytree(work, src, ignore=shutil.ignore_patterns(".git"))
    out = tmp_path / "out"
    summary = arrange(manifest, src, out)
    assert summary["images"] == {"counterfeit": 4, "genuine": 4}
    assert summary["groups"] == {"counterfeit": 2, "genuine": 2}
    _check_arranged(out, files)
    # The project's loader takes it as is: a seeded group-aware split, every item whole in one split.
    index = index_folder(out, seed=0)
    assert index.classes == ("genuine", "counterfeit")
    split_of = {}
    for s in index.samples:
        assert split_of.setdefault(s.group, s.split) == s.split


def test_arrange_reads_the_manifest_commit_not_the_work_tree(tmp_path, repo):
    work, commit, entries, files = repo
    first = entries[0].path
    (work / first).write_bytes(b"changed later")
    subprocess.run(GIT + ["-C", str(work), "commit", "-q", "-am", "change"], check=True)
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, entries)
    arrange(manifest, work, tmp_path / "out")
    assert (tmp_path / "out" / entries[0].label / entries[0].out_name()).read_bytes() == files[first]


def test_sha1_mismatch_is_refused_and_leaves_nothing(tmp_path, repo):
    work, commit, entries, files = repo
    bad = [entries[0]] + [Entry(e.source, e.commit, e.path, "0" * 40, e.label, e.group) if i == 3 else e
                          for i, e in enumerate(entries[1:], start=1)]
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, bad)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"sha1 .* does not match") as err:
        arrange(manifest, work, out)
    assert entries[3].path in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() and not (tmp_path / "out.arranging").exists()


@pytest.mark.parametrize("case, pattern", [
    ("missing_repo", "repository not found"),
    ("missing_file", "missing in"),
    ("unknown_label", "unknown label 'fake'"),
    ("bad_commit", "not found"),
    ("no_column", "missing column"),
    ("out_not_empty", "not empty"),
])
def test_bad_input_one_line_error_nonzero_exit(tmp_path, repo, case, pattern):
    work, commit, entries, files = repo
    manifest = tmp_path / "manifest.csv"
    src, out = work, tmp_path / "out"
    if case == "missing_repo":
        src = tmp_path / "nowhere"
    if case == "missing_file":
        e = entries[0]
        entries = [Entry(e.source, e.commit, "data/real/gone.png", e.sha1, e.label, e.group)] + entries[1:]
    if case == "bad_commit":
        entries = [Entry(e.source, "f" * 40, e.path, e.sha1, e.label, e.group) for e in entries]
    write_manifest(manifest, entries)
    if case == "unknown_label":
        text = manifest.read_text().replace(",genuine,", ",fake,", 1)
        manifest.write_text(text)
    if case == "no_column":
        manifest.write_text(manifest.read_text().replace("sha1", "hash", 1))
    if case == "out_not_empty":
        out.mkdir()
        (out / "x").write_text("x")
    result = CliRunner().invoke(data_main, ["arrange", "--manifest", str(manifest), "--repo", str(src),
                                            "--out", str(out)])
    assert result.exit_code != 0
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    assert pattern in lines[0]


def test_cli_arranges_and_reports(tmp_path, repo):
    work, commit, entries, files = repo
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, entries)
    out = tmp_path / "out"
    result = CliRunner().invoke(data_main, ["arrange", "--manifest", str(manifest), "--repo", str(work),
                                            "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "arranged 8 files" in result.output and "genuine 4 images / 2 groups" in result.output
    _check_arranged(out, files)
    assert len(read_manifest(manifest)) == 8


def test_manifest_from_tree_labels_groups_and_hashes(tmp_path, repo):
    from train.data.real_data import manifest_from_tree

    work, commit, entries, files = repo

    def rule(path):
        item = path.split("note ")[1].split("_")[0]
        return ("genuine" if "/real/" in path else "counterfeit"), f"note{item}"

    made = manifest_from_tree(work, "owner/name", "data/", rule)
    assert sorted(made, key=lambda e: e.path) == sorted(entries, key=lambda e: e.path)
    assert all(e.commit == commit for e in made)
    with pytest.raises(DataError, match="not a git"):
        manifest_from_tree(tmp_path, "owner/name", "data/", rule)


def test_drop_identical_keeps_the_first_copy_and_refuses_contradictions():
    c = "0" * 40
    a, b, d = sha1_bytes(b"a"), sha1_bytes(b"b"), sha1_bytes(b"d")
    rows = [Entry("o/r", c, "x/2.png", a, "genuine", "g1"), Entry("o/r", c, "x/1.png", a, "genuine", "g1"),
            Entry("o/r", c, "x/3.png", b, "counterfeit", "g2"), Entry("o/r", c, "x/0.png", d, "genuine", "g3")]
    assert [e.path for e in drop_identical(rows)] == ["x/0.png", "x/1.png", "x/3.png"]
    clash = rows + [Entry("o/r", c, "x/9.png", b, "genuine", "g2")]
    with pytest.raises(DataError, match="x/9.png: same bytes as x/3.png"):
        drop_identical(clash)


def test_out_of_domain_set_arranges_and_is_not_trainable(tmp_path, repo):
    """A manifest may label a whole set `unknown` (images for refusal tests, e.g. datasets/textures_dtd10):
    it arranges into OUT/unknown/, and indexing it for training fails in one line (one class only)."""
    work, commit, entries, files = repo
    manifest = tmp_path / "manifest.csv"
    write_manifest(manifest, [Entry(e.source, e.commit, e.path, e.sha1, "unknown", e.group) for e in entries])
    summary = arrange(manifest, work, tmp_path / "out")
    assert summary["images"] == {"unknown": len(entries)}
    rows = list(csv.DictReader(open(tmp_path / "out" / "manifest.csv", newline="")))
    assert {r["path"].split("/")[0] for r in rows} == {"unknown"}
    with pytest.raises(DataError, match="only one class"):
        index_folder(tmp_path / "out")


def test_committed_manifests_read():
    """Every datasets/*/manifest.csv in the repository passes read_manifest's checks."""
    from pathlib import Path

    manifests = sorted((Path(__file__).resolve().parents[1] / "datasets").glob("*/manifest.csv"))
    assert len(manifests) >= 4
    for m in manifests:
        assert read_manifest(m)
