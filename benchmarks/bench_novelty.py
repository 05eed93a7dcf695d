"""What the novelty score (edge_runtime.novelty) costs per frame, against the issue's 1 ms budget.

The scanner scores one pooled feature vector [D] per frame: cost r * D multiply-adds, r = the table's rank
(train images - 1, at most D). The table's arrays do not change the cost, so random ones of the right
shapes are timed: each backbone's D (resnet18 512, efficientnet_lite0 1280, resnet50 2048) at the ranks of
a small dataset (50 train images), the demo's (206) and the largest (r = D: a train split of more than D
images). Variants alternate round by round (_common.run_rounds), so load drifts hit them alike; the
machine's load average is printed with the table: on a shared machine compare numbers of one run.

    python benchmarks/bench_novelty.py [--calls 2000] [--rounds 5]

`mgfen-bench`'s `novelty` column measures the same step inside the scanner's frame loop on a real bundle.
"""

from __future__ import annotations

import os
import time

import click
import numpy as np

from _common import run_rounds, summarise
from edge_runtime.novelty import NoveltyTable

DIMS = {"resnet18": 512, "efficientnet_lite0": 1280, "resnet50": 2048}
RANKS = (49, 206, None)  # None: r = D
BUDGET_MS = 1.0


def random_table(dim: int, rank: int, seed: int = 0) -> NoveltyTable:
    """A table of the given shapes: orthonormal components [rank, dim], positive weights below base."""
    rng = np.random.default_rng(seed)
    comps = np.linalg.qr(rng.normal(size=(dim, rank)))[0].T
    mean = np.abs(rng.normal(size=dim))
    return NoveltyTable(mean / np.linalg.norm(mean), comps, rng.uniform(0.1, 0.9, rank) * 100.0, 100.0, 1.0, 0.02,
                        0.1, "val", rank + 1, 64)


@click.command()
@click.option("--calls", type=click.IntRange(min=10), default=2000, show_default=True, help="Scores per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True)
def main(calls: int, rounds: int) -> None:
    rng = np.random.default_rng(1)
    cases = {}
    for backbone, dim in DIMS.items():
        for rank in RANKS:
            r = dim if rank is None else min(rank, dim)
            cases[f"{backbone} D {dim} r {r}"] = (random_table(dim, r), np.abs(rng.normal(size=dim)).astype(np.float32))

    def timer(table: NoveltyTable, x: np.ndarray):
        def run(_round: int) -> dict:
            t0 = time.perf_counter()
            for _ in range(calls):
                table.score(x)
            return {"ms": (time.perf_counter() - t0) * 1e3 / calls}
        return run

    samples = run_rounds({k: timer(*v) for k, v in cases.items()}, rounds=rounds, warmup=1)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {calls} scores x {rounds} rounds")
    print("| table | ms per frame (median of rounds) | min | within 1 ms |")
    print("|---|---|---|---|")
    for name, rows in samples.items():
        s = summarise([r["ms"] for r in rows])
        print(f"| {name} | {s['median_ms']:.3f} | {s['min_ms']:.3f} | {'yes' if s['median_ms'] <= BUDGET_MS else 'NO'} |")


if __name__ == "__main__":
    main()
