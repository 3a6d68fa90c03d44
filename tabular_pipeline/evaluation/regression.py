"""Regression evaluation: plot data and the group audit (intervals: ``resampling``).

Pure numpy/pandas on arrays, like ``fairness`` for classification. The MAE
gap's bootstrap uses ``resampling.draws``, the draws of every other interval.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.evaluation import fairness
from tabular_pipeline.evaluation.fairness import MISSING
from tabular_pipeline.evaluation.resampling import draws

DIGITS = 6
# Points in the predicted-vs-actual scatter: enough to see the shape, small
# enough for a plots page, a PR comment and git (a seeded sample).
SCATTER_ROWS = 2000
RESIDUAL_BINS = 30


def _r(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), DIGITS)


def _interval(values: np.ndarray, confidence: float) -> dict[str, float | None] | None:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return {"low": _r(lo), "high": _r(hi)}


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
    gaps: list[np.ndarray] = []
    for w in draws(len(y), n_resamples, seed):
        with np.errstate(invalid="ignore", divide="ignore"):
            per_group = ((w * abs_err) @ masks.T) / (w @ masks.T)  # resamples x groups
        gaps.append(np.nanmax(per_group, axis=1) - np.nanmin(per_group, axis=1))
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
