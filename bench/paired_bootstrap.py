"""Paired bootstrap speed on an Adult-sized test split, against a per-draw sklearn loop.

    .venv/bin/python bench/paired_bootstrap.py [--rows 16281] [--draws 2000]

Two synthetic binary models on the same rows (Adult's test size by default).
``resampling.paired`` (vectorised: one index matrix per chunk of draws for
both models, metrics as weighted sums, ROC AUC by a sparse rank product) is
timed for each headline metric and for all of them together; the baseline is
the obvious loop (draw indices, call sklearn for each model) on the same
draws, timed on a tenth of them and scaled. Both give the same intervals.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from tabular_pipeline.evaluation import resampling as rs

CLASSES = ["<=50K", ">50K"]


def models(n: int) -> tuple[rs.Scored, rs.Scored]:
    rng = np.random.default_rng(0)
    y = np.where(rng.random(n) < 0.24, CLASSES[1], CLASSES[0])
    p = np.clip((y == CLASSES[1]) * 0.35 + rng.random(n) * 0.65, 0.001, 0.999)
    q = np.clip(p + rng.normal(0, 0.05, n), 0.001, 0.999)
    return (
        rs.classification(y, np.column_stack([1 - p, p]), CLASSES),
        rs.classification(y, np.column_stack([1 - q, q]), CLASSES),
    )


def sklearn_loop(new: rs.Scored, old: rs.Scored, draws: int, seed: int) -> float:
    """Seconds for ``draws`` draws of the per-draw loop (accuracy, log loss, ROC AUC)."""
    assert new.proba is not None and old.proba is not None
    rng = np.random.default_rng(seed)
    n = len(new)
    start = time.perf_counter()
    for _ in range(draws):
        idx = rng.integers(0, n, n)
        y = new.y[idx]
        for s in (new, old):
            p = s.proba[idx]  # type: ignore[index]
            accuracy_score(y, np.asarray(CLASSES)[p.argmax(axis=1)])
            log_loss(y, p, labels=CLASSES)
            roc_auc_score(y == CLASSES[1], p[:, 1])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16_281)
    parser.add_argument("--draws", type=int, default=2000)
    args = parser.parse_args()
    new, old = models(args.rows)
    rs.paired(new, old, ["roc_auc", "accuracy"], 10, 0.95, 0)  # imports (scipy) out of the timing
    print(f"{args.rows:,} rows, {args.draws:,} draws, paired (both models per draw)")
    for metrics in (["accuracy"], ["log_loss"], ["roc_auc"], ["accuracy", "log_loss", "roc_auc"]):
        start = time.perf_counter()
        rs.paired(new, old, metrics, args.draws, 0.95, 0)
        print(f"  resampling.paired {'+'.join(metrics):<26} {time.perf_counter() - start:6.2f} s")
    tenth = max(1, args.draws // 10)
    loop = sklearn_loop(new, old, tenth, 0) * args.draws / tenth
    print(f"  baseline: sklearn per draw, all three {loop:6.2f} s (scaled from {tenth} draws)")


if __name__ == "__main__":
    main()
