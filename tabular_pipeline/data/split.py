"""Train/valid/test splits that respect a given test set, the data's groups and its time order.

Strategies (``split.strategy``):

- ``random`` / ``stratified``: a seeded shuffle (stratified on the labels, or
  the target's deciles for regression).
- ``group``: no value of ``data.group_column`` on two sides; sizes count
  groups (scikit-learn's ``GroupShuffleSplit``).
- ``time``: rows ordered by ``data.time_column``; test = rows at or after
  ``test_start``, valid = rows at or after ``valid_start`` and before the test
  cutoff minus ``gap``, train = rows before the valid cutoff minus ``gap``.
  Nothing is shuffled anywhere (PyCaret's time folds leaked because a shuffle
  stayed on). Rows inside a gap are left out (an embargo).
- ``group_time``: groups are drawn as in ``group``, and each side keeps only
  its own time window: unseen entities, in the future.
- ``auto``: ``group_time`` / ``time`` / ``group`` from the declared columns,
  else ``stratified`` or ``random`` by ``split.stratify``.

A source that ships its own test file keeps it: only valid is carved out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from tabular_pipeline.data.task import task_of_frame
from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# A continuous target cannot be stratified on; its deciles can (split.stratify).
QUANTILE_BINS = 10
STRATEGIES = ("auto", "random", "stratified", "group", "time", "group_time")


@dataclass(frozen=True)
class Roles:
    """The dataset's column roles (``data.time_column`` etc.) that a split honours."""

    time_column: str | None = None
    group_column: str | None = None
    id_columns: tuple[str, ...] = ()

    def non_features(self) -> list[str]:
        """Columns kept in the splits but never fed to a model (groups, ids)."""
        cols = [self.group_column, *self.id_columns]
        return [c for c in dict.fromkeys(cols) if c]


@dataclass(frozen=True)
class TimeCuts:
    """Cutoffs of a time split: dates/numbers, or None for fractions of the time range."""

    test_start: Any = None
    valid_start: Any = None
    gap: Any = 0


def resolve_strategy(strategy: str, roles: Roles, stratify: bool) -> str:
    """``auto`` follows the declared columns; an explicit strategy needs its column."""
    if strategy not in STRATEGIES:
        raise PipelineError(f"split.strategy: {strategy!r} is not one of {list(STRATEGIES)}")
    if strategy == "auto":
        if roles.time_column and roles.group_column:
            return "group_time"
        if roles.time_column:
            return "time"
        if roles.group_column:
            return "group"
        return "stratified" if stratify else "random"
    needs = {"group": ["group_column"], "time": ["time_column"]}
    needs["group_time"] = needs["group"] + needs["time"]
    for key in needs.get(strategy, []):
        if not getattr(roles, key):
            raise PipelineError(
                f"split.strategy={strategy} needs data.{key}; declare it in conf/data/<name>.yaml "
                "or choose split.strategy=random"
            )
    return strategy


def strata(frame: pd.DataFrame, target: str) -> pd.Series:
    """Classification: the labels. Regression: the target's quantile bin (deciles).

    Stratifying on deciles keeps the target's distribution alike in every
    split, which matters for small data with a skewed target (prices).
    """
    if task_of_frame(frame, target) != "regression":
        return frame[target]
    bins = pd.qcut(frame[target], q=QUANTILE_BINS, labels=False, duplicates="drop")
    return bins.astype("int64")


def _check_size(size: float, what: str) -> None:
    if not 0.0 < size < 1.0:
        raise PipelineError(f"split.{what}: must be between 0 and 1, got {size}")


def _split(
    frame: pd.DataFrame, size: float, target: str, stratify: bool, seed: int, what: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    _check_size(size, what)
    labels = strata(frame, target) if stratify else None
    if labels is not None:
        counts = labels.value_counts()
        if (counts < 2).any():
            rare = counts[counts < 2].index.tolist()
            raise PipelineError(
                f"split: cannot stratify on {target!r}: class(es)/bin(s) {rare} have fewer "
                "than 2 rows "
                "(set split.stratify=false or drop them)"
            )
    left, right = train_test_split(frame, test_size=size, random_state=seed, stratify=labels)
    return left.reset_index(drop=True), right.reset_index(drop=True)


def group_values(frame: pd.DataFrame, column: str) -> pd.Series:
    """The group column, refusing missing values (a missing entity cannot be kept apart)."""
    if column not in frame.columns:
        raise PipelineError(
            f"data.group_column: column {column!r} is not in the data; check the name "
            "(after data.rename) and that it is not in data.drop"
        )
    values = frame[column]
    missing = int(values.isna().sum())
    if missing:
        raise PipelineError(
            f"data.group_column {column!r}: {missing} row(s) have no group; fill or drop them"
        )
    return values


def _group_split(
    frame: pd.DataFrame, size: float, column: str, seed: int, what: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``size`` of the groups (not rows), all rows of a group on one side."""
    _check_size(size, what)
    groups = group_values(frame, column)
    if groups.nunique() < 2:
        raise PipelineError(
            f"split.strategy group: column {column!r} has {groups.nunique()} group(s); "
            "need at least 2"
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    left, right = next(splitter.split(frame, groups=groups.astype(str)))
    return (
        frame.iloc[np.sort(left)].reset_index(drop=True),
        frame.iloc[np.sort(right)].reset_index(drop=True),
    )


def time_values(frame: pd.DataFrame, column: str) -> pd.Series:
    """The time column as numbers or datetimes (text is parsed as dates)."""
    if column not in frame.columns:
        raise PipelineError(
            f"data.time_column: column {column!r} is not in the data; check the name "
            "(after data.rename) and that it is not in data.drop"
        )
    values = frame[column]
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values)):
        parsed = pd.to_datetime(values.astype("string"), errors="coerce")
        bad = values.notna() & parsed.isna()
        if bad.any():
            example = values[bad].astype(str).iloc[0]
            raise PipelineError(
                f"data.time_column {column!r}: value {example!r} is neither a number nor a date; "
                "fix the values or declare another time column"
            )
        values = parsed
    missing = int(values.isna().sum())
    if missing:
        raise PipelineError(
            f"data.time_column {column!r}: {missing} row(s) have no time; fill or drop them"
        )
    return values


def _as_point(value: Any, times: pd.Series, what: str) -> Any:
    """A configured cutoff in the time column's units."""
    if pd.api.types.is_datetime64_any_dtype(times):
        try:
            return pd.Timestamp(value)
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"split.{what}: {value!r} is not a date ({exc})") from None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PipelineError(
            f"split.{what}: {value!r} is not a number like the time column"
        ) from None


def as_gap(value: Any, times: pd.Series) -> Any:
    """``split.gap`` in the column's units: a number, or a duration ('30D', days if a number)."""
    if pd.api.types.is_datetime64_any_dtype(times):
        if isinstance(value, (int, float)):
            return pd.Timedelta(days=float(value))
        try:
            return pd.Timedelta(value)
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"split.gap: {value!r} is not a duration ({exc})") from None
    try:
        gap = float(value)
    except (TypeError, ValueError):
        raise PipelineError(f"split.gap: {value!r} is not a number like the time column") from None
    if gap < 0:
        raise PipelineError(f"split.gap: {gap} is negative; use 0 for no embargo")
    return gap


def _fraction_point(start: Any, end: Any, keep: float) -> Any:
    """The point ``keep`` of the way from start to end (a fraction of the time range)."""
    return start + (end - start) * keep


def time_cutoffs(
    times: pd.Series, cuts: TimeCuts, valid_size: float, test_size: float, has_test: bool
) -> tuple[Any, Any, Any]:
    """(valid_start, test_start, gap): given, or fractions of the time range when null."""
    gap = as_gap(cuts.gap, times)
    first, last = times.min(), times.max()
    test_start = None
    if not has_test:
        if cuts.test_start is not None:
            test_start = _as_point(cuts.test_start, times, "test_start")
        else:
            _check_size(test_size, "test_size")
            test_start = _fraction_point(first, last, 1 - test_size)
    if cuts.valid_start is not None:
        valid_start = _as_point(cuts.valid_start, times, "valid_start")
    else:
        _check_size(valid_size, "valid_size")
        end = last if test_start is None else test_start - gap
        valid_start = _fraction_point(first, end, 1 - valid_size)
    return valid_start, test_start, gap


def _time_masks(
    times: pd.Series, valid_start: Any, test_start: Any, gap: Any
) -> dict[str, pd.Series]:
    test = times >= test_start if test_start is not None else pd.Series(False, index=times.index)
    valid_end = test_start - gap if test_start is not None else None
    valid = times >= valid_start
    if valid_end is not None:
        valid &= times < valid_end
    train = times < valid_start - gap
    return {"train": train, "valid": valid, "test": test}


def _time_split(
    frame: pd.DataFrame,
    test: pd.DataFrame | None,
    column: str,
    cuts: TimeCuts,
    valid_size: float,
    test_size: float,
    groups_test: set[Any] | None = None,
    groups_valid: set[Any] | None = None,
    group_column: str | None = None,
) -> dict[str, pd.DataFrame]:
    times = time_values(frame, column)
    valid_start, test_start, gap = time_cutoffs(
        times, cuts, valid_size, test_size, test is not None
    )
    masks = _time_masks(times, valid_start, test_start, gap)
    if group_column is not None:
        groups = frame[group_column]
        in_test = groups.isin(groups_test or set())
        in_valid = groups.isin(groups_valid or set())
        masks["test"] &= in_test
        masks["valid"] &= in_valid
        masks["train"] &= ~in_test & ~in_valid
    # Stable order by time, never shuffled: ties keep the file's order.
    order = np.argsort(times.to_numpy(), kind="stable")
    out = {
        name: frame.iloc[order[mask.to_numpy()[order]]].reset_index(drop=True)
        for name, mask in masks.items()
    }
    if test is not None:
        out["test"] = test.reset_index(drop=True)
    left_out = len(frame) - sum(int(m.sum()) for m in masks.values())
    log.info(
        "time split on %r: valid from %s, test from %s, gap %s; %d row(s) left out "
        "(inside a gap%s)",
        column,
        valid_start,
        "the given test file" if test is not None else test_start,
        gap,
        left_out,
        ", or a group's rows outside its split's window" if group_column else "",
    )
    for name, part in out.items():
        if part.empty:
            raise PipelineError(
                f"split.strategy time: the {name} split is empty; move split.test_start/"
                "valid_start (or the fractions valid_size/test_size) or reduce split.gap"
            )
    return out


def make_splits(
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    target: str,
    valid_size: float,
    test_size: float,
    stratify: bool,
    seed: int,
    *,
    strategy: str = "auto",
    roles: Roles | None = None,
    cuts: TimeCuts | None = None,
) -> dict[str, pd.DataFrame]:
    """Carve valid (and test, when none is given) out of ``train``, deterministically."""
    roles = roles or Roles()
    cuts = cuts or TimeCuts()
    strategy = resolve_strategy(strategy, roles, stratify)
    if strategy in ("random", "stratified"):
        strat = strategy == "stratified"
        if test is None:
            train, test = _split(train, test_size, target, strat, seed, "test_size")
        else:
            test = test.reset_index(drop=True)
        train, valid = _split(train, valid_size, target, strat, seed, "valid_size")
        return {"train": train, "valid": valid, "test": test}
    if strategy == "group":
        assert roles.group_column is not None
        if test is None:
            train, test = _group_split(train, test_size, roles.group_column, seed, "test_size")
        else:
            test = test.reset_index(drop=True)
        train, valid = _group_split(train, valid_size, roles.group_column, seed, "valid_size")
        return {"train": train, "valid": valid, "test": test}
    assert roles.time_column is not None
    if strategy == "time":
        return _time_split(train, test, roles.time_column, cuts, valid_size, test_size)
    # group_time: groups drawn as in `group`, each side keeps its own time window.
    assert roles.group_column is not None
    column = roles.group_column
    rest, held = (
        (train, None)
        if test is not None
        else _group_split(train, test_size, column, seed, "test_size")
    )
    _, valid_part = _group_split(rest, valid_size, column, seed, "valid_size")
    groups_test = set(group_values(held, column)) if held is not None else set()
    return _time_split(
        train,
        test,
        roles.time_column,
        cuts,
        valid_size,
        test_size,
        groups_test=groups_test,
        groups_valid=set(valid_part[column]),
        group_column=column,
    )


def _json_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def summary(
    splits: dict[str, pd.DataFrame], strategy: str, roles: Roles, given_test: bool
) -> dict[str, Any]:
    """Rows, groups and time range of each split: what proves the ordering or disjointness."""
    parts: dict[str, Any] = {}
    for name, frame in splits.items():
        part: dict[str, Any] = {"rows": len(frame)}
        if roles.group_column and roles.group_column in frame.columns:
            part["groups"] = int(frame[roles.group_column].nunique())
        if roles.time_column and roles.time_column in frame.columns and len(frame):
            times = time_values(frame, roles.time_column)
            part["time_min"] = _json_value(times.min())
            part["time_max"] = _json_value(times.max())
        parts[name] = part
    return {
        "strategy": strategy,
        "test_source": "file" if given_test else "split",
        "time_column": roles.time_column,
        "group_column": roles.group_column,
        "id_columns": list(roles.id_columns),
        "splits": parts,
    }
