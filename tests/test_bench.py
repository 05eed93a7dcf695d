"""mgfen-bench: rows per backend/precision, stage statistics, failure rows, CLI errors and JSON."""

import json

import cv2
import pytest
from click.testing import CliRunner

from edge_runtime.bench import BENCH_STAGES, BenchConfig, format_table, run_bench, stage_stats
from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.cli.bench_cli import main
from edge_runtime.inference.device_info import describe_device
from fake_bundle import make_fake_bundle, make_image


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_fake_bundle(tmp_path_factory.mktemp("b") / "bundle", int8=True)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    for cls, colour in (("genuine", "red"), ("counterfeit", "blue")):
        (root / cls).mkdir()
        for i in range(2):
            cv2.imwrite(str(root / cls / f"{i}.png"), make_image(colour, seed=i))
    return root


def test_stage_stats_orders_percentiles():
    s = stage_stats([float(v) for v in range(1, 101)])
    assert s["min"] == 1.0 and s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= 100.0
    assert s["mean"] == pytest.approx(50.5)


def test_rows_ran_and_failed(bundle_dir, labelled):
    bundle = load_bundle(bundle_dir)
    cfg = BenchConfig(frames=8, warmup=2, threads=1, source=f"file://{labelled}")
    labels = {str(p.resolve()): p.parent.name for p in labelled.rglob("*.png")}
    rows = run_bench(bundle, ["ort", "trt"], ["int8", "fp32"], cfg, labels)
    by = {(r.backend, r.precision): r for r in rows}
    assert len(rows) == 4
    for prec in ("int8", "fp32"):
        row = by[("ort", prec)]
        assert row.status == "ran" and row.frames == 8
        assert set(row.stats) == set(BENCH_STAGES)
        assert row.stats["total"]["p50"] >= row.stats["global"]["min"] > 0
        assert row.fps > 0 and row.peak_rss_mb > 0 and row.file_mb is not None
        # Red frames are genuine and blue counterfeit under the fake model: every frame is right.
        assert row.labelled == 8 and row.accuracy == 1.0
    assert by[("ort", "int8")].engines != by[("ort", "fp32")].engines  # the int8 files were opened
    assert by[("trt", "fp32")].status == "failed" and "TensorRT" in by[("trt", "fp32")].reason
    table = format_table(rows)
    assert "failed" in table and "ort      int8" in table


def test_prefetch_rows_keep_every_stage_and_accuracy(bundle_dir, labelled):
    cfg = BenchConfig(frames=8, warmup=2, threads=1, source=f"file://{labelled}", prefetch=True)
    labels = {str(p.resolve()): p.parent.name for p in labelled.rglob("*.png")}
    (row,) = run_bench(load_bundle(bundle_dir), ["ort"], ["int8"], cfg, labels)
    assert row.status == "ran" and set(row.stats) == set(BENCH_STAGES)
    assert row.stats["preprocess"]["min"] > 0 and row.stats["gate"]["min"] > 0  # measured in the worker
    assert row.labelled == 8 and row.accuracy == 1.0  # prepared frames stay matched to their files


def test_cli_json_and_errors(bundle_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "bench.json"
    res = runner.invoke(main, ["--bundle", str(bundle_dir), "--frames", "3", "--warmup", "1",
                               "--precision", "fp32", "--backend", "ort", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["rows"][0]["status"] == "ran" and doc["rows"][0]["precision"] == "fp32"
    assert doc["device"]["cpu_count"] >= 1 and "onnxruntime" in doc["device"]

    res = runner.invoke(main, ["--bundle", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "bundle folder not found" in res.output and isinstance(res.exception, SystemExit)
    res = runner.invoke(main, ["--bundle", str(bundle_dir), "--labels", str(tmp_path)])
    assert res.exit_code == 2 and "--labels needs --source" in res.output
    # Only failing rows (no TensorRT here) => non-zero exit, with the reason in the table.
    res = runner.invoke(main, ["--bundle", str(bundle_dir), "--backend", "trt", "--frames", "1"])
    assert res.exit_code == 1 and "TensorRT" in res.output


def test_describe_device_is_json_ready():
    info = describe_device(threads=2)
    json.dumps(info)
    assert info["threads"] == 2 and isinstance(info["gpus"], list) and isinstance(info["warnings"], list)
