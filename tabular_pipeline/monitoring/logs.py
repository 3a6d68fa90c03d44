"""Read the service's rotated JSON-lines prediction logs back into a frame.

A log is written while it is read (the service appends, rotation renames),
so a torn or corrupt line is expected, not fatal: it is counted and skipped
with a warning naming the file and line. Rows are sorted by (time, id), so
the result does not depend on file order or rotation.

Sources: a file, a folder (every ``*.jsonl*`` file in it, rotated backups
included), a glob, or an fsspec URL such as ``s3://bucket/logs/*.jsonl*``
(s3fs comes with dvc-s3). A DVC-tracked folder is pulled first
(``dvc pull logs``), then read as a folder.

Two record kinds, one per task: a classifier's (``label`` and ``proba``) and
a regressor's (a numeric ``prediction``). Each line is checked against its
own kind; a batch of both kinds is refused (two models' logs in one batch).
"""

from __future__ import annotations

import glob
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

ID = "prediction_id"
REQUIRED = ("features", "proba", "label")
REGRESSION_REQUIRED = ("features", "prediction")
# Record kinds, named as the model's task family (data.task binary/multiclass
# is "classification").
CLASSIFICATION = "classification"
REGRESSION = "regression"
MAX_WARNINGS = 20  # per run; the total is always reported


@dataclass
class LogBatch:
    """Served rows (features), what was served (label, proba or prediction, variant, id),
    and skips."""

    features: pd.DataFrame
    # prediction_id, ts, variant, model_sha256, then label, proba (classification)
    # or prediction (regression, float)
    served: pd.DataFrame
    files: list[str]
    kind: str = CLASSIFICATION
    skipped: int = 0
    skipped_where: list[str] = field(default_factory=list)


def list_sources(source: str) -> list[str]:
    """The log files a source names, sorted; a clear error when there are none."""
    if "://" in source:
        import fsspec

        files = sorted(f.path for f in fsspec.open_files(source))
        protocol = source.split("://", 1)[0]
        found = [f if "://" in f else f"{protocol}://{f}" for f in files]
    else:
        path = Path(source)
        if path.is_dir():
            found = sorted(str(p) for p in path.glob("*.jsonl*") if p.is_file())
        elif path.is_file():
            found = [str(path)]
        else:
            found = sorted(p for p in glob.glob(source) if Path(p).is_file())
    if not found:
        raise PipelineError(
            f"monitor --logs {source}: no prediction log found (a file, a folder of *.jsonl* "
            "files or a glob; set serve.prediction_log.path and send traffic first)"
        )
    return found


def _lines(name: str) -> list[str]:
    if "://" in name:
        import fsspec

        with fsspec.open(name, "rb") as fh:
            raw = fh.read()
    else:
        raw = Path(name).read_bytes()
    return raw.decode("utf-8", errors="replace").splitlines()


def kind_of(record: dict[str, Any]) -> str:
    """A regressor's record has ``prediction``; anything else is read as a classifier's."""
    return REGRESSION if "prediction" in record else CLASSIFICATION


def _problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    if kind_of(record) == REGRESSION:
        return _regression_problem(record)
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing key(s) {missing}"
    if not isinstance(record["features"], dict) or not isinstance(record["proba"], list):
        return "features must be an object and proba a list"
    return None


def _regression_problem(record: dict[str, Any]) -> str | None:
    missing = [k for k in REGRESSION_REQUIRED if k not in record]
    if missing:
        return f"missing key(s) {missing}"
    value = record["prediction"]
    if not isinstance(record["features"], dict):
        return "features must be an object"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"prediction must be a finite number, got {value!r}"
    return None


def _check_kinds(source: str, first: dict[str, str]) -> str:
    """The batch's one record kind; both kinds: one error naming a line of each."""
    if len(first) > 1:
        raise PipelineError(
            f"monitor --logs {source}: the log mixes classification records (label/proba, "
            f"e.g. {first[CLASSIFICATION]}) and regression records (prediction, e.g. "
            f"{first[REGRESSION]}); monitor one model's logs at a time"
        )
    return next(iter(first))


def read_logs(source: str) -> LogBatch:
    """Every valid line of every file; bad lines are counted and named, never fatal."""
    files = list_sources(source)
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    first: dict[str, str] = {}  # kind -> where it was first seen
    for name in files:
        for number, line in enumerate(_lines(name), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                problem = _problem(record)
            except (ValueError, RecursionError) as exc:
                problem = f"not valid JSON ({getattr(exc, 'msg', exc)})"
            if problem is not None:
                where = f"{name}:{number}"
                if len(skipped) < MAX_WARNINGS:
                    log.warning("%s: skipped line: %s", where, problem)
                skipped.append(where)
                continue
            first.setdefault(kind_of(record), f"{name}:{number}")
            records.append(record)
    if len(skipped) > MAX_WARNINGS:
        log.warning("... %d skipped lines in all", len(skipped))
    if not records:
        raise PipelineError(
            f"monitor --logs {source}: no valid prediction lines in {len(files)} file(s)"
            + (f" ({len(skipped)} corrupt line(s) skipped)" if skipped else " (empty log)")
        )
    kind = _check_kinds(source, first)
    records.sort(key=lambda r: (float(r.get("ts") or 0.0), str(r.get(ID) or "")))
    features = pd.DataFrame([r["features"] for r in records])
    columns: dict[str, list[Any]] = {
        ID: [str(r.get(ID) or "") for r in records],
        "ts": [r.get("ts") for r in records],
        "variant": [r.get("variant") for r in records],
        "model_sha256": [r.get("model_sha256") for r in records],
    }
    if kind == REGRESSION:
        columns["prediction"] = [float(r["prediction"]) for r in records]
    else:
        columns["label"] = [str(r["label"]) for r in records]
        columns["proba"] = [r["proba"] for r in records]
    served = pd.DataFrame(columns)
    log.info(
        "%d prediction rows from %d file(s) (%s); %d line(s) skipped",
        len(records),
        len(files),
        source,
        len(skipped),
    )
    return LogBatch(features, served, files, kind, len(skipped), skipped)


def typed_like(features: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """JSON values in the reference's types: numbers numeric, categories as text."""
    out = features.copy()
    for column in out.columns:
        if column not in reference.columns:
            continue
        if pd.api.types.is_numeric_dtype(reference[column]):
            out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
        else:
            out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out


def read_labels(path: Path, target_name: str = "label", numeric: bool = False) -> pd.DataFrame:
    """A delayed-labels file: ``prediction_id,label`` (CSV or Parquet), ids unique.

    Read through the guarded reader (a damaged or mis-separated file is one
    line naming it), as text, so ids and labels are never turned into numbers
    by accident. ``numeric`` (regression): every label must be a finite
    number, returned as float; the first bad ones are named by line and id.
    """
    from tabular_pipeline.data.reader import read_user_table

    frame = read_user_table(
        path,
        {"dtype": str, "keep_default_na": False},
        label="monitor --labels",
        read_key="monitor --labels",
        min_columns=2,
    )
    missing = [c for c in (ID, target_name) if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"monitor --labels {path}: missing column(s) {missing}; expected {ID},{target_name}"
        )
    frame = frame[[ID, target_name]].astype(str)
    frame = frame[(frame[ID] != "") & (frame[target_name] != "")]
    if numeric:
        frame = _numeric_labels(frame, target_name, path)
    dupes = frame[ID][frame[ID].duplicated()].unique()[:3].tolist()
    if dupes:
        raise PipelineError(f"monitor --labels {path}: duplicate prediction_id(s), e.g. {dupes}")
    if frame.empty:
        raise PipelineError(f"monitor --labels {path}: no labelled rows")
    return frame.rename(columns={target_name: "label"}).reset_index(drop=True)


def _numeric_labels(frame: pd.DataFrame, column: str, path: Path) -> pd.DataFrame:
    """Labels as float64; a value that is not a finite number fails naming where it is."""
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce").astype("float64")
    bad = frame[~np.isfinite(values.to_numpy())]
    if len(bad):
        csv = not str(path).lower().endswith(".parquet")
        where = [
            f"{'line' if csv else 'row'} {int(i) + (2 if csv else 1)} ({ID} {pid!r}: {value!r})"
            for i, pid, value in zip(bad.index[:3], bad[ID][:3], bad[column][:3], strict=True)
        ]
        raise PipelineError(
            f"monitor --labels {path}: {len(bad)} label(s) are not finite numbers, which a "
            f"regression model's labels must be: {'; '.join(where)}"
        )
    out = frame.copy()
    out[column] = values
    return out
