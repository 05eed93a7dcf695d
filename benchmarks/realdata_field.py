"""Field benchmark on the real datasets: what an inspector's scanner answers once the model is exported.

For every dataset (arranged with `mgfen-data arrange`, see datasets/) and split seed s, the MGFEN run that
benchmarks/realdata.py trains (RUNS/<dataset>/split<s>/mgfen, edge preset defaults; trained here when absent):

1. export   mgfen-export best.pt --int8 --calib TRAIN --val VAL, the default gate (and FP32 fallback search);
            --force only so that a failing bundle is kept for the numbers; the manifest's gate status is reported
2. INT8     the export gate's comparison (calibration.verdict_gate.run_gate) on the TEST split, both flavours:
            verdicts equal FP32's (genuine / counterfeit / uncertain at the bundle's thresholds), accuracy drop
3. scanner  mgfen-scan run on the test split with --precision fp32 and with the default (auto) precision:
            accuracy with uncertain, unknown and retakes counted wrong, and coverage
4. refusal  mgfen-scan (auto precision) on out-of-domain frames: the test images of every other dataset, each
            --ood folder (datasets/textures_dtd10), blank frames (flat grey levels, a black lens cap) and
            defocused copies of the dataset's own test images; refused = `unknown` or sent for a retake. Beside
            it the in-domain false refusal: test images answered `unknown`.

    python benchmarks/realdata_field.py --data runs/real/signatures_sigcomp2011 --data runs/real/sneakers_aj1 \
        --data runs/real/signatures_bhsig260_bengali --per-group 2,0,2 --ood runs/real/textures_dtd10 \
        --splits 1 --out runs/field

Folders of the split are symlink trees under OUT/<dataset>/split<s>/; bundles and event files stay there.
Writes OUT/field.json and OUT/field.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_flags  # noqa: E402
from realdata import parse_sets, subsample, train_and_score  # noqa: E402

from train.data.folders import index_folder  # noqa: E402
from train.evaluate.ood import wilson  # noqa: E402

BLANK_LEVELS = (0, 8, 64, 128, 192, 255)  # flat frames: a lens cap (0), dark, mid and bright grey, white
BLUR_SIGMA = 12.0  # px at the photo's own size: a frame taken far out of focus
OTHER_PER_DATASET = 60  # test images taken from each other dataset as out-of-domain frames
GATES = ("", "_nogate")  # each scan with the quality gate on (mgfen-scan's default) and with --no-gate


def link_split(data: Path, index, split: str, dst: Path) -> Path:
    """dst/<label>/<file> symlinks to the images of `split` (file = the sample path with '/' -> '__').
    Reused when it exists."""
    if dst.is_dir():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    for s in index.split(split):
        link = tmp / index.classes[s.label] / s.path.replace("/", "__")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((data / s.path).resolve())
    tmp.replace(dst)
    return dst


def blank_frames(dst: Path, size: tuple[int, int] = (480, 640)) -> Path:
    """PNG frames of one flat grey level each (BLANK_LEVELS). Reused when it exists."""
    import cv2

    if dst.is_dir():
        return dst
    dst.mkdir(parents=True)
    for level in BLANK_LEVELS:
        cv2.imwrite(str(dst / f"flat_{level:03d}.png"), np.full((*size, 3), level, np.uint8))
    return dst


def defocused(test_dir: Path, dst: Path, sigma: float = BLUR_SIGMA) -> Path:
    """Gaussian-blurred copies (sigma px) of every image under test_dir. Reused when it exists."""
    import cv2

    if dst.is_dir():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for path in sorted(test_dir.rglob("*")):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if img is not None:
            cv2.imwrite(str(tmp / (path.stem + ".png")), cv2.GaussianBlur(img, (0, 0), sigma))
    tmp.replace(dst)
    return dst


def pick_images(test_dir: Path, n: int, dst: Path) -> Path:
    """dst/ with symlinks to at most n images of test_dir (evenly spaced over the sorted list)."""
    if dst.is_dir():
        return dst
    paths = sorted(p for p in test_dir.rglob("*") if p.is_file() or p.is_symlink())
    if len(paths) > n:
        paths = [paths[(i * len(paths)) // n] for i in range(n)]
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for p in paths:
        (tmp / p.name).symlink_to(p.resolve())
    tmp.replace(dst)
    return dst


def export_int8(ckpt: Path, bundle: Path, train_dir: Path, val_dir: Path) -> dict:
    """The INT8 bundle (cached): the export report, gate and wall seconds."""
    report_path = bundle / "report.json"
    if report_path.is_file():
        return json.loads(report_path.read_text())
    from export.bundle import ExportConfig, export_bundle

    t0 = time.perf_counter()
    report = export_bundle(ckpt, bundle, ExportConfig(int8=True, calib=train_dir, val=val_dir, force=True))
    report["bench_export_seconds"] = round(time.perf_counter() - t0, 1)
    report_path.write_text(json.dumps(report, indent=1, default=str))
    return report


def test_gate(bundle: Path, test_dir: Path) -> tuple[dict, dict | None]:
    """calibration.verdict_gate.run_gate on the test split, judged as the export judged val (the bundle's
    thresholds and novelty table): ({flavour: numbers} for each INT8 flavour, the same numbers of FP32
    against itself under the gate's pixel noise: its repeatability, for scale)."""
    from calibration.accuracy import bundle_pipelines
    from calibration.verdict_gate import GateCriteria, run_gate
    from edge_runtime import names
    from edge_runtime.novelty import load_table

    m, _, pipes = bundle_pipelines(bundle)
    table = m.file_for(names.NOVELTY)
    fp32 = pipes.pop("fp32")
    result = run_gate(fp32, pipes, test_dir, m.preprocess, tuple(m.classes), m.thresholds, m.positive_index,
                      GateCriteria(), force=True, novelty=load_table(bundle / table) if table else None)
    keep = ("n", "agreement", "accuracy", "drop_points", "abs_dp", "status", "novelty", "noise")
    short = lambda numbers: {k: v for k, v in numbers.items() if k in keep}  # noqa: E731
    repeat = result.repeatability
    return ({f: short(n) for f, n in result.record["flavours"].items()}, None if repeat is None else short(repeat))


def scan(bundle: Path, folder: Path, events: Path, precision: str | None, labels: bool, gate: str = "") -> dict:
    """mgfen-scan run over `folder` (cached in `events`; gate "_nogate" adds --no-gate); returns {"answers":
    {item: answer}, "summary"}, answer = a verdict or "retake" (the frame never passed the quality gate)."""
    summary_path = events.with_suffix(".summary.json")
    if not summary_path.is_file():
        events.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "edge_runtime.cli.scan_cli", "run", "--bundle", str(bundle), "--source",
               f"file://{folder.resolve()}", "--out", str(events), "--summary-json", str(summary_path),
               "--no-prefetch", "--session-frames", "1", "--min-frames", "1"]
        cmd += ["--precision", precision] if precision else []
        cmd += ["--labels", str(folder)] if labels else []
        cmd += ["--no-gate"] if gate else []
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if run.returncode != 0:
            raise SystemExit(f"mgfen-scan failed on {folder}: {run.stderr.strip().splitlines()[-1:]}")
    answers: dict[str, str] = {}  # by file name (the link names under a folder are unique)
    for line in events.read_text().splitlines():
        e = json.loads(line)
        if e["type"] == "verdict" and e.get("item"):
            answers[Path(e["item"]).name] = e["verdict"]
        elif e["type"] == "retake" and e.get("item"):
            answers.setdefault(Path(e["item"]).name, "retake")
    return {"answers": answers, "summary": json.loads(summary_path.read_text())}


def refusal(answers: dict[str, str]) -> dict:
    """Share of items answered `unknown` or sent for a retake, with its 95% Wilson interval."""
    n = len(answers)
    unknown = sum(a == "unknown" for a in answers.values())
    retake = sum(a == "retake" for a in answers.values())
    lo, hi = wilson(unknown + retake, n)
    return {"n": n, "unknown": unknown, "retake": retake, "rate": (unknown + retake) / n if n else None,
            "ci95": [lo, hi], "confident": sum(a in ("genuine", "counterfeit") for a in answers.values())}


def scan_accuracy(answers: dict[str, str], test_dir: Path) -> dict:
    """Accuracy with uncertain / unknown / retake counted wrong, coverage, and the answer counts."""
    truth = {p.name: p.parent.name for p in test_dir.rglob("*") if p.is_symlink() or p.is_file()}
    n = len(truth)
    got = {item: answers.get(item, "missing") for item in truth}
    correct = sum(got[i] == truth[i] for i in truth)
    decided = sum(a in ("genuine", "counterfeit") for a in got.values())
    counts = {a: sum(v == a for v in got.values()) for a in ("genuine", "counterfeit", "uncertain", "unknown", "retake", "missing")}
    return {"n": n, "accuracy": correct / n if n else None, "coverage": decided / n if n else None, "answers": counts}


def run_split(name: str, data: Path, seed: int, runs: Path, out: Path, others: dict[str, Path], ood: list[Path],
              overrides: dict, log) -> dict:
    """Steps 1-4 for one dataset and split (`overrides`: TrainConfig fields, smoke runs only); returns the
    split's result dict."""
    run = runs / name / f"split{seed}" / "mgfen"
    t0 = time.perf_counter()
    train_and_score(data, run, seed, overrides, 2)
    log(f"{name} split {seed}: model ready ({time.perf_counter() - t0:.0f} s)")
    index = index_folder(data, seed=seed)
    work = out / name / f"split{seed}"
    dirs = {s: link_split(data, index, s, work / s) for s in ("train", "val", "test")}
    bundle = work / "bundle"
    report = export_int8(run / "best.pt", bundle, dirs["train"], dirs["val"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    gate_val = manifest.get("int8_gate", {}).get("flavours", {})
    log(f"  export: gate on val " + ", ".join(f"{f} {g.get('status')}" for f, g in gate_val.items()))
    result = {"dataset": name, "seed": seed, "images": {s: len(index.split(s)) for s in dirs},
              "thresholds": manifest.get("thresholds"), "export": {
                  "gate_val": {f: {k: g.get(k) for k in ("status", "agreement", "drop_points", "n")} for f, g in gate_val.items()},
                  "search": (manifest.get("calibration") or {}).get("flavours", {}),
                  "seconds": report.get("bench_export_seconds")}}
    result["int8_test"], result["fp32_repeatability_test"] = test_gate(bundle, dirs["test"])
    log("  INT8 on test: " + ", ".join(f"{f} verdicts {100 * g['agreement']:.1f}% equal, drop {g['drop_points']:+.2f}"
                                      for f, g in result["int8_test"].items()))
    if result["fp32_repeatability_test"]:
        log(f"  FP32 under pixel noise on test: verdicts {100 * result['fp32_repeatability_test']['agreement']:.1f}% equal")
    result["scan"], result["false_refusal"], result["refusal"] = {}, {}, {}
    ood_sets = {f"{other} test": pick_images(folder, OTHER_PER_DATASET, work / f"ood_{other}")
                for other, folder in others.items()}
    ood_sets.update({d.name: d for d in ood})
    ood_sets["blank frames"] = blank_frames(out / "blank")
    ood_sets["defocused own test"] = defocused(dirs["test"], work / "defocused")
    for gate in GATES:  # "": the quality gate on (the scanner's default); "_nogate": every frame classified
        for precision in ("fp32", None):
            s = scan(bundle, dirs["test"], work / f"scan_test_{precision or 'auto'}{gate}.jsonl", precision, True, gate)
            result["scan"][f"{precision or 'auto'}{gate}"] = {**scan_accuracy(s["answers"], dirs["test"]),
                                                              "backends": s["summary"].get("backends")}
        auto = s["answers"]  # the auto-precision scan just made
        result["false_refusal"][gate or "gate"] = {
            **refusal(auto), "unknown_rate": sum(a == "unknown" for a in auto.values()) / max(1, len(auto))}
        result["refusal"][gate or "gate"] = {
            k: refusal(scan(bundle, v, work / f"scan_ood_{k.replace(' ', '_')}{gate}.jsonl", None, False, gate)["answers"])
            for k, v in ood_sets.items()}
        log(f"  refused ({'quality gate on' if not gate else 'no quality gate'}): "
            + ", ".join(f"{k} {100 * r['rate']:.0f}% of {r['n']}" for k, r in result["refusal"][gate or "gate"].items())
            + f"; in-domain unknown {100 * result['false_refusal'][gate or 'gate']['unknown_rate']:.1f}%, "
              f"retake {result['false_refusal'][gate or 'gate']['retake']} of {result['false_refusal'][gate or 'gate']['n']}")
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(results: list[dict], header: str) -> str:
    """The tables of OUT/field.md."""
    lines = [header, "", "INT8 against FP32 on the test split (verdicts at the bundle's thresholds; the export gate "
             "ran on val):", "",
             "| dataset | split | test images | thresholds | gate on val (cpu / trt) | calibration, nodes kept FP32 | cpu: verdicts equal, "
             "accuracy drop | trt: verdicts equal, accuracy drop | FP32 under 1 grey level of noise: verdicts equal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        th = r["thresholds"] or {}
        gv = r["export"]["gate_val"]
        fb = "; ".join(f"{f}: {v.get('method')}, {len(v.get('kept_fp32', []))} nodes" + (" (7-bit)" if v.get("reduce_range") else "")
                       for f, v in sorted(r["export"]["search"].items())) or "-"
        agree = (r.get("fp32_repeatability_test") or {}).get("agreement")
        repeat = "-" if agree is None else f"{_pct(agree)}%"
        cells = [f"{_pct(r['int8_test'][f]['agreement'])}%, {r['int8_test'][f]['drop_points']:+.2f} pts"
                 if f in r["int8_test"] else "-" for f in ("cpu", "trt")]
        lines.append(f"| {r['dataset']} | {r['seed']} | {r['images']['test']} | {th.get('genuine_at', 0):.3g} / "
                     f"{th.get('counterfeit_at', 0):.3g} | {gv.get('cpu', {}).get('status')} / {gv.get('trt', {}).get('status')} "
                     f"| {fb} | {cells[0]} | {cells[1]} | {repeat} |")
    lines += ["", "mgfen-scan on the test split, accuracy % (coverage %); uncertain, unknown and retakes count as "
              "wrong; with the quality gate (the default) and with --no-gate:", "",
              "| dataset | split | FP32 | auto precision | FP32, --no-gate | auto, --no-gate | auto runs | "
              "test answered unknown (no gate) | test sent for a retake (gate) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        sc, fr = r["scan"], r["false_refusal"]
        cells = [f"{_pct(sc[k]['accuracy'])} ({_pct(sc[k]['coverage'])})" for k in ("fp32", "auto", "fp32_nogate", "auto_nogate")]
        runs = ", ".join(b.split(":")[-1] for b in sc["auto"].get("backends") or [])
        lines.append(f"| {r['dataset']} | {r['seed']} | " + " | ".join(cells) + f" | {runs} | "
                     f"{fr['_nogate']['unknown']} of {fr['_nogate']['n']} ({_pct(fr['_nogate']['unknown_rate'])}%) | "
                     f"{fr['gate']['retake']} of {fr['gate']['n']} |")
    sets = list(dict.fromkeys(k for r in results for k in r["refusal"]["gate"]))
    lines += ["", "Out-of-domain frames refused, % [95% CI] of n (confident genuine / counterfeit answers in brackets): "
              "with the quality gate, answered unknown or sent for a retake; with --no-gate, answered unknown (the "
              "novelty score alone):", "",
              "| dataset | split | gate | " + " | ".join(sets) + " |", "|---|---|---|" + "---|" * len(sets)]
    for r in results:
        for gate in ("gate", "_nogate"):
            cells = []
            for k in sets:
                x = r["refusal"][gate].get(k)
                cells.append("-" if x is None else f"{_pct(x['rate'])} [{_pct(x['ci95'][0])}, {_pct(x['ci95'][1])}] of "
                             f"{x['n']} ({x['confident']})")
            lines.append(f"| {r['dataset']} | {r['seed']} | {'on' if gate == 'gate' else 'off'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", required=True, type=Path, help="an arranged real dataset (repeatable)")
    ap.add_argument("--per-group", default="0", help="images kept per group, one value or one per --data (0: all)")
    ap.add_argument("--ood", action="append", default=[], type=Path, help="a folder of out-of-domain images (repeatable)")
    ap.add_argument("--splits", type=int, default=1)
    ap.add_argument("--runs", type=Path, default=Path("runs/realdata"), help="benchmarks/realdata.py's --out")
    ap.add_argument("--cache", type=Path, default=Path("runs/realdata/cache"), help="benchmarks/realdata.py's --cache")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="TrainConfig override (smoke runs only; realdata.py's runs must match)")
    args = ap.parse_args(argv)
    overrides = parse_sets(args.set)
    per = [int(x) for x in args.per_group.split(",")]
    if len(per) not in (1, len(args.data)):
        raise SystemExit(f"--per-group: one value or one per --data ({len(args.data)}), got {args.per_group!r}")
    per = per * len(args.data) if len(per) == 1 else per
    for d in [*args.data, *args.ood]:
        if not d.is_dir():
            raise SystemExit(f"{d}: no such folder (arrange it first, see datasets/)")
    preset = f"with {overrides}" if overrides else "defaults"
    header = (f"Field benchmark ({time.strftime('%Y-%m-%d')}; {cpu_flags()}); edge preset {preset}, "
              f"split seeds 0..{args.splits - 1}.")
    print(header, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = {d.name: subsample(d, args.cache / f"{d.name}_per_group{k}", k, seed=0) for d, k in zip(args.data, per)}
    results = []
    for seed in range(args.splits):
        tests = {n: link_split(d, index_folder(d, seed=seed), "test", args.out / n / f"split{seed}" / "test")
                 for n, d in datasets.items()}
        for name, data in datasets.items():
            others = {o: t for o, t in tests.items() if o != name}
            results.append(run_split(name, data, seed, args.runs, args.out, others, args.ood, overrides,
                                     lambda m: print(m, flush=True)))
            (args.out / "field.json").write_text(json.dumps({"header": header, "results": results}, indent=1))
    md = markdown(results, header)
    (args.out / "field.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
