"""What the novelty score (edge_runtime.novelty) costs per frame, against the issue's 1 ms budget, and how
far its float32 scores are from the float64 path.

The scanner scores one pooled feature vector [D] per frame: cost r * D multiply-adds, r = the table's rank
(train images - 1, at most D). The table's values do not change the cost, so random tables of the right
shapes are timed: each backbone's D (resnet18 512, efficientnet_lite0 1280, resnet50 2048) at the ranks of
a small dataset (50 train images), the demo's (206) and the largest (r = D: a train split of more than D
images). Per table, in one run, variants alternating round by round (_common.run_rounds, so load drifts
hit them alike):

- float64: the score before (arrays float64, the projection a [1,D] x [D,r] BLAS product);
- f32 BLAS: float32 arrays, numpy's matrix-vector product (OpenBLAS, its default threads);
- f32 einsum: float32, numpy's einsum loop (edge_runtime.novelty.einsum_projection: numpy 1.x, Jetsons);
- f32 vecdot: NoveltyTable.score as the scanner runs it (vecdot_projection on numpy >= 2).

The precision table fits real tables (fit_novelty) on synthetic pooled features (ReLU of a random
64-dimensional latent mix, so the spectrum decays as a CNN's does) and compares NoveltyTable.score, one
frame at a time and batched, with the float64 score of the unrounded fit, on 300 in-domain and 300
shifted frames: max |d score| / threshold (what calibration.verdict_gate's NOVELTY_TOLERANCE bounds) and
max |d score| / score.

    python benchmarks/bench_novelty.py [--calls 500] [--rounds 5] [--no-precision]

`mgfen-bench`'s `novelty` column measures the same step inside the scanner's frame loop on a real bundle.
"""

from __future__ import annotations

import os
import time

import click
import numpy as np

from _common import cpu_flags, run_rounds, summarise
from calibration.verdict_gate import NOVELTY_TOLERANCE
from edge_runtime import novelty
from edge_runtime.novelty import NoveltyTable, fit_novelty, mahalanobis, shrunk_components, unit_rows

DIMS = {"resnet18": 512, "efficientnet_lite0": 1280, "resnet50": 2048}
RANKS = (49, 206, None)  # None: r = D
BUDGET_MS = 1.0
VARIANTS = ("float64", "f32 BLAS", "f32 einsum", "f32 vecdot")


def random_table(dim: int, rank: int, seed: int = 0) -> NoveltyTable:
    """A table of the given shapes: orthonormal components [rank, dim], positive weights below base."""
    rng = np.random.default_rng(seed)
    comps = np.linalg.qr(rng.normal(size=(dim, rank)))[0].T
    mean = np.abs(rng.normal(size=dim))
    return NoveltyTable(mean / np.linalg.norm(mean), comps, rng.uniform(0.1, 0.9, rank) * 100.0, 100.0, 1.0, 0.02,
                        0.1, "val", rank + 1, 64)


def scorers(table: NoveltyTable) -> dict:
    """{variant: features [D] -> score} for one table (VARIANTS)."""
    mean64, comps64 = table.mean.astype(np.float64), table.components.astype(np.float64)

    def float64(x):
        return float(mahalanobis(unit_rows(x).reshape(1, -1), mean64, comps64, table.weights, table.base)[0])

    def with_projection(project):
        def score(x):
            z = unit_rows(x) - table.mean
            proj = project(table.components, z.astype(np.float32))
            return float((table.base * (z @ z) - np.square(proj, dtype=np.float64) @ table.weights) / table.dim)
        return score

    return {"float64": float64, "f32 BLAS": with_projection(lambda c, z: c @ z),
            "f32 einsum": with_projection(novelty.einsum_projection), "f32 vecdot": table.score}


def timing(calls: int, rounds: int) -> None:
    rng = np.random.default_rng(1)
    variants, names = {}, []
    for backbone, dim in DIMS.items():
        for rank in RANKS:
            r = dim if rank is None else min(rank, dim)
            name = f"{backbone} D {dim} r {r}"
            names.append(name)
            x = np.abs(rng.normal(size=dim)).astype(np.float32)
            for variant, fn in scorers(random_table(dim, r)).items():
                variants[(name, variant)] = timer(fn, x, calls)
    samples = run_rounds({f"{k[0]}|{k[1]}": v for k, v in variants.items()}, rounds=rounds, warmup=1)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {calls} scores x {rounds} rounds; "
          f"ms per frame, median of rounds (min)")
    print("| table | " + " | ".join(VARIANTS) + " | float64 / vecdot | vecdot within 1 ms |")
    print("|---|" + "---|" * (len(VARIANTS) + 2))
    for name in names:
        med = {v: summarise([s["ms"] for s in samples[f"{name}|{v}"]]) for v in VARIANTS}
        cells = " | ".join(f"{med[v]['median_ms']:.3f} ({med[v]['min_ms']:.3f})" for v in VARIANTS)
        ratio = med["float64"]["median_ms"] / med["f32 vecdot"]["median_ms"]
        ok = "yes" if med["f32 vecdot"]["median_ms"] <= BUDGET_MS else "NO"
        print(f"| {name} | {cells} | {ratio:.1f}x | {ok} |")


def timer(fn, x: np.ndarray, calls: int):
    def run(_round: int) -> dict:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(x)
        return {"ms": (time.perf_counter() - t0) * 1e3 / calls}
    return run


def pooled_features(rng: np.random.Generator, n: int, mix: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """[n, D] float32 non-negative features: ReLU(latent [n,64] @ mix [64,D] + bias)."""
    return np.maximum(rng.normal(size=(n, mix.shape[0])) @ mix + bias, 0.0).astype(np.float32)


def precision() -> None:
    rng = np.random.default_rng(2)
    print("\n| table (fitted) | shrinkage | max \\|ds\\|/threshold, one frame | batched | einsum | "
          "max \\|ds\\|/score | within NOVELTY_TOLERANCE |")
    print("|---|---|---|---|---|---|---|")
    for backbone, dim in DIMS.items():
        for rank in RANKS:
            n = 2 * dim if rank is None else rank + 1
            mix, bias = rng.normal(size=(64, dim)) / 8.0, rng.normal(size=dim) * 0.5
            train, val = pooled_features(rng, n, mix, bias), pooled_features(rng, 300, mix, bias)
            shifted = pooled_features(rng, 300, rng.normal(size=(64, dim)) / 8.0, bias)
            table = fit_novelty(train, val)
            mean, comps, weights, base, _ = shrunk_components(unit_rows(train))
            frames = np.concatenate([val, shifted])
            ref = mahalanobis(unit_rows(frames), mean, comps, weights, base)
            one = np.array([table.score(f) for f in frames])
            batched = table.score(frames)
            saved, novelty.project_vector = novelty.project_vector, novelty.einsum_projection
            try:
                einsum = np.array([table.score(f) for f in frames])
            finally:
                novelty.project_vector = saved
            rel = {k: float(np.max(np.abs(v - ref))) / table.threshold
                   for k, v in (("one", one), ("batched", batched), ("einsum", einsum))}
            of_score = float(np.max(np.abs(one - ref) / np.abs(ref)))
            ok = "yes" if max(rel.values()) <= NOVELTY_TOLERANCE else "NO"
            print(f"| {backbone} D {dim} r {table.components.shape[0]} | {table.shrinkage:.3f} | {rel['one']:.1e} | "
                  f"{rel['batched']:.1e} | {rel['einsum']:.1e} | {of_score:.1e} | {ok} |")


@click.command()
@click.option("--calls", type=click.IntRange(min=10), default=500, show_default=True, help="Scores per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--precision/--no-precision", "with_precision", default=True, show_default=True,
              help="Also fit tables and compare float32 with float64 scores.")
def main(calls: int, rounds: int, with_precision: bool) -> None:
    print(f"CPU: {cpu_flags()}; numpy {np.__version__}; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; scanner projection: {novelty.project_vector.__name__}")
    timing(calls, rounds)
    if with_precision:
        precision()


if __name__ == "__main__":
    main()
