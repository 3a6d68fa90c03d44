"""The learning task (binary, multiclass or regression): declared, or inferred once.

Where the task is decided, and how later stages know it:

- ``ingest`` is the only stage that sees the raw target. It takes
  ``data.task`` when set (an explicit value always wins) and otherwise
  infers it with :func:`infer_task`, logging the decision in one line.
- It then writes the target in the task's type: text labels for
  classification (as always), float64 for regression. The ingested and split
  Parquet files therefore carry the task in the target's dtype, and every
  later stage reads it back with :func:`task_of_frame` from data it already
  declares as a DVC dependency: no extra file, deterministic, and free.
- ``validate`` refuses what cannot work (:func:`check_task`): a regression
  target that is not numeric, ``labels``/``positive_label`` on a regression
  config, a constant or empty target, a binary task with other than two labels.
- Stages after ``train`` may also ask the fitted model (:func:`task_of_model`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.errors import PipelineError

TASKS = ("binary", "multiclass", "regression")
CLASSIFICATION = ("binary", "multiclass")
# A numeric target with more distinct values than this is regression when the
# task is not declared (20: more classes than any sensible label set, fewer
# values than almost any quantity such as a price, a duration or a count).
MAX_CLASSES = 20


def check_declared(task: str | None) -> None:
    if task is not None and task not in TASKS:
        raise PipelineError(f"data.task: {task!r} is not one of {list(TASKS)} (or null: infer)")


def as_number(series: pd.Series) -> pd.Series | None:
    """The column as float64, or None when a present value is not a number."""
    if pd.api.types.is_bool_dtype(series):
        return None
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64")
    present = series.dropna()
    numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    if numbers.isna().any():
        return None
    out = pd.Series(np.nan, index=series.index, dtype="float64")
    out.loc[present.index] = numbers.astype("float64")
    return out


def infer_task(target: pd.Series, labels: list[Any], positive_label: Any) -> tuple[str, str]:
    """The task for an undeclared ``data.task``, and the reason in words for the log.

    Configured ``labels`` or ``positive_label`` mean classification; otherwise a
    numeric target with more than ``MAX_CLASSES`` distinct values is regression
    and anything else (text, few values) is classification.
    """
    present = target.dropna()
    distinct = int(present.nunique())
    if labels or positive_label is not None:
        task = "binary" if (len(labels) or distinct) == 2 else "multiclass"
        return task, "data.labels/positive_label are set"
    numbers = as_number(target)
    if numbers is not None and distinct > MAX_CLASSES:
        return "regression", f"numeric target with {distinct} distinct values (> {MAX_CLASSES})"
    kind = "numeric" if numbers is not None else "text"
    task = "binary" if distinct == 2 else "multiclass"
    return task, f"{kind} target with {distinct} distinct value(s)"


def resolve_task(
    declared: str | None, target: pd.Series, labels: list[Any], positive_label: Any
) -> tuple[str, str]:
    """``declared`` when set (it always wins), else the inferred task; plus the reason."""
    check_declared(declared)
    if declared is not None:
        return declared, "data.task"
    return infer_task(target, labels, positive_label)


def task_of_frame(frame: pd.DataFrame, target: str) -> str:
    """The task ingest resolved, read back from the target's dtype (see module docstring)."""
    if target not in frame.columns:
        raise PipelineError(f"target column {target!r} is not in the data")
    column = frame[target]
    if pd.api.types.is_float_dtype(column):
        return "regression"
    return "binary" if column.nunique() == 2 else "multiclass"


def is_regression(task: str) -> bool:
    return task == "regression"


def task_of_model(model: Any) -> str:
    """Regression for a fitted regressor (no ``classes_``), else binary/multiclass."""
    from sklearn.base import is_regressor

    if is_regressor(model) or not hasattr(model, "classes_"):
        return "regression"
    return "binary" if len(model.classes_) == 2 else "multiclass"


def check_task(
    task: str,
    frame: pd.DataFrame,
    target: str,
    labels: list[Any],
    positive_label: Any,
    count_classes: bool = True,
) -> list[str]:
    """Rule violations of the resolved task on an ingested table (one line each).

    ``count_classes`` checks a declared binary task has two labels (train
    only: a test table's unseen labels are the expectation suite's to report).
    """
    if target not in frame.columns:
        return []  # the expectation suite reports the missing column
    if frame.empty:
        return [
            f"column {target!r}: no row has a target value (ingest drops rows whose target "
            "is missing, or for regression not finite)"
        ]
    column = frame[target]
    problems: list[str] = []
    if task == "regression":
        if labels or positive_label is not None:
            problems.append(
                f"data.labels/data.positive_label apply to classification only; "
                f"data.task is regression (target {target!r}): remove them"
            )
        if not pd.api.types.is_float_dtype(column):
            sample = column.dropna().astype(str).head(3).tolist()
            problems.append(
                f"column {target!r}: a regression target must be numeric "
                f"(values such as {sample} are not numbers)"
            )
            return problems
    present = column.dropna()
    if len(present) == 0:
        problems.append(f"column {target!r}: the target has no usable values (all missing)")
    elif present.nunique() < 2 and count_classes:
        problems.append(
            f"column {target!r}: the target is constant ({present.iloc[0]!r}): nothing to learn"
        )
    elif task == "binary" and count_classes and present.nunique() != 2:
        problems.append(
            f"column {target!r}: data.task is binary but the target has "
            f"{present.nunique()} distinct labels"
        )
    return problems
