"""Per-group metrics and disparity gaps (bootstrap intervals: ``resampling``).

A few lines of numpy instead of fairlearn: the definitions are standard
(fairlearn's ``demographic_parity_difference``/``_ratio`` and
``equalized_odds_difference``).
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
