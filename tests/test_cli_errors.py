"""The one error boundary (edge_runtime/cli/cli_errors.py) on every console script: mgfen-data, mgfen-train,
mgfen-eval, mgfen-export, mgfen-scan, mgfen-bench, mgfen-keygen.

For each: an unwritable output (a path under a regular file, which fails even as root), a missing input,
a corrupt input and a bad option value. A failure is exit 1 with ONE line `Error: ...` naming the path;
a usage error is click's own (exit 2, its usage lines, then one `Error:` line naming the option). Either
way result.exception is a SystemExit: an unhandled exception would be the exception itself.

Tiny data only: the fake bundle (tests/fake_bundle.py), a few 128 px images; nothing is trained. The
checks of an output run before the command starts, so no model is built for them.
"""

from __future__ import annotations

import csv
import errno
import json
import re
from pathlib import Path

import click
import cv2
import pytest
from click.testing import CliRunner

from edge_runtime.bundle.manifest import BUNDLE_FORMAT
from edge_runtime.cli.bench_cli import main as bench_main
from edge_runtime.cli.cli_errors import error_boundary, output_problem
from edge_runtime.cli.keygen_cli import main as keygen_main
from edge_runtime.cli.scan_cli import main as scan_main
from edge_runtime.errors import BundleError, MgfenError
from edge_runtime.names import MANIFEST_FILE
from fake_bundle import make_fake_bundle, make_image

TINY_TRAIN = ["--backbone", "resnet18", "--pretrained", "none", "--frame-size", "128", "--global-size", "64",
              "--crop-size", "32", "--batch", "4", "--threads", "1", "--epochs", "1"]


def invoke(cli, args: list) -> click.testing.Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def failure(result, path: Path | str, bars: bool = False) -> str:
    """Exit 1, one line `Error: ...` and nothing else, naming `path`; returns the line. `bars`: progress
    bars (mgfen-train's, on stderr) may come first."""
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}: {result.output}"
    assert result.exit_code == 1, result.output
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", result.output) if ln.strip()]
    if bars:
        lines = [ln for ln in lines if not re.search(r"\d+/\d+ \[", ln)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert str(path) in lines[0], result.output
    return lines[0]


def usage(result, option: str) -> str:
    """Exit 2 (click's usage error): exactly one `Error:` line, the last, naming `option`."""
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}: {result.output}"
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and option in errors[0], result.output
    return errors[0]


def blocked(tmp_path: Path, name: str = "out") -> Path:
    """A path under a regular file: unwritable for every user, root included."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    return blocker / name


def write_images(folder: Path, n: int = 2, broken: str | None = None) -> Path:
    """folder/{genuine,counterfeit}/*.png (red / blue 128 px frames); `broken`: one more, not a PNG."""
    for label, colour in (("genuine", "red"), ("counterfeit", "blue")):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            assert cv2.imwrite(str(folder / label / f"{label}{i}_0.png"), make_image(colour, 128, 128, seed=i))
    if broken is not None:
        (folder / "genuine" / broken).write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_fake_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    assert cv2.imwrite(str(folder / "a_red.png"), make_image("red", seed=1))
    return folder


# -------------------------------------------------------------------------------- the boundary itself


def _toy(exc: BaseException) -> click.Command:
    @click.command()
    @error_boundary
    def toy() -> None:
        raise exc

    return toy


def test_os_error_is_one_line_with_the_path_and_a_hint(tmp_path):
    path = tmp_path / "file.txt" / "x.json"
    line = failure(invoke(_toy(NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path))), []), path)
    assert line == f"Error: {path}: not a directory (a part of the path is a file, not a folder)"


def test_known_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    assert failure(invoke(_toy(BundleError(f"{tmp_path}: bundle folder\nnot found")), []), tmp_path).endswith(
        "bundle folder not found")
    result = invoke(_toy(BundleError("x")), ["--debug"])
    assert isinstance(result.exception, BundleError)  # re-raised: CliRunner keeps it, python prints it


def test_a_bug_is_not_hidden_and_ctrl_c_exits_130():
    assert isinstance(invoke(_toy(KeyError("bug")), []).exception, KeyError)
    result = invoke(_toy(KeyboardInterrupt()), [])
    assert result.exit_code == 130 and result.output.strip() == "interrupted"


def test_click_errors_pass_through_untouched():
    usage(invoke(_toy(click.UsageError("--a needs --b")), []), "--a needs --b")


def test_output_problem(tmp_path):
    assert output_problem(tmp_path / "new" / "deeper" / "x.json") is None  # the writer creates folders
    assert output_problem(tmp_path, folder=True) is None
    assert "it is a folder, not a file" in output_problem(tmp_path)
    assert f"{tmp_path / 'file.txt'} is a file, not a folder" in output_problem(blocked(tmp_path) / "x")


# ------------------------------------------------------------------------------------------ mgfen-scan


def test_scan_unwritable_summary_is_refused_before_the_scan(tmp_path, bundle_dir, frames):
    target, events = blocked(tmp_path, "s.json"), tmp_path / "events.jsonl"
    line = failure(invoke(scan_main, ["run", "--bundle", bundle_dir, "--source", f"file://{frames}", "--out", events,
                                      "--summary-json", target]), target)
    assert "--summary-json" in line and not events.exists(), "refused before anything ran"
    failure(invoke(scan_main, ["run", "--bundle", bundle_dir, "--source", f"file://{frames}",
                               "--audit", blocked(tmp_path, "a.db")]), blocked(tmp_path, "a.db"))


def test_scan_summary_in_a_missing_folder_is_written(tmp_path, bundle_dir, frames):
    target = tmp_path / "missing" / "s.json"
    result = invoke(scan_main, ["run", "--bundle", bundle_dir, "--source", f"file://{frames}", "--min-frames", "1",
                                "--out", tmp_path / "events.jsonl", "--summary-json", target])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert json.loads(target.read_text())["frames"] == 1


def test_scan_missing_and_corrupt_bundle(tmp_path, bundle_dir, frames):
    missing = tmp_path / "nope"
    assert "not found" in failure(invoke(scan_main, ["run", "--bundle", missing, "--source", f"file://{frames}"]),
                                  missing)
    (tmp_path / "broken").mkdir()
    manifest = tmp_path / "broken" / MANIFEST_FILE
    manifest.write_text("{not json")
    assert "not valid JSON" in failure(
        invoke(scan_main, ["run", "--bundle", tmp_path / "broken", "--source", f"file://{frames}"]), manifest)


def test_scan_refuses_a_newer_bundle_format_in_one_line(tmp_path, frames):
    bundle = make_fake_bundle(tmp_path / "b")
    manifest = bundle / MANIFEST_FILE
    data = json.loads(manifest.read_text())
    data["bundle_format"] = BUNDLE_FORMAT + 1
    manifest.write_text(json.dumps(data))
    line = failure(invoke(scan_main, ["run", "--bundle", bundle, "--source", f"file://{frames}"]), manifest)
    assert line.endswith(f"bundle format {BUNDLE_FORMAT + 1} is newer than this toolkit reads ({BUNDLE_FORMAT}); "
                         f"upgrade mgfen")


def test_scan_bad_option_and_debug(tmp_path, bundle_dir, frames):
    usage(invoke(scan_main, ["run", "--bundle", bundle_dir, "--source", f"file://{frames}", "--session-frames", "0"]),
          "--session-frames")
    result = invoke(scan_main, ["--debug", "run", "--bundle", tmp_path / "nope", "--source", f"file://{frames}"])
    assert isinstance(result.exception, BundleError)


def test_scan_audit_export(tmp_path):
    missing = tmp_path / "audit.db"
    failure(invoke(scan_main, ["audit", "export", "--db", missing, "--csv", tmp_path / "v.csv"]), missing)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not sqlite" * 100)
    failure(invoke(scan_main, ["audit", "export", "--db", corrupt, "--csv", tmp_path / "v.csv"]), corrupt)
    target = blocked(tmp_path, "v.csv")
    failure(invoke(scan_main, ["audit", "export", "--db", missing, "--csv", target]), target)
    usage(invoke(scan_main, ["audit", "export", "--db", missing]), "--csv")


# ----------------------------------------------------------------------------------------- mgfen-bench


def test_bench_unwritable_json_is_refused_before_benchmarking(tmp_path, bundle_dir):
    target = blocked(tmp_path, "b.json")
    assert "--json" in failure(invoke(bench_main, ["--bundle", bundle_dir, "--json", target]), target)


def test_bench_json_in_a_missing_folder_is_written(tmp_path, bundle_dir):
    target = tmp_path / "missing" / "dir" / "b.json"
    result = invoke(bench_main, ["--bundle", bundle_dir, "--backend", "ort", "--precision", "fp32", "--frames", "2",
                                 "--warmup", "0", "--json", target])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert json.loads(target.read_text())["rows"][0]["status"] == "ran"


def test_bench_missing_corrupt_and_bad_option(tmp_path, bundle_dir):
    failure(invoke(bench_main, ["--bundle", tmp_path / "nope"]), tmp_path / "nope")
    altered = make_fake_bundle(tmp_path / "altered")
    graph = next(altered.glob("*.onnx"))
    graph.write_bytes(graph.read_bytes() + b"x")
    assert "sha256" in failure(invoke(bench_main, ["--bundle", altered]), graph.name)
    usage(invoke(bench_main, ["--bundle", bundle_dir, "--frames", "0"]), "--frames")


# ---------------------------------------------------------------------------------------- mgfen-keygen


def test_keygen(tmp_path):
    blocked_prefix = blocked(tmp_path, "team")
    failure(invoke(keygen_main, ["--out", blocked_prefix]), blocked_prefix.parent)
    missing = tmp_path / "missing" / "team"
    failure(invoke(keygen_main, ["--out", missing]), missing.parent)
    assert invoke(keygen_main, ["--out", tmp_path / "team"]).exit_code == 0
    (tmp_path / "team.pub").write_text("damaged")
    assert "already exists" in failure(invoke(keygen_main, ["--out", tmp_path / "team"]), tmp_path / "team")
    usage(invoke(keygen_main, ["--force"]), "--out")


# ------------------------------------------------------------------------------------------ mgfen-data


def _dataset(root: Path, columns: tuple[str, ...] = ("path", "split", "label")) -> Path:
    write_images(root, n=1)
    rows = [{"path": p.relative_to(root).as_posix(), "split": "test", "label": p.parent.name}
            for p in sorted(root.rglob("*.png"))]
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_data_show(tmp_path):
    from train.cli.mgfen_data import main as data_main

    root = _dataset(tmp_path / "d")
    assert invoke(data_main, ["show", root, "--out", tmp_path / "new" / "sheet.png"]).exit_code == 0
    target = blocked(tmp_path, "sheet.png")
    failure(invoke(data_main, ["show", root, "--out", target]), target)
    failure(invoke(data_main, ["show", tmp_path / "nope", "--out", tmp_path / "s.png"]), tmp_path / "nope")
    no_label = _dataset(tmp_path / "no_label", columns=("path", "split"))
    line = failure(invoke(data_main, ["show", no_label, "--out", tmp_path / "s.png"]), no_label / "manifest.csv")
    assert "label" in line
    (root / "regions.json").write_text("{corrupt")
    failure(invoke(data_main, ["show", root, "--out", tmp_path / "s.png"]), root / "regions.json")
    usage(invoke(data_main, ["show", root, "--out", tmp_path / "s.png", "--pairs", "0"]), "--pairs")
    result = invoke(data_main, ["--debug", "show", tmp_path / "nope", "--out", tmp_path / "s.png"])
    assert isinstance(result.exception, MgfenError)


def test_data_synth_output_and_option(tmp_path):
    from train.cli.mgfen_data import main as data_main

    target = blocked(tmp_path)
    failure(invoke(data_main, ["synth", "--out", target, "--n", "20", "--size", "128"]), target)
    usage(invoke(data_main, ["synth", "--out", tmp_path / "s", "--workers", "0"]), "--workers")


# ----------------------------------------------------------------------------------------- mgfen-train


def test_train_output_and_options_are_checked_before_training(tmp_path):
    from train.cli.mgfen_train import main as train_main

    data = write_images(tmp_path / "d")
    target = blocked(tmp_path, "run")
    assert "--out" in failure(invoke(train_main, ["--data", data, "--out", target, *TINY_TRAIN]), target)
    usage(invoke(train_main, ["--data", data, "--out", tmp_path / "r", "--workers", "-1", *TINY_TRAIN]), "--workers")
    usage(invoke(train_main, ["--data", data, "--out", tmp_path / "r", "--threads", "0"]), "--threads")


def test_train_missing_and_corrupt_data(tmp_path):
    from train.cli.mgfen_train import main as train_main

    failure(invoke(train_main, ["--data", tmp_path / "nope", "--out", tmp_path / "r", *TINY_TRAIN]), tmp_path / "nope")
    data = write_images(tmp_path / "d", n=4, broken="broken_0.png")
    failure(invoke(train_main, ["--data", data, "--out", tmp_path / "r", *TINY_TRAIN]), "broken_0.png", bars=True)


# ------------------------------------------------------------------------------------------ mgfen-eval


def test_eval(tmp_path):
    from train.cli.mgfen_eval import main as eval_main

    data = write_images(tmp_path / "d")
    not_ckpt = tmp_path / "notes.pt"
    not_ckpt.write_text("not a checkpoint")
    target = blocked(tmp_path, "eval")
    failure(invoke(eval_main, ["--ckpt", not_ckpt, "--data", data, "--out", target]), target)
    failure(invoke(eval_main, ["--ckpt", tmp_path / "missing.pt", "--data", data]), tmp_path / "missing.pt")
    failure(invoke(eval_main, ["--ckpt", not_ckpt, "--data", data]), not_ckpt)
    usage(invoke(eval_main, ["--ckpt", not_ckpt, "--data", data, "--batch", "0"]), "--batch")


# ---------------------------------------------------------------------------------------- mgfen-export


def test_export(tmp_path):
    from export.cli import main as export_main

    not_ckpt = tmp_path / "notes.pt"
    not_ckpt.write_text("not a checkpoint")
    target = blocked(tmp_path, "bundle")
    assert "cannot write" in failure(invoke(export_main, [not_ckpt, "--out", target]), target)
    failure(invoke(export_main, [tmp_path / "missing.pt", "--out", tmp_path / "o"]), tmp_path / "missing.pt")
    failure(invoke(export_main, [not_ckpt, "--out", tmp_path / "o"]), not_ckpt)
    usage(invoke(export_main, [not_ckpt, "--out", tmp_path / "o", "--calib-n", "0"]), "--calib-n")
