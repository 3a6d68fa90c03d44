"""Read the service's rotated JSON-lines prediction logs back into a frame.

A log is written while it is read (the service appends, rotation renames),
so a torn or corrupt line is expected, not fatal: it is counted and skipped
with a warning naming the file and line. Rows are sorted by (time, id), so
the result does not depend on file order or rotation.

Sources: a file, a folder (every ``*.jsonl*`` file in it, rotated backups
included), a glob, or an fsspec URL such as ``s3://bucket/logs/*.jsonl*``
(s3fs comes with dvc-s3). A DVC-tracked folder is pulled first
(``dvc pull logs``), then read as a folder.
"""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

ID = "prediction_id"
REQUIRED = ("features", "proba", "label")
MAX_WARNINGS = 20  # per run; the total is always reported


@dataclass
class LogBatch:
    """Served rows (features), what was served (label, proba, variant, id), and skips."""

    features: pd.DataFrame
    served: pd.DataFrame  # prediction_id, ts, variant, model_sha256, label, proba
    files: list[str]
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


def _problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing key(s) {missing}"
    if not isinstance(record["features"], dict) or not isinstance(record["proba"], list):
        return "features must be an object and proba a list"
    return None


def read_logs(source: str) -> LogBatch:
    """Every valid line of every file; bad lines are counted and named, never fatal."""
    files = list_sources(source)
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
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
            records.append(record)
    if len(skipped) > MAX_WARNINGS:
        log.warning("... %d skipped lines in all", len(skipped))
    if not records:
        raise PipelineError(
            f"monitor --logs {source}: no valid prediction lines in {len(files)} file(s)"
            + (f" ({len(skipped)} corrupt line(s) skipped)" if skipped else " (empty log)")
        )
    records.sort(key=lambda r: (float(r.get("ts") or 0.0), str(r.get(ID) or "")))
    features = pd.DataFrame([r["features"] for r in records])
    served = pd.DataFrame(
        {
            ID: [str(r.get(ID) or "") for r in records],
            "ts": [r.get("ts") for r in records],
            "variant": [r.get("variant") for r in records],
            "model_sha256": [r.get("model_sha256") for r in records],
            "label": [str(r["label"]) for r in records],
            "proba": [r["proba"] for r in records],
        }
    )
    log.info(
        "%d prediction rows from %d file(s) (%s); %d line(s) skipped",
        len(records),
        len(files),
        source,
        len(skipped),
    )
    return LogBatch(features, served, files, len(skipped), skipped)


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


def read_labels(path: Path, target_name: str = "label") -> pd.DataFrame:
    """A delayed-labels file: ``prediction_id,label`` (CSV or Parquet), ids unique.

    Read through the guarded reader (a damaged or mis-separated file is one
    line naming it), as text, so ids and labels are never turned into numbers.
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
    dupes = frame[ID][frame[ID].duplicated()].unique()[:3].tolist()
    if dupes:
        raise PipelineError(f"monitor --labels {path}: duplicate prediction_id(s), e.g. {dupes}")
    if frame.empty:
        raise PipelineError(f"monitor --labels {path}: no labelled rows")
    return frame.rename(columns={target_name: "label"}).reset_index(drop=True)
