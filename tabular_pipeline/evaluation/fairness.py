"""Per-group metrics, disparity gaps and bootstrap confidence intervals.

A few lines of numpy instead of fairlearn: the definitions are standard
(fairlearn's ``demographic_parity_difference``/``_ratio`` and
``equalized_odds_difference``), and the bootstrap is vectorised over resamples
so 1000 resamples of the 16k-row Adult test split take well under a second
per metric.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DIGITS = 6
MISSING = "<missing>"
# Metrics the bootstrap knows how to compute from per-row resample weights.
BOOTSTRAP_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


def _r(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), DIGITS)


def _rate(num: np.ndarray | float, den: np.ndarray | float) -> float:
    return float(num) / float(den) if float(den) > 0 else float("nan")


def group_table(
    y_true: np.ndarray, y_pred: np.ndarray, groups: pd.Series, positive: str
) -> pd.DataFrame:
    """One row per group: size, base rate, selection rate, accuracy, TPR, FPR.

    A missing value of the sensitive column is its own group, so no row is
    silently dropped from the audit.
    """
    y = np.asarray(y_true).astype(str) == positive
    p = np.asarray(y_pred).astype(str) == positive
    keys = groups.astype(object).where(groups.notna(), MISSING).astype(str).to_numpy()
    rows = []
    for key in sorted(set(keys)):
        mask = keys == key
        yt, yp = y[mask], p[mask]
        rows.append(
            {
                "group": key,
                "size": int(mask.sum()),
                "base_rate": _r(yt.mean()),
                "selection_rate": _r(yp.mean()),
                "accuracy": _r((yt == yp).mean()),
                "tpr": _r(_rate((yt & yp).sum(), yt.sum())),
                "fpr": _r(_rate((~yt & yp).sum(), (~yt).sum())),
            }
        )
    return pd.DataFrame(rows)


def disparities(table: pd.DataFrame, min_group_size: int) -> dict[str, Any]:
    """Demographic parity difference/ratio and equalized-odds difference.

    Groups smaller than ``min_group_size`` stay in the table but not in the
    gaps: a rate over a handful of rows is noise, not evidence.
    """
    used = table[table["size"] >= min_group_size]
    out: dict[str, Any] = {
        "dpd": None,
        "dpr": None,
        "eod": None,
        "groups_compared": len(used),
    }
    if len(used) < 2:
        return out
    sel = used["selection_rate"].astype(float)
    out["dpd"] = _r(sel.max() - sel.min())
    out["dpr"] = _r(sel.min() / sel.max()) if sel.max() > 0 else None
    gaps = [
        used[col].astype(float).max() - used[col].astype(float).min()
        for col in ("tpr", "fpr")
        if used[col].notna().sum() >= 2
    ]
    out["eod"] = _r(max(gaps)) if gaps else None
    return out


def check_sensitive(frame: pd.DataFrame, sensitive: list[str]) -> None:
    """Every audited column must be in the split (a typo in data.sensitive, named)."""
    missing = [c for c in sensitive if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"data.sensitive: column(s) {missing} not in the test split "
            f"(columns: {sorted(map(str, frame.columns))})"
        )


def fairness_report(
    frame: pd.DataFrame,
    y_pred: np.ndarray,
    target: str,
    positive: str,
    sensitive: list[str],
    min_group_size: int,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Headline gaps per sensitive column, and the per-group tables behind them."""
    check_sensitive(frame, sensitive)
    headline: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    for column in sensitive:
        table = group_table(frame[target].to_numpy(), y_pred, frame[column], positive)
        tables[column] = table
        headline[column] = disparities(table, min_group_size)
    return headline, tables


def sample_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of at most ``max_rows`` of ``n`` rows (all if fewer).

    The bootstrap resamples this sample: its cost and memory grow with
    ``max_rows`` x resamples, not with the test split.
    """
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def _weights(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Bootstrap resamples as per-row counts (a multinomial draw per resample)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


def _weighted_auc(w: np.ndarray, score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of weights ``w`` (resamples x rows), ties counted half.

    Scores are sorted once; per resample the AUC is the weighted share of
    (positive, negative) pairs ranked correctly, from cumulative sums.
    """
    order = np.argsort(score, kind="stable")
    s, pos = score[order], positive[order]
    w = w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    wp = np.add.reduceat(w * pos, starts, axis=1)
    wn = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn
    num = (wp * (below + 0.5 * wn)).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def bootstrap_ci(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    metrics: list[str],
    n_resamples: int,
    confidence: float,
    seed: int,
    chunk: int = 200,
) -> dict[str, dict[str, float | None]]:
    """Percentile bootstrap intervals for the headline test metrics.

    Vectorised over resamples (in chunks, to bound memory at chunk x rows
    floats) and seeded, so reruns give identical bounds. ROC AUC is
    computed for binary targets only (positive class = ``classes[1]``).
    """
    unknown = sorted(set(metrics) - set(BOOTSTRAP_METRICS))
    if unknown:
        raise PipelineError(
            f"evaluate.bootstrap.metrics: {unknown} not supported "
            f"(choose from {list(BOOTSTRAP_METRICS)})"
        )
    if not 0 < confidence < 1:
        raise PipelineError(f"evaluate.bootstrap.confidence: {confidence} not in (0, 1)")
    y = np.asarray(y_true).astype(str)
    n = len(y)
    if n == 0 or n_resamples < 1:
        return {}
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    correct = (pred == y).astype(np.float64)
    present = [c for c in classes if (y == c).any()]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        w = _weights(rng, n, size)
        total = w.sum(axis=1)
        if "accuracy" in metrics:
            samples["accuracy"].append(w @ correct / total)
        if "balanced_accuracy" in metrics:
            recalls = []
            for c in present:
                is_c = y == c
                with np.errstate(invalid="ignore", divide="ignore"):
                    recalls.append((w @ (correct * is_c)) / (w @ is_c.astype(np.float64)))
            samples["balanced_accuracy"].append(np.nanmean(np.vstack(recalls), axis=0))
        if "roc_auc" in metrics and len(classes) == 2:
            samples["roc_auc"].append(_weighted_auc(w, proba[:, 1], y == classes[1]))
        done += size
    alpha = (1 - confidence) / 2
    out: dict[str, dict[str, float | None]] = {}
    for name, parts in samples.items():
        if not parts:
            continue
        values = np.concatenate(parts)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            continue
        lo, hi = np.quantile(values, [alpha, 1 - alpha])
        out[name] = {"low": _r(lo), "high": _r(hi)}
    return out


def group_bars(
    tables: dict[str, pd.DataFrame], values: tuple[str, ...] = ("selection_rate", "tpr")
) -> pd.DataFrame:
    """Long table for DVC's bar template: one bar per (column, group)."""
    columns = ["group", *values, "size"]
    frames = [
        table.assign(group=[f"{column}={g}" for g in table["group"]])[columns]
        for column, table in tables.items()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
