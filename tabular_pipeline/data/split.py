"""Train/valid/test splits that respect a given test set."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from tabular_pipeline.data.task import task_of_frame
from tabular_pipeline.errors import PipelineError

# A continuous target cannot be stratified on; its deciles can (split.stratify).
QUANTILE_BINS = 10


def strata(frame: pd.DataFrame, target: str) -> pd.Series:
    """Classification: the labels. Regression: the target's quantile bin (deciles).

    Stratifying on deciles keeps the target's distribution alike in every
    split, which matters for small data with a skewed target (prices).
    """
    if task_of_frame(frame, target) != "regression":
        return frame[target]
    bins = pd.qcut(frame[target], q=QUANTILE_BINS, labels=False, duplicates="drop")
    return bins.astype("int64")


def _split(
    frame: pd.DataFrame, size: float, target: str, stratify: bool, seed: int, what: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not 0.0 < size < 1.0:
        raise PipelineError(f"split.{what}: must be between 0 and 1, got {size}")
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


def make_splits(
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    target: str,
    valid_size: float,
    test_size: float,
    stratify: bool,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Carve valid (and test, when none is given) out of ``train``, deterministically."""
    if test is None:
        train, test = _split(train, test_size, target, stratify, seed, "test_size")
    else:
        test = test.reset_index(drop=True)
    train, valid = _split(train, valid_size, target, stratify, seed, "valid_size")
    return {"train": train, "valid": valid, "test": test}
