"""Labelled served rows as a raw training file: the retrain half of the loop.

``make monitor LABELS=... EXPORT=data/raw/<name>/batches/<date>.parquet``
writes the served rows that got a delayed label, with the label in the
target column, in the schema ingest reads (clean column names, Parquet so
no CSV read options apply). Listed in ``data.source.extra_train`` and
tracked with ``dvc add``, it joins the training rows on the next
`dvc repro`; register's gates then decide whether the retrained model
replaces the champion (docs/monitoring.md, "Retrain").
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tabular_pipeline import stage
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.monitoring.logs import ID

log = logging.getLogger(__name__)


def labelled_rows(
    features: pd.DataFrame, served: pd.DataFrame, labels: pd.DataFrame, target: str
) -> pd.DataFrame:
    """Features of each labelled served row plus its label as ``target``, in log order."""
    if target in features.columns:
        raise PipelineError(f"prediction log: a feature is named like the target {target!r}")
    frame = features.reset_index(drop=True).copy()
    frame[ID] = served[ID].to_numpy()
    joined = frame.merge(labels.rename(columns={"label": target}), on=ID, how="inner")
    return joined.drop(columns=[ID]).reset_index(drop=True)


def write_batch(frame: pd.DataFrame, path: Path) -> None:
    if frame.empty:
        raise PipelineError(f"monitor --export-training {path}: no labelled rows to export")
    if path.suffix.lower() != ".parquet":
        raise PipelineError(f"monitor --export-training {path}: must be a .parquet file")
    stage.write_parquet(frame, path)
    log.info("%d labelled rows -> %s (add it to data.source.extra_train)", len(frame), path)
