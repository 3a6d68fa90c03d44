"""Live quality: served predictions joined with delayed labels, next to the promoted metrics.

The same metric code and bootstrap as ``evaluate`` (so live and test numbers
mean the same thing), computed from what was *served* (the logged
probabilities, or a regressor's logged values), not re-predicted: a
challenger's rows are scored as served.
The gate compares the live point estimate with the promoted test metric and
a configured allowed drop; the CI is reported so a reader can tell a real
drop from noise on few labels (``min_labels`` keeps tiny batches from gating).

A "drop" is a worsening in the metric's direction, as register's gates read
it (``registry.gates.direction``): a fall for higher-is-better metrics
(accuracy, roc_auc, r2, ...), a *rise* for lower-is-better ones (rmse, mae,
log_loss, ...). ``max_drop`` is therefore always a positive tolerance, in the
metric's units (rmse and mae: the target's units).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.monitoring.logs import ID
from tabular_pipeline.registry.gates import direction

log = logging.getLogger(__name__)

DIGITS = 6


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
    from tabular_pipeline.config import BOOTSTRAP_METRICS
    from tabular_pipeline.evaluation import metrics as m
    from tabular_pipeline.evaluation import resampling

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
    boot = [k for k in metrics if k in BOOTSTRAP_METRICS]
    scored = resampling.classification(y.to_numpy(), proba, classes)
    ci = resampling.bootstrap_ci(scored, boot, n_resamples, confidence, seed)
    return {
        "values": {k: scores.get(k) for k in metrics},
        "ci": ci,
        "n_rows": len(y),
    }


def live_regression_metrics(
    joined: pd.DataFrame,
    metrics: list[str],
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """A regressor's headline metrics and percentile CIs: served values against numeric labels.

    ``evaluate``'s own functions (``metrics.regression_metrics``,
    ``resampling.bootstrap_ci``), so the live numbers compare with the
    promoted ones.
    """
    from tabular_pipeline.config import REGRESSION_BOOTSTRAP_METRICS
    from tabular_pipeline.evaluation import metrics as m
    from tabular_pipeline.evaluation import resampling

    y = joined["actual"].to_numpy(dtype=np.float64)
    pred = joined["prediction"].to_numpy(dtype=np.float64)
    scores = m.regression_metrics(y, pred)
    unknown_metrics = [k for k in metrics if k not in scores or k in ("n_rows", "mape_skipped")]
    if unknown_metrics:
        raise PipelineError(
            f"monitor.quality.regression_metrics: {unknown_metrics} are not computed "
            f"(choose from rmse, mae, r2, mape)"
        )
    boot = [k for k in metrics if k in REGRESSION_BOOTSTRAP_METRICS]
    ci = resampling.bootstrap_ci(
        resampling.regression(y, pred), boot, n_resamples, confidence, seed
    )
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
            sign = 1 if direction(name) == "higher" else -1
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
            worse = "below" if direction(name) == "higher" else "above"
            failures.append(
                f"live {name} {value:.4f} (CI {ci.get('low')}-{ci.get('high')}, "
                f"{n_labels} labels) is {drop:.4f} {worse} the promoted {ref:.4f} "
                f"(monitor.quality.max_drop.{name} {limit}"
                + ("" if worse == "below" else f", {direction(name)} is better")
                + ")"
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
