"""Data and prediction drift with Evidently 0.7, normalised to be byte-stable.

Evidently does the statistics (its per-column tests and HTML report). This
module prepares typed frames, adds the model's prediction as a column,
chooses the per-column test by batch size (:func:`plan`), weighs drifted
columns by the model's importance, and makes the outputs deterministic:

- the HTML carries random widget ids (uuid7, time-based) and a random
  ``metric_<hex>`` variable name: both are renumbered in order of appearance;
- scores differ in the last digits with the string hash seed (Evidently sums
  over Python sets of categories): dvc.yaml runs the stage with
  ``PYTHONHASHSEED=0``, :func:`check_hash_seed` refuses any other, and the
  JSON is rounded.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.config import DataConfig, DriftGateConfig, DriftTestsConfig
from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DIGITS = 6
PREDICTION = "prediction"
NUMERIC_KINDS = {"int", "float", "bool"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
METRIC_VAR = re.compile(r"metric_[0-9a-f]{32}")
OTHER = "(other)"
MISSING = "(missing)"
# Evidently's display names of the methods :func:`plan` pins (its snapshot
# stores the name it was given).
METHOD_NAMES = {
    "ks": "K-S p_value",
    "chisquare": "chi-square p_value",
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance",
}


def check_hash_seed(hash_randomization: int = sys.flags.hash_randomization) -> None:
    """Refuse to run with a random string hash seed: the outputs' last digits would vary.

    dvc.yaml runs the stage as ``PYTHONHASHSEED=0 python -m stages.drift``
    (the seed must be set before Python starts). Failing loudly keeps a
    direct ``python -m stages.drift`` from writing outputs that differ from
    ``dvc repro``'s by a few digits and look like real drift.
    """
    if hash_randomization:
        raise PipelineError(
            "drift needs PYTHONHASHSEED=0 for byte-identical outputs (Evidently sums over "
            "Python sets): run `dvc repro drift`, or `PYTHONHASHSEED=0 python -m stages.drift`"
        )


@dataclass
class Columns:
    numerical: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    prediction: str | None = None


@dataclass
class DriftResult:
    html: str
    columns: list[dict[str, Any]]
    tests: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """The per-column tests for one batch: Evidently's method names and threshold."""

    small: bool
    num_method: str
    cat_method: str
    threshold: float | None  # None: Evidently's default per method (0.1 for the distances)
    rows: int
    n_columns: int

    def describe(self) -> dict[str, Any]:
        return {
            "batch_rows": self.rows,
            "kind": "p-value tests (small batch)" if self.small else "distances (large batch)",
            "numerical": self.num_method,
            "categorical": self.cat_method,
            "threshold": self.threshold,
            "columns_tested": self.n_columns,
        }


# The chi-square test takes the reference's shares as exact: its statistic
# grows by about 1 + batch/reference rows, so small batches get p-value tests
# only against a reference at least this many times larger (Adult: 6,513
# validation rows, batches up to 651 rows).
REFERENCE_RATIO = 10


def plan(
    rows: int, n_columns: int, tests: DriftTestsConfig, reference_rows: int | None = None
) -> Plan:
    """Small batches get p-value tests at a Bonferroni level, large ones distances.

    A distance between a few hundred rows and the reference is biased upward
    by sampling alone (Jensen-Shannon of 300 draws from Adult's 40-country
    column is above 0.1 in every batch), so a fixed distance threshold fires
    on clean traffic. A p-value test is calibrated at every size by
    construction; Bonferroni (alpha / columns) bounds the chance that *any*
    column of a clean batch is flagged by alpha. On large batches the
    opposite holds (every tiny, harmless difference is significant), so they
    keep Evidently's distances and its default effect-size threshold.
    Evidently makes the same switch on the reference's size (<= 1000 rows);
    the noisy side here is the batch. A reference less than REFERENCE_RATIO
    times the batch keeps the distances (the chi-square would overstate).
    """
    big_reference = reference_rows is None or reference_rows >= REFERENCE_RATIO * rows
    if rows <= tests.small_batch_rows and big_reference:
        threshold = round(tests.alpha / max(n_columns, 1), 8)
        return Plan(True, "ks", "chisquare", threshold, rows, n_columns)
    return Plan(False, "wasserstein", "jensenshannon", None, rows, n_columns)


def merge_rare(
    ref: pd.Series, cur: pd.Series, rows: int, min_expected: float
) -> tuple[pd.Series, pd.Series, list[str]]:
    """Categories expected fewer than ``min_expected`` times in the batch become one level.

    The chi-square approximation needs an expected count of about 5 per cell;
    Adult's native_country has 40 categories, 30 of them below 1 % of rows,
    so at 300 rows most cells are expected 0-2 times and the test would fire
    on a single rare country. Categories absent from the reference (a new
    value) also go to the merged level, so a surge of them still shows as a
    rise of its share. Missing values are a level of their own (a change of
    the missing rate is drift too). The merged level is itself brought up to
    ``min_expected`` by folding in the smallest kept categories.
    """
    ref = ref.astype(object).where(ref.notna(), MISSING)
    cur = cur.astype(object).where(cur.notna(), MISSING)
    # Ascending share, ties by name: the merge is deterministic.
    share = ref.value_counts(normalize=True).sort_index(key=lambda i: i.astype(str))
    share = share.sort_values(kind="stable")
    expected = share * rows
    keep = list(share.index[expected >= min_expected])
    merged = expected[expected < min_expected].sum()
    unseen = not set(cur.unique()) <= set(share.index)
    # The merged level needs the same minimum: a level expected 0.2 times
    # (Adult's Without-pay and Never-worked) makes one such row "drift".
    # Fold the smallest kept categories into it until it has it.
    while (merged > 0 or unseen) and merged < min_expected and len(keep) > 1:
        merged += expected[keep.pop(0)]
    rare = sorted(str(c) for c in share.index if c not in set(keep))
    if not rare and not unseen:
        return ref, cur, []
    kept = set(keep)
    return ref.where(ref.isin(kept), OTHER), cur.where(cur.isin(kept), OTHER), rare


def read_batch(path: Path, data: DataConfig, task: str | None = None) -> pd.DataFrame:
    """A current batch (CSV or Parquet) normalised like ingest: names, labels, types."""
    from tabular_pipeline.data import ingest, reader

    frame = reader.read_user_table(path, data.source.read, label="drift.current")
    names = {ingest.normalize_name(data.rename.get(c, c)) for c in frame.columns}
    typed = reader.table_format(path) == "parquet"
    if data.target in names:
        return ingest.normalize(frame, data, str(path), typed, task=task)
    # A prediction log has no label: ingest's "target missing" warning is noise here.
    quiet = logging.getLogger(ingest.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return ingest.normalize(frame, data, str(path), typed, task=task)
    finally:
        quiet.setLevel(level)


def _kind(frame: pd.DataFrame, column: str, declared: dict[str, str]) -> str:
    kind = declared.get(column)
    if kind == "datetime" or pd.api.types.is_datetime64_any_dtype(frame[column]):
        return "numerical"  # compared as seconds since the epoch (see prepare)
    if kind is not None:
        return "numerical" if kind in NUMERIC_KINDS else "categorical"
    return "numerical" if pd.api.types.is_numeric_dtype(frame[column]) else "categorical"


def _sample(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)


def _prediction(pipeline: Any, frame: pd.DataFrame, positive: str | None) -> pd.Series:
    """Binary: probability of the positive class (numeric); regression: the predicted
    value (numeric); multiclass: the predicted label."""
    from tabular_pipeline.models.modeling import predict_proba, predict_values

    if not hasattr(pipeline, "classes_"):
        return pd.Series(predict_values(pipeline, frame, ""), index=frame.index)
    proba, classes = predict_proba(pipeline, frame, "")
    return prediction_column(proba, classes, positive, frame.index)


def prediction_column(
    proba: np.ndarray, classes: list[str], positive: str | None, index: Any = None
) -> pd.Series:
    """Binary: probability of the positive class (numeric); else the predicted label.

    Shared by the drift stage (re-predicted) and monitoring (served, from the log).
    """
    if len(classes) == 2:
        col = classes.index(positive) if positive in classes else 1
        return pd.Series(proba[:, col], index=index)
    return pd.Series(np.asarray(classes)[proba.argmax(axis=1)], index=index)


def _model_frame(frame: pd.DataFrame, data: DataConfig) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if _kind(frame, column, data.types) == "categorical":
            values = out[column].astype(object)
            out[column] = values.where(values.notna(), np.nan)
    return out


def prepare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    data: DataConfig,
    pipeline: Any,
    max_rows: int,
    seed: int,
    served: str | None = None,
    source: str = "drift.current",
    reference_prediction: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, Columns]:
    """Feature columns of both sides (target dropped), typed, plus the model's prediction.

    ``served`` names a column of ``current`` that already holds the prediction
    (monitoring: what the service answered); otherwise the model predicts it.
    ``reference_prediction`` (the model's predictions on the sampled
    reference, from an earlier call) saves predicting it again.
    """
    # Group and id columns are kept in the splits but are no features: the service
    # never receives them, and a group split makes them drift by design.
    not_features = {data.target, data.group_column, *data.id_columns}
    features = [c for c in reference.columns if c not in not_features]
    missing = [c for c in features if c not in current.columns]
    if missing:
        raise PipelineError(
            f"{source}: missing feature column(s) {missing}; "
            f"a batch needs every training feature ({features})"
        )
    ref = _sample(reference[features], max_rows, seed)
    cur = _sample(current[features + ([served] if served else [])], max_rows, seed)
    served_values = cur.pop(served) if served else None
    # The model predicts categories as text with NaN for missing (as the
    # service's rows_to_frame does): sklearn's imputer takes neither None
    # (the object copies below, for Evidently, would change 7 % of Adult's
    # predictions) nor pd.NA (a batch read through ingest).
    name = PREDICTION if PREDICTION not in features else f"model_{PREDICTION}"
    positive = None if data.positive_label is None else str(data.positive_label)
    ref_pred = (
        reference_prediction.set_axis(ref.index)
        if reference_prediction is not None
        else _prediction(pipeline, _model_frame(ref, data), positive)
    )
    cur_pred = (
        served_values
        if served_values is not None
        else _prediction(pipeline, _model_frame(cur, data), positive)
    )
    for column in features:
        if pd.api.types.is_datetime64_any_dtype(ref[column]):
            for side in (ref, cur):
                moments = pd.to_datetime(side[column], errors="coerce")
                side[column] = (moments - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
        if _kind(ref, column, data.types) == "categorical":
            # Same dtype on both sides: a category dtype with different
            # categories would make Evidently treat the sides differently.
            ref[column] = ref[column].astype(object).where(ref[column].notna(), None)
            cur[column] = cur[column].astype(object).where(cur[column].notna(), None)
    cols = Columns()
    for column in features:
        target = (
            cols.numerical if _kind(ref, column, data.types) == "numerical" else cols.categorical
        )
        target.append(column)
    ref[name] = ref_pred
    cur[name] = cur_pred
    (cols.numerical if pd.api.types.is_numeric_dtype(ref[name]) else cols.categorical).append(name)
    cols.prediction = name
    return ref, cur, cols


def normalise_html(html: str) -> str:
    """Renumber Evidently's random widget ids and metric variable, in order of appearance."""
    ids: dict[str, str] = {}
    html = UUID.sub(
        lambda m: ids.setdefault(m.group(0), f"00000000-0000-0000-0000-{len(ids):012d}"), html
    )
    names: dict[str, str] = {}
    return METRIC_VAR.sub(lambda m: names.setdefault(m.group(0), f"metric_{len(names):032d}"), html)


def run_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    columns: Columns,
    tests: DriftTestsConfig,
    html: bool = True,
) -> DriftResult:
    """Evidently's DataDriftPreset with the batch's per-column tests; one row per column.

    ``html=False`` skips the (slow, 4 MB) HTML: the bench runs hundreds of batches.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    chosen = plan(len(cur), len(columns.numerical) + len(columns.categorical), tests, len(ref))
    merged: dict[str, list[str]] = {}
    if chosen.small:
        ref, cur = ref.copy(), cur.copy()
        for column in columns.categorical:
            ref[column], cur[column], rare = merge_rare(
                ref[column], cur[column], len(cur), tests.min_expected
            )
            if rare:
                merged[column] = rare
    definition = DataDefinition(
        numerical_columns=columns.numerical, categorical_columns=columns.categorical
    )
    preset = DataDriftPreset(
        num_method=chosen.num_method, cat_method=chosen.cat_method, threshold=chosen.threshold
    )
    snapshot = Report([preset], include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    rows = parse_snapshot(snapshot.dict())
    described = chosen.describe() | {
        "merged_categories": {k: len(v) for k, v in sorted(merged.items())}
    }
    return DriftResult(html=_html(snapshot) if html else "", columns=rows, tests=described)


def _html(snapshot: Any) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        snapshot.save_html(str(path))
        return normalise_html(path.read_text(encoding="utf-8"))


def _round(value: float) -> float:
    """6 decimals; a tiny p-value keeps 3 significant digits instead of becoming 0."""
    if value != 0 and abs(value) < 1e-3:
        return float(f"{value:.3g}")
    return round(value, DIGITS)


def parse_snapshot(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-column method, threshold, score and Evidently's own drift verdict (test status)."""
    status = {
        t["metric_config"]["metric_id"]: t["status"]
        for t in snap.get("tests", [])
        if t.get("metric_config", {}).get("params", {}).get("type", "").endswith("ValueDrift")
    }
    rows = []
    for metric in snap.get("metrics", []):
        cfg = metric.get("config", {})
        if not str(cfg.get("type", "")).endswith(":ValueDrift"):
            continue
        rows.append(
            {
                "column": cfg["column"],
                "method": METHOD_NAMES.get(cfg.get("method"), cfg.get("method")),
                "threshold": cfg.get("threshold"),
                "score": _round(float(metric["value"])),
                "drifted": status.get(metric["id"]) == "FAIL",
            }
        )
    return sorted(rows, key=lambda r: r["column"])


def read_importance(path: Path) -> dict[str, float]:
    """Each feature's share of the model's mean |SHAP| (explain's importance table).

    Shares, not raw values: log-odds and target units differ between models,
    a share of the total means the same for all of them.
    """
    if not path.is_file():
        raise PipelineError(
            f"{path}: the model's feature importance (explain.importance_out) is missing; "
            "the drift gate weighs drifted features by it: run `dvc repro explain`"
        )
    table = pd.read_csv(path)
    value = [c for c in table.columns if c != "feature"]
    if "feature" not in table.columns or not value:
        raise PipelineError(
            f"{path}: expected columns feature,<importance>; got {list(table.columns)}"
        )
    scores = table.set_index("feature")[value[0]].astype(float).abs()
    total = float(scores.sum())
    if not total > 0:
        return {str(k): 0.0 for k in scores.index}
    return {str(k): round(float(v) / total, DIGITS) for k, v in scores.items()}


def summarise(
    columns: list[dict[str, Any]],
    prediction: str | None,
    gate: DriftGateConfig,
    key: str = "drift.gate",
    importance: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Drifted columns (most important first), prediction drift, and the gate's violations.

    ``importance`` (feature -> share of mean |SHAP|) adds the importance gate;
    a column the model does not use has share 0.
    """
    if importance is not None:
        for c in columns:
            if c["column"] != prediction:
                c["importance"] = importance.get(c["column"], 0.0)
    features = [c for c in columns if c["column"] != prediction]
    ranked = sorted(
        (c for c in features if c["drifted"]),
        key=lambda c: (-c.get("importance", 0.0), c["column"]),
    )
    drifted = [c["column"] for c in ranked]
    pred = next((c for c in columns if c["column"] == prediction), None)
    share = round(len(drifted) / len(features), DIGITS) if features else 0.0
    by_name = {c["column"]: c for c in columns}
    failures = []
    # Evidently's convention: the dataset drifts when *at least* this share drifts.
    if features and share >= gate.max_drift_share:
        failures.append(
            f"{len(drifted)} of {len(features)} feature columns drifted (share {share:.3f} >= "
            f"{key}.max_drift_share {gate.max_drift_share}): {', '.join(drifted)}"
        )
    for column in gate.critical_columns:
        info = by_name.get(column)
        if info is None:
            failures.append(f"critical column {column!r} is not in the data ({key})")
        elif info["drifted"]:
            failures.append(_column_line(info, "critical column"))
    if gate.prediction and pred is not None and pred["drifted"]:
        failures.append(_column_line(pred, "model predictions"))
    for info in ranked:
        if info["column"] in gate.critical_columns or "importance" not in info:
            continue
        if info["importance"] >= gate.min_importance:
            failures.append(
                _column_line(info, "feature") + f" >= {key}.min_importance {gate.min_importance}"
            )
    return {
        "n_columns": len(features),
        "n_drifted": len(drifted),
        "drift_share": share,
        "drifted_columns": drifted,
        "prediction_drifted": bool(pred and pred["drifted"]),
        "prediction": pred,
        "gate_failures": failures,
        "columns": columns,
    }


def _column_line(info: dict[str, Any], what: str) -> str:
    score = info["score"]
    shown = f"{score:.4f}" if score == 0 or abs(score) >= 1e-3 else f"{score:.2e}"
    line = (
        f"{what} {info['column']!r} drifted: {info['method']} {shown} "
        f"(threshold {info['threshold']})"
    )
    if "importance" in info:
        line += f", importance share {info['importance']:.3f}"
    return line


def headline(summary: dict[str, Any], gate: DriftGateConfig) -> dict[str, Any]:
    """The few numbers `dvc exp show` and `dvc metrics diff` carry."""
    pred = summary["prediction"] or {}
    return {
        "drift_share": summary["drift_share"],
        "n_drifted": summary["n_drifted"],
        "prediction_drifted": summary["prediction_drifted"],
        "prediction_method": pred.get("method"),
        "prediction_score": pred.get("score"),
        "gate_passed": not summary["gate_failures"],
        "max_drift_share": gate.max_drift_share,
        "gate_failures": len(summary["gate_failures"]),
    }


def write_html(html: str, path: Path) -> None:
    from tabular_pipeline import stage

    stage.write_text(path, html)
