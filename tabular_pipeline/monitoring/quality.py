"""Live quality: served predictions joined with delayed labels, next to the promoted metrics.

The same metric code and bootstrap as ``evaluate`` (so live and test numbers
mean the same thing), computed from the probabilities that were *served*
(logged), not re-predicted: a challenger's rows are scored as served.
The gate compares the live point estimate with the promoted test metric and
a configured allowed drop; the CI is reported so a reader can tell a real
drop from noise on few labels (``min_labels`` keeps tiny batches from gating).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.monitoring.logs import ID

log = logging.getLogger(__name__)

DIGITS = 6
# Direction of each metric this project computes (any task): a drop is a fall
# for these, a rise for the others (log_loss, error_rate, rmse, mae, ...).
HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "r2"}


def join_labels(served: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Served rows that have a label; counts of matched and unknown ids."""
    joined = served.merge(labels.rename(columns={"label": "actual"}), on=ID, how="inner")
    counts = {
        "labels": len(labels),
        "matched": len(joined),
        "unknown_ids": int((~labels[ID].isin(served[ID])).sum()),
        "served": len(served),
    }
    if counts["unknown_ids"]:
        log.warning(
            "labels: %d of %d prediction_id(s) are not in the logs (matched %d)",
            counts["unknown_ids"],
            counts["labels"],
            counts["matched"],
        )
    return joined, counts


def live_metrics(
    joined: pd.DataFrame,
    classes: list[str],
    metrics: list[str],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """Headline metrics and percentile CIs of the served probabilities against the labels."""
    from tabular_pipeline.evaluation import fairness
    from tabular_pipeline.evaluation import metrics as m

    proba = np.vstack([np.asarray(p, dtype=float) for p in joined["proba"]])
    if proba.shape[1] != len(classes):
        raise PipelineError(
            f"prediction log: {proba.shape[1]} probabilities per row but the model has "
            f"{len(classes)} classes {classes}; were the logs written by another model?"
        )
    y = joined["actual"].astype(str)
    unknown = sorted(set(y) - set(classes))
    if unknown:
        raise PipelineError(f"labels: unknown label(s) {unknown[:5]}; expected one of {classes}")
    scores = m.classification_metrics(y, proba, classes)
    unknown_metrics = [k for k in metrics if k not in scores]
    if unknown_metrics:
        raise PipelineError(f"monitor.quality.metrics: {unknown_metrics} are not computed")
    # The bootstrap covers evaluate's CI metrics; the others are point estimates.
    boot = [k for k in metrics if k in fairness.BOOTSTRAP_METRICS]
    ci = fairness.bootstrap_ci(y.to_numpy(), proba, classes, boot, n_resamples, confidence, seed)
    return {
        "values": {k: scores.get(k) for k in metrics},
        "ci": ci,
        "n_rows": len(y),
    }


def compare(
    live: dict[str, Any],
    promoted: dict[str, Any],
    max_drop: dict[str, float],
    n_labels: int,
    min_labels: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per metric: live, CI, promoted, drop; and one gate line per metric past its drop."""
    rows = []
    failures = []
    for name, value in live["values"].items():
        ref = promoted.get(name)
        drop = None
        if value is not None and isinstance(ref, (int, float)):
            sign = 1 if name in HIGHER_IS_BETTER else -1
            drop = round(sign * (float(ref) - float(value)), DIGITS)
        limit = max_drop.get(name)
        failed = limit is not None and drop is not None and drop > limit
        rows.append(
            {
                "metric": name,
                "live": value,
                "ci": live["ci"].get(name),
                "promoted": ref,
                "drop": drop,
                "max_drop": limit,
                "failed": bool(failed and n_labels >= min_labels),
            }
        )
        if failed and n_labels >= min_labels:
            ci = live["ci"].get(name) or {}
            failures.append(
                f"live {name} {value:.4f} (CI {ci.get('low')}-{ci.get('high')}, "
                f"{n_labels} labels) is {drop:.4f} below the promoted {ref:.4f} "
                f"(monitor.quality.max_drop.{name} {limit})"
            )
        elif failed:
            log.warning(
                "live %s dropped by %.4f but only %d labels (< monitor.quality.min_labels %d): "
                "not gated",
                name,
                drop,
                n_labels,
                min_labels,
            )
    return rows, failures
