"""Data and prediction drift with Evidently 0.7, normalised to be byte-stable.

Evidently does the statistics (per-column method chosen by column type and
row count, its thresholds and its HTML report). This module only prepares
typed frames, adds the model's prediction as a column, and makes the
outputs deterministic:

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

from tabular_pipeline.config import DataConfig, DriftGateConfig
from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

DIGITS = 6
PREDICTION = "prediction"
NUMERIC_KINDS = {"int", "float", "bool"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
METRIC_VAR = re.compile(r"metric_[0-9a-f]{32}")


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


def prepare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    data: DataConfig,
    pipeline: Any,
    max_rows: int,
    seed: int,
    served: str | None = None,
    source: str = "drift.current",
) -> tuple[pd.DataFrame, pd.DataFrame, Columns]:
    """Feature columns of both sides (target dropped), typed, plus the model's prediction.

    ``served`` names a column of ``current`` that already holds the prediction
    (monitoring: what the service answered); otherwise the model predicts it.
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
    for column in features:
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
    name = PREDICTION if PREDICTION not in features else f"model_{PREDICTION}"
    positive = None if data.positive_label is None else str(data.positive_label)
    ref[name] = _prediction(pipeline, ref[features], positive)
    cur[name] = (
        served_values
        if served_values is not None
        else _prediction(pipeline, cur[features], positive)
    )
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


def run_report(ref: pd.DataFrame, cur: pd.DataFrame, columns: Columns) -> DriftResult:
    """Evidently's DataDriftPreset with its per-column tests; one row per column."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=columns.numerical, categorical_columns=columns.categorical
    )
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    return DriftResult(html=_html(snapshot), columns=parse_snapshot(snapshot.dict()))


def _html(snapshot: Any) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        snapshot.save_html(str(path))
        return normalise_html(path.read_text(encoding="utf-8"))


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
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
                "score": round(float(metric["value"]), DIGITS),
                "drifted": status.get(metric["id"]) == "FAIL",
            }
        )
    return sorted(rows, key=lambda r: r["column"])


def summarise(
    columns: list[dict[str, Any]],
    prediction: str | None,
    gate: DriftGateConfig,
    key: str = "drift.gate",
) -> dict[str, Any]:
    """Share of drifted feature columns, prediction drift, and the gate's violations."""
    features = [c for c in columns if c["column"] != prediction]
    drifted = [c["column"] for c in features if c["drifted"]]
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
    return (
        f"{what} {info['column']!r} drifted: {info['method']} {info['score']:.4f} "
        f"(threshold {info['threshold']})"
    )


def headline(summary: dict[str, Any], gate: DriftGateConfig) -> dict[str, Any]:
    """The few numbers `dvc exp show` and `dvc metrics diff` carry."""
    pred = summary["prediction"] or {}
    return {
        "drift_share": summary["drift_share"],
        "n_drifted": summary["n_drifted"],
        "prediction_drifted": summary["prediction_drifted"],
        "prediction_score": pred.get("score"),
        "gate_passed": not summary["gate_failures"],
        "max_drift_share": gate.max_drift_share,
        "gate_failures": len(summary["gate_failures"]),
    }


def write_html(html: str, path: Path) -> None:
    from tabular_pipeline import stage

    stage.write_text(path, html)
