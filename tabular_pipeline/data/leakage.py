"""Leakage checks on the splits: what makes a test metric better than new data would.

Each check returns ``Finding``s; a failing one is one line naming the column
or count, the threshold and the fix. The references are deepchecks' train-test
suite (TrainTestSamplesMix: duplicate rows across sets <= 5 %; IndexTrainTest
Leakage and date overlap <= 0; identifier-label correlation) and skore's checks
(SKD011 "golden feature", SKD013 time-ordered data with a random split).

Everything runs on seeded samples of at most ``sample_rows`` rows per split,
so the gate costs seconds at 5 M rows too.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score, roc_auc_score

from tabular_pipeline.data.split import Roles, time_values
from tabular_pipeline.data.task import task_of_frame

log = logging.getLogger(__name__)

# Quantile bins of a numeric feature in the single-feature check: a step
# function this fine reaches R^2 ~0.99 on a noisy copy of the target.
SCORE_BINS = 100
ID_NAME = re.compile(r"(^|_)(id|uuid|guid|key)$", re.IGNORECASE)
DATE_NAME = re.compile(r"(^|_)(date|time|timestamp|datetime|year|month|day)s?($|_)", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    check: str
    passed: bool
    message: str
    value: Any = None
    threshold: Any = None
    severity: str = "fail"  # fail | warn


def sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=seed)


def duplicate_rows(
    train: pd.DataFrame, test: pd.DataFrame, features: list[str], max_share: float
) -> Finding:
    """Share of test rows whose feature values appear as a train row (hashes, vectorised)."""
    cols = [c for c in features if c in test.columns and c in train.columns]
    seen = pd.util.hash_pandas_object(train[cols], index=False)
    probe = pd.util.hash_pandas_object(test[cols], index=False)
    count = int(probe.isin(seen.to_numpy()).sum())
    share = count / max(len(test), 1)
    passed = share <= max_share
    return Finding(
        "duplicate_rows",
        passed,
        f"{count} of {len(test)} test rows ({share:.1%}) repeat a training row's features; "
        f"threshold split.leakage.max_duplicate_share={max_share}"
        + ("" if passed else "; drop duplicates before splitting or split by the entity (group)"),
        round(share, 6),
        max_share,
    )


def shared_groups(splits: dict[str, pd.DataFrame], column: str) -> Finding:
    """Groups present in more than one split (must be none)."""
    sets = {name: set(frame[column].dropna().astype(str)) for name, frame in splits.items()}
    names = list(sets)
    shared: set[str] = set()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared |= sets[a] & sets[b]
    examples = sorted(shared)[:3]
    return Finding(
        "shared_groups",
        not shared,
        f"{len(shared)} value(s) of group column {column!r} are in two splits (e.g. {examples}); "
        "threshold 0; use split.strategy=group (or group_time)"
        if shared
        else f"no value of {column!r} is in two splits",
        len(shared),
        0,
    )


def time_order(splits: dict[str, pd.DataFrame], column: str, gap: Any, given_test: bool) -> Finding:
    """Every train time + gap must precede every later split's time."""
    times = {n: time_values(f, column) for n, f in splits.items() if len(f)}
    order = ["train", "valid"] + ([] if given_test else ["test"])
    problems = []
    for earlier, later in itertools.pairwise(order):
        if earlier in times and later in times and times[earlier].max() + gap > times[later].min():
            problems.append(
                f"{earlier} ends at {times[earlier].max()} (+ gap {gap}) after {later} "
                f"starts at {times[later].min()}"
            )
    return Finding(
        "time_order",
        not problems,
        f"time column {column!r}: "
        + "; ".join(problems)
        + "; threshold 0 overlap; use split.strategy=time and check split.test_start/valid_start"
        if problems
        else f"train, valid{'' if given_test else ', test'} follow each other in {column!r}",
        len(problems),
        0,
    )


def id_like_columns(frame: pd.DataFrame, features: list[str], min_rows: int = 20) -> list[str]:
    """Features that identify rows: text unique per row, an integer row number, or an id name."""
    found: list[str] = []
    n = len(frame)
    if n < min_rows:
        return found
    for column in features:
        values = frame[column]
        unique = values.nunique(dropna=True) == n
        if not unique:
            continue
        numeric = pd.api.types.is_numeric_dtype(values)
        integer = pd.api.types.is_integer_dtype(values)
        row_number = integer and int(values.max()) - int(values.min()) + 1 == n
        if not numeric or row_number or ID_NAME.search(column):
            found.append(column)
    return found


def id_columns_used(frame: pd.DataFrame, features: list[str]) -> Finding:
    found = id_like_columns(frame, features)
    return Finding(
        "id_columns",
        not found,
        f"column(s) {found} look like identifiers (unique per row) and would be model features; "
        "threshold 0; list them in data.id_columns (kept, never a feature) or data.drop"
        if found
        else "no identifier-like feature",
        found,
        [],
    )


def _numbers(series: pd.Series) -> np.ndarray:
    return np.asarray(series.astype("float64"), dtype="float64")


def _encode(train: pd.Series, other: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes >= 0 shared by both sides: quantile bins of a number, values of text.

    Code 0 is missing (missingness itself can leak), 1 a value unseen in training.
    """
    if pd.api.types.is_numeric_dtype(train) and not pd.api.types.is_bool_dtype(train):
        x, z = _numbers(train), _numbers(other)
        present = x[~np.isnan(x)]
        if present.size == 0:
            return np.zeros(len(x), dtype=np.int64), np.zeros(len(z), dtype=np.int64)
        edges = np.unique(np.quantile(present, np.linspace(0, 1, SCORE_BINS + 1)[1:-1]))
        return (
            np.where(np.isnan(x), 0, np.digitize(x, edges) + 2),
            np.where(np.isnan(z), 0, np.digitize(z, edges) + 2),
        )
    values = pd.Index(pd.unique(train.dropna()))
    codes_train = values.get_indexer(train) + 2
    codes_other = values.get_indexer(other) + 2
    codes_train[train.isna().to_numpy()] = 0
    codes_other = np.where(other.isna().to_numpy(), 0, np.where(codes_other == 1, 1, codes_other))
    return codes_train.astype(np.int64), codes_other.astype(np.int64)


@dataclass(frozen=True)
class Target:
    """The target of both sides, encoded once for every feature's score."""

    task: str
    train: np.ndarray  # float values (regression) or class codes
    valid: np.ndarray
    classes: int

    @classmethod
    def of(cls, train: pd.Series, valid: pd.Series, task: str) -> Target:
        if task == "regression":
            return cls(task, _numbers(train), _numbers(valid), 0)
        # pd.factorize hashes (no sort of strings); unseen valid labels are dropped.
        codes, uniques = pd.factorize(train.astype(str))
        index = pd.Index(uniques)
        return cls(task, codes, index.get_indexer(valid.astype(str)), len(uniques))


def single_feature_score(train: pd.Series, valid: pd.Series, y: Target) -> float:
    """Validation score of the best step function of one feature (its bins' training means).

    R^2 for regression, ROC AUC (one-vs-rest macro for multiclass) for
    classification. A bin or category unseen in training predicts the
    training mean, so the score is honest. Counted with ``np.bincount``.
    """
    codes_train, codes_valid = _encode(train, valid)
    size = int(max(codes_train.max(initial=0), codes_valid.max(initial=0))) + 1
    counts = np.bincount(codes_train, minlength=size).astype("float64")
    seen = counts > 0
    safe = np.where(seen, counts, 1.0)
    if y.task == "regression":
        sums = np.bincount(codes_train, weights=y.train, minlength=size)
        means = np.where(seen, sums / safe, float(y.train.mean()))
        return float(r2_score(y.valid, means[codes_valid]))
    k = y.classes
    table = np.bincount(codes_train * k + y.train, minlength=size * k).reshape(size, k)
    prior = np.bincount(y.train, minlength=k) / len(y.train)
    rates = np.where(seen[:, None], table / safe[:, None], prior)
    known = y.valid >= 0
    proba, labels = rates[codes_valid[known]], y.valid[known]
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if k == 2:
        return float(roc_auc_score(labels == 1, proba[:, 1]))
    sub = proba[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    mask = np.isin(labels, present)
    return float(roc_auc_score(labels[mask], sub[mask], multi_class="ovr", labels=present))


def golden_features(
    train: pd.DataFrame, valid: pd.DataFrame, features: list[str], target: str, max_score: float
) -> tuple[Finding, dict[str, float]]:
    """A single feature that alone predicts the target almost perfectly (a leaked column)."""
    task = task_of_frame(train, target)
    y = Target.of(train[target], valid[target], task)
    scores = {c: single_feature_score(train[c], valid[c], y) for c in features}
    metric = "R^2" if task == "regression" else "ROC AUC"
    bad = {c: s for c, s in scores.items() if s == s and s >= max_score}
    best = max((s for s in scores.values() if s == s), default=float("nan"))
    message = (
        "; ".join(
            f"feature {c!r} alone scores {metric} {s:.4f} on the validation split"
            for c, s in bad.items()
        )
        + f"; threshold split.leakage.max_single_feature_score={max_score}; if it is computed "
        "from the target or known only after it, add it to data.drop"
        if bad
        else f"best single feature {metric} {best:.4f} < {max_score}"
    )
    return Finding("single_feature", not bad, message, round(best, 6), max_score), scores


def date_like_columns(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Datetime columns, and columns named like dates (date, time, year, ...)."""
    return [
        c for c in columns if pd.api.types.is_datetime64_any_dtype(frame[c]) or DATE_NAME.search(c)
    ]


def random_split_on_dates(frame: pd.DataFrame, columns: list[str]) -> Finding | None:
    found = date_like_columns(frame, columns)
    if not found:
        return None
    return Finding(
        "date_with_random_split",
        True,
        f"column(s) {found} look like dates but the split is random: if rows are ordered in "
        "time, declare data.time_column and use split.strategy=time (skore SKD013)",
        found,
        None,
        severity="warn",
    )


def check_splits(
    splits: dict[str, pd.DataFrame],
    *,
    target: str,
    roles: Roles,
    strategy: str,
    given_test: bool,
    gap: Any,
    max_duplicate_share: float,
    max_single_feature_score: float,
    sample_rows: int,
    seed: int,
) -> tuple[list[Finding], dict[str, float]]:
    """Every check that applies; the caller fails on any failed finding."""
    train = sample(splits["train"], sample_rows, seed)
    valid = sample(splits["valid"], sample_rows, seed)
    test = sample(splits["test"], sample_rows, seed)
    features = [c for c in train.columns if c != target and c not in roles.non_features()]
    findings = [duplicate_rows(splits["train"], test, features, max_duplicate_share)]
    # A time split of known entities puts each entity on both sides by design
    # (its future is the question); every other strategy must keep them apart.
    if roles.group_column and strategy != "time":
        findings.append(shared_groups(splits, roles.group_column))
    if roles.time_column and strategy in ("time", "group_time"):
        findings.append(time_order(splits, roles.time_column, gap, given_test))
    findings.append(id_columns_used(train, features))
    golden, scores = golden_features(train, valid, features, target, max_single_feature_score)
    findings.append(golden)
    if strategy in ("random", "stratified"):
        warning = random_split_on_dates(
            train, features + ([roles.time_column] if roles.time_column else [])
        )
        if warning is not None:
            findings.append(warning)
    return findings, scores


def report(findings: list[Finding], scores: dict[str, float]) -> dict[str, Any]:
    return {
        "passed": all(f.passed for f in findings),
        "checks": [asdict(f) for f in findings],
        "single_feature_scores": {c: round(s, 6) for c, s in sorted(scores.items())},
    }


def _parses_as_dates(series: pd.Series, probe: int = 200) -> bool:
    present = series.dropna().astype(str).head(probe)
    if present.empty or present.str.fullmatch(r"[-+]?\d+(\.\d+)?").all():
        return False  # plain numbers are not dates (pandas would read them as nanoseconds)
    parsed = pd.to_datetime(present, errors="coerce", format="mixed")
    return bool(parsed.notna().mean() >= 0.95)


def propose_roles(frame: pd.DataFrame, target: str) -> dict[str, list[str]]:
    """Candidate time, group and id columns for `make schema` to propose (never to apply).

    time: datetime columns, text that parses as dates, integers named like a
    date (``year``). group: a repeated value that, with a time candidate,
    identifies each row (an entity measured over time), or a repeated ``*_id``.
    id: a feature that identifies rows (see ``id_like_columns``).
    """
    columns = [c for c in frame.columns if c != target]
    time = [
        c
        for c in columns
        if pd.api.types.is_datetime64_any_dtype(frame[c])
        or (pd.api.types.is_integer_dtype(frame[c]) and DATE_NAME.search(c))
        or (not pd.api.types.is_numeric_dtype(frame[c]) and _parses_as_dates(frame[c]))
    ]
    ids = id_like_columns(frame, columns)
    group = []
    for c in columns:
        if c in time or c in ids or pd.api.types.is_float_dtype(frame[c]):
            continue
        distinct = frame[c].nunique(dropna=True)
        if not 2 <= distinct <= len(frame) // 2:
            continue
        panel = any(not frame.duplicated([c, t]).any() for t in time)
        if panel or ID_NAME.search(c):
            group.append(c)
    return {"time_column": time, "group_column": group, "id_columns": ids}
