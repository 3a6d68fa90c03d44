"""k-fold evaluation on train+valid that follows the split strategy.

One split of a few hundred rows gives a test metric whose noise is larger
than most model differences; k folds show the spread. Folds follow
``split.strategy``: stratified (or plain) k-fold, group k-fold (no group in a
fold's training and test rows), or expanding time windows (train strictly
before the fold's test window minus the gap; never shuffled).

The interval of the mean is Nadeau & Bengio's corrected resampled t
(Machine Learning 52, 2003): fold scores are correlated because the training
sets overlap, so the variance of the mean is the fold variance times
``1/J + n_test/n_train`` (not ``1/J``), with ``J - 1`` degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit

from tabular_pipeline.data.split import Roles, group_values, strata, time_values
from tabular_pipeline.errors import PipelineError

Fold = tuple[np.ndarray, np.ndarray]


def decide(enabled: Any, rows: int, max_rows: int) -> tuple[bool, str]:
    """Whether CV runs, and why (``auto``: only small data, where one split is noisy)."""
    if enabled is True:
        return True, "cv.enabled: true"
    if enabled is False:
        return False, "cv.enabled: false"
    if rows <= max_rows:
        return True, f"auto: {rows} train+valid rows <= cv.max_rows {max_rows}"
    return False, f"auto: {rows} train+valid rows > cv.max_rows {max_rows}"


def _time_folds(
    frame: pd.DataFrame, column: str, k: int, gap: Any, groups: pd.Series | None, seed: int
) -> Iterator[Fold]:
    """Expanding windows over the distinct times (scikit-learn's TimeSeriesSplit on them).

    With groups (``group_time``), fold i tests the i-th of k group folds
    (GroupKFold) in the i-th window and trains on the other groups before it.
    """
    times = time_values(frame, column)
    distinct = np.sort(times.unique())
    if len(distinct) <= k:
        raise PipelineError(
            f"cv: time column {column!r} has {len(distinct)} distinct value(s) in train+valid; "
            f"expanding windows need more than cv.folds={k}; lower cv.folds"
        )
    values = times.to_numpy()
    held: list[np.ndarray] = []
    if groups is not None:
        splitter = GroupKFold(k, shuffle=True, random_state=seed)
        held = [test for _, test in splitter.split(frame, groups=groups)]
    windows = TimeSeriesSplit(n_splits=k).split(distinct)
    for i, (_, test_pos) in enumerate(windows):
        window = distinct[test_pos]
        test_mask = np.isin(values, window)
        train_mask = values < window.min() - gap
        if groups is not None:
            in_fold = np.zeros(len(frame), dtype=bool)
            in_fold[held[i]] = True
            test_mask &= in_fold
            train_mask &= ~in_fold
        if train_mask.any() and test_mask.any():
            yield np.flatnonzero(train_mask), np.flatnonzero(test_mask)


def folds(
    frame: pd.DataFrame,
    target: str,
    strategy: str,
    roles: Roles,
    k: int,
    seed: int,
    gap: Any = 0,
) -> list[Fold]:
    """(train positions, test positions) per fold, as the split strategy would draw them."""
    if strategy == "random":
        return list(KFold(k, shuffle=True, random_state=seed).split(frame))
    if strategy == "stratified":
        labels = strata(frame, target)
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(frame, labels))
    if strategy == "group":
        assert roles.group_column is not None
        groups = group_values(frame, roles.group_column).astype(str)
        if groups.nunique() < k:
            raise PipelineError(
                f"cv: {groups.nunique()} group(s) in {roles.group_column!r} < cv.folds={k}; "
                "lower cv.folds"
            )
        splitter = GroupKFold(k, shuffle=True, random_state=seed)
        return list(splitter.split(frame, groups=groups))
    assert roles.time_column is not None
    groups = None
    if strategy == "group_time":
        assert roles.group_column is not None
        groups = group_values(frame, roles.group_column).astype(str)
    found = list(_time_folds(frame, roles.time_column, k, gap, groups, seed))
    if len(found) < 2:
        raise PipelineError(
            f"cv: only {len(found)} time window(s) have training rows before them; "
            "lower cv.folds or split.gap"
        )
    return found


def corrected_interval(
    scores: list[float], n_train: float, n_test: float, confidence: float
) -> dict[str, float]:
    """Mean and Nadeau-Bengio corrected t interval of per-fold scores."""
    values = np.asarray(scores, dtype="float64")
    j = len(values)
    mean = float(values.mean())
    var = float(values.var(ddof=1)) if j > 1 else float("nan")
    corrected = var * (1.0 / j + n_test / n_train)
    half = float(stats.t.ppf((1 + confidence) / 2, j - 1)) * math.sqrt(corrected)
    return {
        "mean": round(mean, 6),
        "std": round(math.sqrt(var), 6),
        "ci_low": round(mean - half, 6),
        "ci_high": round(mean + half, 6),
    }
