"""Detection power and false alarms of `make monitor`'s gates, on planted shifts.

Draws seeded batches of rows from the test split (rows the model never saw,
from the population the validation reference came from), plants a shift of
one kind and size, and runs the monitor's own functions in-process: the
model's predictions as the service would serve them, ``drift.prepare``,
``drift.run_report`` (the per-column tests of the batch's size),
``drift.summarise`` with explain's importance and the shipped gate, and for
the label flip the live-quality gate (``quality.live_metrics`` /
``quality.compare`` against evaluate's promoted metrics). No server: the
statistics are what is measured, not HTTP.

Kinds (``small`` / ``large`` size):

- ``clean``: nothing changed (every flag is a false alarm);
- ``numeric``: ``age`` + 5 years / ages drawn from 70-90 (the issue's case);
- ``category``: 10 % / 30 % of rows' ``marital_status`` set to ``Never-married``;
- ``group``: the same age shifts on the rows of one sensitive group only
  (``sex == Female``, a third of the rows);
- ``labels``: 10 % / 30 % of the delayed labels flipped (the quality gate).

Baseline in the same run: the previous per-column test (Evidently's
distances at 0.1 at every batch size) on the clean batches.

    .venv/bin/python bench/monitoring_power.py               # 20 batches per cell
    .venv/bin/python bench/monitoring_power.py --batches 3   # a quick look

Needs the pipeline's outputs (`make repro`): the splits, the model,
explain's importance and evaluate's metrics.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline import stage
from tabular_pipeline.config import (
    EvaluateConfig,
    MonitorConfig,
    SplitConfig,
    TrainConfig,
    load_data_config,
    load_params,
    parse_section,
)
from tabular_pipeline.explain.settings import ExplainConfig
from tabular_pipeline.monitoring import drift, quality

log = logging.getLogger("bench.monitoring_power")

SIZES = {
    "numeric": {"small": "age + 5 years", "large": "age drawn from 70-90"},
    "category": {"small": "10 % -> Never-married", "large": "30 % -> Never-married"},
    "group": {"small": "age + 5 (women only)", "large": "age 70-90 (women only)"},
    "labels": {"small": "10 % labels flipped", "large": "30 % labels flipped"},
}


def shift_age(batch: pd.DataFrame, size: str, rng: np.random.Generator, rows: Any) -> None:
    if size == "small":
        batch.loc[rows, "age"] = batch.loc[rows, "age"] + 5
    else:
        batch.loc[rows, "age"] = rng.integers(70, 91, size=int(np.sum(rows))).astype(float)


def plant(kind: str, size: str, batch: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    out = batch.copy()
    if kind == "numeric":
        shift_age(out, size, rng, np.ones(len(out), dtype=bool))
    elif kind == "group":
        shift_age(out, size, rng, (out["sex"].astype(str) == "Female").to_numpy())
    elif kind == "category":
        share = 0.1 if size == "small" else 0.3
        chosen = rng.random(len(out)) < share
        column = out["marital_status"].astype(object)
        column[chosen] = "Never-married"
        out["marital_status"] = column
    return out


def flip(
    labels: pd.Series, classes: list[str], share: float, rng: np.random.Generator
) -> pd.Series:
    out = labels.astype(str).copy()
    chosen = rng.random(len(out)) < share
    other = {classes[0]: classes[1], classes[1]: classes[0]}
    out[chosen] = out[chosen].map(other)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="seeded batches per cell")
    parser.add_argument("--batch-rows", default="100,300,3000", help="comma-separated")
    parser.add_argument("--kinds", default="clean,numeric,category,group,labels")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)

    params = load_params()
    data = load_data_config(params)
    cfg = parse_section(params, "monitor", MonitorConfig)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    pipeline = stage.load_object(Path(parse_section(params, "train", TrainConfig).model_out))
    importance = drift.read_importance(
        Path(parse_section(params, "explain", ExplainConfig).importance_out)
    )
    kinds = args.kinds.split(",")
    promoted: dict[str, Any] = {}
    if "labels" in kinds:
        evaluate = parse_section(params, "evaluate", EvaluateConfig)
        promoted = stage.read_json(Path(evaluate.metrics_out))
    reference = stage.read_parquet(split_dir / "valid.parquet")
    pool = stage.read_parquet(split_dir / "test.parquet").reset_index(drop=True)
    classes = [str(c) for c in pipeline.classes_]
    positive = None if data.positive_label is None else str(data.positive_label)
    features = [c for c in reference.columns if c != data.target]
    baseline_tests = replace(cfg.tests, small_batch_rows=0)
    seed = int(params["seed"])
    ref_pred: pd.Series | None = None  # the reference's predictions, computed once
    tests = ""

    rows: list[dict[str, Any]] = []
    for n in [int(x) for x in args.batch_rows.split(",")]:
        cells = [("clean", "-")] + [(k, s) for k in kinds if k != "clean" for s in SIZES[k]]
        for kind, size in cells:
            if kind not in kinds:
                continue
            start = time.perf_counter()
            stats = dict.fromkeys(("failed", "flagged", "target", "prediction", "baseline"), 0)
            stats["quality"] = 0  # clean batches: the quality gate failed
            for b in range(args.batches):
                rng = np.random.default_rng([n, b])
                batch = pool.iloc[rng.choice(len(pool), size=n, replace=False)]
                batch = batch.reset_index(drop=True)
                current = plant(kind, size, batch, rng)
                proba, _ = _proba(pipeline, current[features])
                served = drift.prediction_column(proba, classes, positive, current.index)
                cur = current[features].assign(__served__=served.to_numpy())
                failures: list[str] = []
                if kind != "labels":  # the features are clean: their false alarms are "clean"'s
                    ref, cur_, columns = drift.prepare(
                        reference,
                        cur,
                        data,
                        pipeline,
                        cfg.max_rows,
                        seed,
                        served="__served__",
                        reference_prediction=ref_pred,
                    )
                    ref_pred = ref[columns.prediction or ""]
                    result = drift.run_report(ref, cur_, columns, cfg.tests, html=False)
                    summary = drift.summarise(
                        result.columns, columns.prediction, cfg.gate, "monitor.gate", importance
                    )
                    failures = list(summary["gate_failures"])
                    stats["flagged"] += bool(summary["drifted_columns"]) or bool(
                        summary["prediction_drifted"]
                    )
                    stats["prediction"] += bool(summary["prediction_drifted"])
                    tests = result.tests["kind"]
                if kind in ("labels", "clean") and "labels" in kinds:
                    # clean: the labels as they are (the quality gate's false alarms)
                    share = {"small": 0.1, "large": 0.3}.get(size, 0.0)
                    joined = pd.DataFrame(
                        {
                            "proba": list(proba),
                            "actual": flip(current[data.target], classes, share, rng).to_numpy(),
                        }
                    )
                    q = cfg.quality
                    live = quality.live_metrics(
                        joined, classes, list(q.metrics), q.n_resamples, q.confidence, b
                    )
                    _, quality_failures = quality.compare(
                        live, promoted, dict(q.max_drop), len(joined), q.min_labels
                    )
                    failures += quality_failures
                    stats["target" if kind == "labels" else "quality"] += bool(quality_failures)
                if kind in ("numeric", "group"):
                    stats["target"] += "age" in summary["drifted_columns"]
                elif kind == "category":
                    stats["target"] += "marital_status" in summary["drifted_columns"]
                stats["failed"] += bool(failures)
                if kind == "clean":
                    old = drift.run_report(ref, cur_, columns, baseline_tests, html=False)
                    stats["baseline"] += any(c["drifted"] for c in old.columns)
            row = {
                "batch_rows": n,
                "kind": kind,
                "shift": SIZES.get(kind, {}).get(size, "none"),
                "batches": args.batches,
                **{k: v / args.batches for k, v in stats.items()},
                "tests": tests if kind != "labels" else "quality gate (bootstrap CI)",
                "seconds": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            log.info("%s", row)
    print_table(rows)


def _proba(pipeline: Any, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    from tabular_pipeline.models.modeling import predict_proba

    return predict_proba(pipeline, frame, "")


def print_table(rows: list[dict[str, Any]]) -> None:
    """Rates over the batches. Clean rows: every number is a false-alarm rate."""
    print(
        "| batch rows | kind | shift | gate fails (exit 1) | any column or prediction flagged "
        "| shifted column flagged / quality gate fails | prediction drifted "
        "| baseline: any column flagged | tests |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        labels = r["kind"] == "labels"
        target = f"{r['quality']:.0%} (quality)" if r["kind"] == "clean" else f"{r['target']:.0%}"
        print(
            f"| {r['batch_rows']} | {r['kind']} | {r['shift']} | {r['failed']:.0%} "
            f"| {'-' if labels else format(r['flagged'], '.0%')} | {target} "
            f"| {'-' if labels else format(r['prediction'], '.0%')} "
            f"| {format(r['baseline'], '.0%') if r['kind'] == 'clean' else '-'} | {r['tests']} |"
        )


if __name__ == "__main__":
    main()
