"""Regression evaluation: bootstrap intervals, plot data and the group audit.

Pure numpy/pandas on arrays, like ``fairness`` for classification. The
bootstrap uses the same per-row multinomial weights (vectorised over
resamples, seeded), so 1000 resamples of a 10k-row test split take well under
a second per metric.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.evaluation import fairness
from tabular_pipeline.evaluation.fairness import MISSING, _weights

DIGITS = 6
BOOTSTRAP_METRICS = ("rmse", "mae", "r2")
# Points in the predicted-vs-actual scatter: enough to see the shape, small
# enough for a plots page, a PR comment and git (a seeded sample).
SCATTER_ROWS = 2000
RESIDUAL_BINS = 30


def _r(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), DIGITS)


def _weighted(w: np.ndarray, y: np.ndarray, pred: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` for each row of resample weights ``w`` (resamples x rows)."""
    total = w.sum(axis=1)
    err = pred - y
    if metric == "rmse":
        return np.sqrt(w @ (err**2) / total)
    if metric == "mae":
        return w @ np.abs(err) / total
    mean = (w @ y) / total
    ss_res = w @ (err**2)
    ss_tot = (w * (y[None, :] - mean[:, None]) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)


def _interval(values: np.ndarray, confidence: float) -> dict[str, float | None] | None:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return {"low": _r(lo), "high": _r(hi)}


def bootstrap_ci(
    y_true: Any,
    pred: Any,
    metrics: list[str],
    n_resamples: int,
    confidence: float,
    seed: int,
    chunk: int = 200,
) -> dict[str, dict[str, float | None]]:
    """Percentile bootstrap intervals of RMSE, MAE and R² (seeded: reruns are identical)."""
    unknown = sorted(set(metrics) - set(BOOTSTRAP_METRICS))
    if unknown:
        raise PipelineError(
            f"evaluate.bootstrap.regression_metrics: {unknown} not supported "
            f"(choose from {list(BOOTSTRAP_METRICS)})"
        )
    if not 0 < confidence < 1:
        raise PipelineError(f"evaluate.bootstrap.confidence: {confidence} not in (0, 1)")
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    n = len(y)
    if n == 0 or n_resamples < 1:
        return {}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        w = _weights(rng, n, size)
        for name in metrics:
            samples[name].append(_weighted(w, y, p, name))
        done += size
    out: dict[str, dict[str, float | None]] = {}
    for name, parts in samples.items():
        interval = _interval(np.concatenate(parts), confidence)
        if interval is not None:
            out[name] = interval
    return out


def scatter_points(y_true: Any, pred: Any, seed: int, max_rows: int = SCATTER_ROWS) -> pd.DataFrame:
    """Predicted vs actual, a seeded sample of at most ``max_rows`` rows."""
    frame = pd.DataFrame(
        {
            "actual_value": np.asarray(y_true, dtype=np.float64),
            "predicted_value": np.asarray(pred, dtype=np.float64),
        }
    )
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed).sort_index()
    return frame.round(DIGITS).reset_index(drop=True)


def residual_histogram(y_true: Any, pred: Any, bins: int = RESIDUAL_BINS) -> pd.DataFrame:
    """Residuals (prediction - actual) binned: bin centre and row count."""
    residual = np.asarray(pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    if len(residual) == 0:
        return pd.DataFrame(columns=["residual", "count"])
    counts, edges = np.histogram(residual, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    return pd.DataFrame({"residual": centres, "count": counts}).round(DIGITS)


def group_table(y_true: Any, pred: Any, groups: pd.Series) -> pd.DataFrame:
    """One row per group: n, mean target, mean prediction, MAE, mean residual (bias).

    A missing value of the sensitive column is its own group, so no row is
    silently left out of the audit.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    keys = groups.astype(object).where(groups.notna(), MISSING).astype(str).to_numpy()
    rows = []
    for key in sorted(set(keys)):
        mask = keys == key
        rows.append(
            {
                "group": key,
                "size": int(mask.sum()),
                "mean_target": _r(y[mask].mean()),
                "mean_prediction": _r(p[mask].mean()),
                "mae": _r(np.abs(p[mask] - y[mask]).mean()),
                "mean_residual": _r((p[mask] - y[mask]).mean()),
            }
        )
    return pd.DataFrame(
        rows,
        columns=["group", "size", "mean_target", "mean_prediction", "mae", "mean_residual"],
    )


def mae_gap(
    y_true: Any,
    pred: Any,
    groups: pd.Series,
    table: pd.DataFrame,
    min_group_size: int,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """Largest between-group MAE difference (groups >= ``min_group_size``), with a bootstrap CI.

    The interval resamples rows (seeded, like the headline CIs) and recomputes
    the gap between the same compared groups in each resample.
    """
    used = table[table["size"] >= min_group_size]
    out: dict[str, Any] = {
        "mae_gap": None,
        "mae_gap_ci": None,
        "worst_group": None,
        "best_group": None,
        "groups_compared": len(used),
    }
    if len(used) < 2:
        return out
    mae = used.set_index("group")["mae"].astype(float)
    out["mae_gap"] = _r(mae.max() - mae.min())
    out["worst_group"], out["best_group"] = str(mae.idxmax()), str(mae.idxmin())
    y = np.asarray(y_true, dtype=np.float64)
    abs_err = np.abs(np.asarray(pred, dtype=np.float64) - y)
    keys = groups.astype(object).where(groups.notna(), MISSING).astype(str).to_numpy()
    masks = np.vstack([(keys == g).astype(np.float64) for g in used["group"]])
    rng = np.random.default_rng(seed)
    gaps: list[np.ndarray] = []
    done = 0
    while done < n_resamples:
        size = min(200, n_resamples - done)
        w = _weights(rng, len(y), size)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_group = ((w * abs_err) @ masks.T) / (w @ masks.T)  # resamples x groups
        gaps.append(np.nanmax(per_group, axis=1) - np.nanmin(per_group, axis=1))
        done += size
    if gaps:
        out["mae_gap_ci"] = _interval(np.concatenate(gaps), confidence)
    return out


def fairness_report(
    frame: pd.DataFrame,
    pred: Any,
    target: str,
    sensitive: list[str],
    min_group_size: int,
    n_resamples: int,
    confidence: float,
    seed: int,
    ci_rows: np.ndarray | None = None,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Headline MAE gap per sensitive column, and the per-group tables behind it.

    Tables and gaps use every row; the gap's bootstrap resamples ``ci_rows``
    (the headline CIs' seeded sample) when given.
    """
    fairness.check_sensitive(frame, sensitive)
    headline: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    y = frame[target].to_numpy(dtype=np.float64)
    rows = np.arange(len(y)) if ci_rows is None else ci_rows
    p = np.asarray(pred, dtype=np.float64)
    for column in sensitive:
        table = group_table(y, p, frame[column])
        tables[column] = table
        headline[column] = mae_gap(
            y[rows],
            p[rows],
            frame[column].iloc[rows],
            table,
            min_group_size,
            n_resamples,
            confidence,
            seed,
        )
    return headline, tables


def group_bars(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table for DVC's bar template: one bar per (column, group)."""
    return fairness.group_bars(tables, ("mae", "mean_residual"))
