"""INT8 that passes the verdict gate: keep the fewest nodes FP32, and try the other calibration methods.

Per INT8 flavour (both graphs together, since the gate judges the whole pipeline):
1. The configured calibration method (default entropy), everything quantised: gate (calibration.verdict_gate
   numbers, FP32 scored once). It passes: done, nothing kept FP32.
2. Rank the quantised nodes of both graphs by the quantisation noise they add (calibration.sensitivity: one
   run of each QDQ graph on SENSITIVITY_FRAMES calibration frames, not one quantisation per node).
3. Keep the worst k nodes FP32 for k = 1, 2, 4, ... up to `max_nodes`, re-quantising with the cached
   calibration ranges (calibration.quantize `ranges`) and gating each; at the first k that passes, bisect
   between it and the last failing k for the smallest passing prefix (assumes that keeping more nodes FP32
   does not make the verdicts worse, which holds for the prefixes of one ranking in practice but is not
   guaranteed: the search may then miss a smaller set, never accept a failing one).
4. Not rescued within `max_nodes`: the other methods (METHOD_ORDER), each with steps 1-3.
If nothing passes, the configured method's full INT8 files are kept and the flavour fails the gate as
without the search (or is kept failed-forced with --force).

The search stops after step 1 when the only changed verdicts are novelty swaps (`novelty_swaps_only`): frames
`unknown` in one precision only while every novelty score agrees within the gate's tolerance, with no
accuracy drop beyond the gate's. Those frames sit on the novelty threshold; on the demo (docs/results/demo.md)
18 trials over every method and 1-16 nodes FP32 (136 s) left the same two swaps. The flavour fails as it is.

Why the fallback comes before the other methods, measured on the demo edge checkpoint (2-core AVX2 CPU,
64 calibration and 64 val images, docs/results/demo.md): a fallback trial reuses the cached calibration
ranges, one quantisation of both graphs without calibration plus one gate pass, 6-9 s; another method
needs a new calibration of both graphs first (the slow part of quantize_static), 72 s with its gate at 64
calibration images and about 3x that at 206. The whole doubling search up to 32 nodes (7 trials, 51 s)
costs less than one method change (7 trials to 32 nodes then; the cap is 16 now). On that checkpoint with
8-bit weights the fallback did not help and percentile did: the error was U8S8 saturation
(calibration.cpu_features), which the simulated ranking does not see; with reduce_range the full INT8 passes
at once.

The nodes are picked on the val images the gate then judges, so the gate's pass is optimistic for unseen
images; the test split (mgfen-scan --labels, benchmarks/bench_int8.py) is the check on that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from calibration import CalibrationError
from calibration.accuracy import OrtPipeline, PipelineParams, flavour_pipeline, labelled_images
from calibration.quantize import METHODS, NEVER_QUANTISED, QuantizeResult, fixed_exclusions, quantize_graph
from calibration.sensitivity import NodeScore, rank_nodes
from calibration.verdict_gate import GateCriteria, Scores, compare_verdicts, judge, scores_of
from edge_runtime import names
from edge_runtime.novelty import NoveltyTable
from edge_runtime.preprocess import evenly_spaced, load_frame
from edge_runtime.roi import Thresholds

# The most nodes the search keeps FP32 per flavour (both graphs together). Beyond it INT8 stops paying:
# on the demo edge model 8 nodes FP32 cost 1.10x the full INT8 time and 32 nodes 1.50x (1.07x faster than
# FP32 left; benchmarks/bench_int8.py --keep, docs/results/demo.md).
MAX_FALLBACK_NODES = 16
SENSITIVITY_FRAMES = 8  # calibration frames the per-node noise is measured on
METHOD_ORDER = ("entropy", "percentile", "minmax")  # the configured method goes first, then these
GATE_KEYS = ("n", "agreement", "verdicts_changed", "accuracy", "fp32_accuracy", "drop_points", "abs_dp")


class GateProbe:
    """The verdict gate's numbers for candidate INT8 files, on the images run_gate will judge (the same
    choice: every labelled image of `folder`, at most `limit`, evenly spaced). Frames are prepared once and
    FP32 is scored once."""

    def __init__(self, fp32: OrtPipeline, params: PipelineParams, folder: Path, classes: tuple[str, ...],
                 thresholds: Thresholds, criteria: GateCriteria, limit: int | None = None,
                 novelty: NoveltyTable | None = None) -> None:
        items = evenly_spaced(labelled_images(folder, classes), limit)
        self.params, self.thresholds, self.criteria, self.novelty = params, thresholds, criteria, novelty
        self.frames = [load_frame(p, params.preprocess) for p, _ in items]
        self.labels = np.array([label for _, label in items], np.int64)
        self.reference = self.scores(fp32)

    def scores(self, pipe: OrtPipeline) -> Scores:
        """Scores of `pipe` on the probe's frames, novelty included with a table, so that the search judges
        `unknown` decisions exactly as the export's gate does (run_gate)."""
        return scores_of([pipe.run_frame(f) for f in self.frames], self.params.positive_index, self.novelty)

    def check(self, files: dict[str, Path], flavour: str) -> tuple[dict, str | None]:
        """(gate numbers, None when they pass or one line why not) of the global/parts files {graph: path};
        the "trt" flavour Q/DQ simulated, as the export's gate scores it."""
        return self.judge(flavour_pipeline(files["global"], files["parts"], self.params, flavour))

    def judge(self, pipe: OrtPipeline) -> tuple[dict, str | None]:
        """check() for a pipeline already built (anything with run_frame)."""
        numbers = compare_verdicts(self.reference, self.scores(pipe), self.labels, self.thresholds,
                                   self.params.positive_index,
                                   self.novelty.threshold if self.novelty is not None else None)
        return numbers, judge(numbers, self.criteria)


class Quantiser:
    """Quantises the prepared graphs of one export ({graph: prepared FP32 file}, see
    calibration.quantize.prepare_for_quantization) into `work`; each (graph, method) is calibrated once
    (its ranges cached there) and each distinct request is quantised once."""

    def __init__(self, prepared: dict[str, Path], readers: dict, work: Path) -> None:
        self.prepared, self.readers, self.work = prepared, readers, Path(work)
        self._done: dict[tuple, QuantizeResult] = {}

    def quantise(self, flavour: str, method: str, reduce_range: bool,
                 fallback: dict[str, tuple[str, ...]] | None = None) -> dict[str, QuantizeResult]:
        """{graph: result} with fallback[graph] (node names) kept FP32 on top of the fixed ones."""
        results = {}
        for graph, pre in self.prepared.items():
            nodes = tuple(sorted((fallback or {}).get(graph, ())))
            key = (graph, flavour, method, reduce_range, nodes)
            if key not in self._done:
                dest = self.work / f"{graph}.{flavour}.{method}.{len(self._done)}.onnx"
                self._done[key] = quantize_graph(pre, dest, self.readers[graph], flavour, method, prepared=True,
                                                 reduce_range=reduce_range, fallback=nodes,
                                                 ranges=self.work / f"{graph}.{method}.ranges.json")
            results[graph] = self._done[key]
        return results


def smallest_passing(trial: Callable[[int], bool], limit: int) -> int | None:
    """The smallest k in 1..limit with trial(k) true, trying 1, 2, 4, ... (then `limit`) and bisecting
    below the first k that passes; None when trial(limit) fails too. Each k is tried at most once."""
    low, k = 0, 1
    while True:
        k = min(k, limit)
        if trial(k):
            break
        if k == limit:
            return None
        low, k = k, 2 * k
    high = k
    while high - low > 1:
        mid = (low + high) // 2
        if trial(mid):
            high = mid
        else:
            low = mid
    return high


@dataclass
class FlavourResult:
    """What the search chose for one flavour: method, reduce_range, the chosen files {graph: result},
    the nodes kept FP32 (worst first), the gate numbers of the configured method's full INT8 (`before`)
    and of the chosen files (`after`), whether they pass (None: not gated), and every trial."""

    flavour: str
    method: str
    reduce_range: bool
    files: dict[str, QuantizeResult]
    kept: tuple[NodeScore, ...] = ()
    before: dict | None = None
    after: dict | None = None
    passed: bool | None = None
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None  # why the search stopped before trying fallbacks, or None

    def record(self) -> dict:
        """The manifest's calibration.flavours entry (report.json's adds the trials)."""
        def short(numbers: dict | None) -> dict | None:
            return None if numbers is None else {k: numbers[k] for k in GATE_KEYS if k in numbers}

        return {"method": self.method, "reduce_range": self.reduce_range,
                "kept_fp32": [{"graph": n.graph, "node": n.name, "op_type": n.op_type} for n in self.kept],
                "gate_before": short(self.before), "gate_after": short(self.after),
                "searched": len(self.trials) > 1, "trials": len(self.trials), "seconds": round(self.seconds, 1),
                "stopped": self.stopped}


def novelty_swaps_only(numbers: dict, criteria: GateCriteria) -> bool:
    """True when a failing gate's changed verdicts are all frames `unknown` in one precision only (a frame
    whose unknown decision differs always changes its verdict, so the counts are equal exactly then), the
    novelty scores agree within the tolerance (p99) and the accuracy drop is within the criteria."""
    nov = numbers.get("novelty") or {}
    changed = numbers["verdicts_changed"]
    return (changed > 0 and nov.get("unknown_changed") == changed and bool(nov.get("within_tolerance"))
            and numbers["drop_points"] <= criteria.max_drop_points)


def _line(flavour: str, method: str, kept: int, numbers: dict, why: str | None, seconds: float) -> str:
    return (f"INT8 {flavour} search: {method}, {kept} node(s) FP32: verdicts {100 * numbers['agreement']:.1f}% "
            f"equal FP32's, drop {numbers['drop_points']:+.2f} pts, |dP| max {numbers['abs_dp']['max']:.2g} "
            f"-> {'PASS' if why is None else 'FAIL'} ({seconds:.1f} s)")


def by_graph(nodes: tuple[NodeScore, ...]) -> dict[str, tuple[str, ...]]:
    """{graph: node names} of ranked nodes, for Quantiser.quantise's `fallback`."""
    groups: dict[str, tuple[str, ...]] = {}
    for node in nodes:
        groups[node.graph] = groups.get(node.graph, ()) + (node.name,)
    return groups


def candidates(quantiser: Quantiser, flavour: str, method: str, reduce_range: bool,
               feeds: dict[str, list[dict]]) -> tuple[NodeScore, ...]:
    """The nodes the search may keep FP32, worst first (calibration.sensitivity on the full INT8 graphs).
    Nodes the flavour keeps FP32 anyway (heatmap tail, TensorRT stem, Softmax) are left out: they may
    still read a Q/DQ pair a quantised neighbour wrote, but keeping them FP32 changes nothing."""
    full = quantiser.quantise(flavour, method, reduce_range)
    fixed = {g: set(fixed_exclusions(onnx.load(str(p), load_external_data=False), flavour))
             for g, p in quantiser.prepared.items()}
    ranking = rank_nodes({g: (quantiser.prepared[g], full[g].path, feeds[g]) for g in quantiser.prepared})
    return tuple(n for n in ranking if n.name not in fixed[n.graph] and n.op_type not in NEVER_QUANTISED)


def search_flavour(quantiser: Quantiser, probe: GateProbe | None, flavour: str, method: str, reduce_range: bool,
                   feeds: dict[str, list[dict]], max_nodes: int = MAX_FALLBACK_NODES,
                   log: Callable[[str], None] = lambda msg: None) -> FlavourResult:
    """The search of the module docstring for one flavour. Without a probe (no labelled val images, or
    the search turned off) the configured method's full INT8 files, ungated. feeds: {graph: a few
    calibration feeds} for the sensitivity ranking."""
    t_start = time.perf_counter()
    first = quantiser.quantise(flavour, method, reduce_range)
    result = FlavourResult(flavour, method, reduce_range, first)
    if probe is None:
        return result
    methods = [method] + [m for m in METHOD_ORDER if m != method and m in METHODS]

    def trial(m: str, kept: tuple[NodeScore, ...]) -> bool:
        t0 = time.perf_counter()
        files = quantiser.quantise(flavour, m, reduce_range, by_graph(kept))
        numbers, why = probe.check({g: r.path for g, r in files.items()}, flavour)
        seconds = time.perf_counter() - t0
        result.trials.append({"method": m, "kept_fp32": len(kept), "agreement": numbers["agreement"],
                              "drop_points": numbers["drop_points"], "passed": why is None,
                              "seconds": round(seconds, 2)})
        log(_line(flavour, m, len(kept), numbers, why, seconds))
        if result.before is None:
            result.before = numbers
        if why is None:
            result.method, result.files, result.kept, result.after, result.passed = m, files, kept, numbers, True
        return why is None

    for m in methods:
        try:
            if trial(m, ()):
                break
        except CalibrationError as exc:  # another method failing is no reason to fail the export
            if m == method:
                raise
            log(f"INT8 {flavour} search: {m} skipped ({exc})")
            continue
        if m == method and novelty_swaps_only(result.before, probe.criteria):
            n = result.before["verdicts_changed"]
            result.stopped = (f"the {n} changed verdict(s) are frames on the novelty threshold (unknown in one "
                              "precision only, scores within tolerance); no fallback tried")
            log(f"INT8 {flavour} search: stopped: {result.stopped}")
            break
        ranking = candidates(quantiser, flavour, m, reduce_range, feeds)
        limit = min(max_nodes, len(ranking))
        if limit and smallest_passing(lambda k: trial(m, ranking[:k]), limit) is not None:
            break
    if result.passed is None:  # nothing passed: the configured method's full INT8, as without the search
        result.passed, result.after = False, result.before
    result.seconds = time.perf_counter() - t_start
    return result


def sensitivity_feeds(readers: dict, frames: int = SENSITIVITY_FRAMES) -> dict[str, list[dict]]:
    """The first `frames` feeds of each graph's calibration reader ({graph: reader with get_next/rewind})."""
    feeds: dict[str, list[dict]] = {}
    for graph, reader in readers.items():
        reader.rewind()
        feeds[graph] = []
        while len(feeds[graph]) < frames:
            feed = reader.get_next()
            if feed is None:
                break
            feeds[graph].append(feed)
        reader.rewind()
    return feeds


def graph_files(results: dict[str, FlavourResult]) -> dict[str, Path]:
    """{bundle file name: chosen file} of every flavour's results (names.model_file)."""
    return {names.model_file(g, "int8", f): r.path for f, res in results.items() for g, r in res.files.items()}
