"""Monitoring of served traffic: the prediction log against the validation-split reference.

Not a DVC stage on purpose: a new batch of logs arrives every day, and a
stage reading it would either make the training pipeline stale or need conf
edits per batch. It reads what the pipeline produced (the validation split,
the model, the promoted test metrics, explain's importance) and writes only into ``monitor.out_dir``
(git-ignored), so `dvc status` is unchanged after a run.

The drift part is the ``drift`` stage's code (same Evidently preset, same
normalisation, same per-column tests, same gate), with the *served*
predictions as the current prediction column against the model's
out-of-sample predictions on the validation split; the quality part needs
delayed labels (see quality.py). Both tasks: a classifier's log holds
probabilities (the prediction column is the positive class's probability or
the label, as in ``drift``), a regressor's the predicted value.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline import stage
from tabular_pipeline.config import (
    DataConfig,
    EvaluateConfig,
    MonitorConfig,
    SplitConfig,
    TrainConfig,
    load_data_config,
    parse_section,
)
from tabular_pipeline.data.task import is_regression, task_of_model
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.explain.settings import ExplainConfig
from tabular_pipeline.monitoring import drift, export, logs, quality, retrain

log = logging.getLogger(__name__)

SERVED = "__served_prediction__"


@dataclass
class Outputs:
    html: Path
    summary: Path
    metrics: Path
    prom: Path

    @classmethod
    def under(cls, out_dir: Path) -> Outputs:
        return cls(
            out_dir / "report.html",
            out_dir / "summary.json",
            out_dir / "metrics.json",
            out_dir / "monitor.prom",
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def variants(served: pd.DataFrame, model_sha: str) -> dict[str, Any]:
    """Rows per served variant, and whether it is the workspace model (the reference's)."""
    out = {}
    for name, group in served.groupby("variant", sort=True, dropna=False):
        shas = sorted({str(s) for s in group["model_sha256"].dropna()})
        out[str(name)] = {
            "rows": len(group),
            "model_sha256": shas,
            "is_workspace_model": model_sha in shas,
        }
        if model_sha not in shas:
            log.warning(
                "variant %s was served by model(s) %s, not the workspace model %s: its "
                "predictions are compared with the workspace model's reference",
                name,
                [s[:12] for s in shas],
                model_sha[:12],
            )
    return out


def served_prediction(served: pd.DataFrame, classes: list[str], data: DataConfig) -> pd.Series:
    """The drift stage's prediction column, from the logged probabilities."""
    widths = {len(p) for p in served["proba"]}
    if widths != {len(classes)}:
        raise PipelineError(
            f"prediction log: rows have {sorted(widths)} probabilities but the model has "
            f"{len(classes)} classes {classes}; were the logs written by another model?"
        )
    proba = np.vstack([np.asarray(p, dtype=float) for p in served["proba"]])
    positive = None if data.positive_label is None else str(data.positive_label)
    return drift.prediction_column(proba, classes, positive, served.index)


def check_kind(batch: logs.LogBatch, model_kind: str, model_path: Path, source: str) -> None:
    """The log's record kind must be the model's task family: one line when it is not."""
    if batch.kind == model_kind:
        return
    what = {
        logs.CLASSIFICATION: "a classifier's records (label/proba)",
        logs.REGRESSION: "a regressor's records (a numeric prediction)",
    }
    raise PipelineError(
        f"monitor --logs {source}: the log holds {what[batch.kind]} but {model_path} is a "
        f"{model_kind} model; were the logs written by another project's service?"
    )


def run(
    params: dict[str, Any],
    logs_source: str,
    labels_path: Path | None,
    out_dir: Path,
    export_training: Path | None = None,
) -> dict[str, Any]:
    """Read, compare, write the report, summary, metrics and textfile; return the summary."""
    data = load_data_config(params)
    cfg = parse_section(params, "monitor", MonitorConfig)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    model_path = Path(parse_section(params, "train", TrainConfig).model_out)
    evaluate = parse_section(params, "evaluate", EvaluateConfig)
    importance_path = Path(parse_section(params, "explain", ExplainConfig).importance_out)
    seed = int(params["seed"])

    batch = logs.read_logs(logs_source)
    if len(batch.features) < cfg.min_rows:
        raise PipelineError(
            f"monitor --logs {logs_source}: {len(batch.features)} served rows, fewer than "
            f"monitor.min_rows {cfg.min_rows}: too few to compare distributions"
        )
    if export_training is not None and labels_path is None:
        raise PipelineError("monitor --export-training needs --labels (rows need a label)")
    pipeline = stage.load_object(model_path)
    regression = is_regression(task_of_model(pipeline))
    check_kind(
        batch, logs.REGRESSION if regression else logs.CLASSIFICATION, model_path, logs_source
    )
    # Bad labels fail here, before the expensive drift report.
    labels = logs.read_labels(labels_path, numeric=regression) if labels_path is not None else None
    importance = drift.read_importance(importance_path)
    reference_path = split_dir / "valid.parquet"
    reference = stage.read_parquet(reference_path)
    current = logs.typed_like(batch.features, reference)
    classes: list[str] = []
    if regression:
        # drift.prepare predicts the reference side (validation split) with
        # the model, as the drift stage does: a numerical column.
        current[SERVED] = batch.served["prediction"].to_numpy(dtype=np.float64)
    else:
        classes = [str(c) for c in pipeline.classes_]
        current[SERVED] = served_prediction(batch.served, classes, data).to_numpy()
    ref, cur, columns = drift.prepare(
        reference,
        current,
        data,
        pipeline,
        cfg.max_rows,
        seed,
        served=SERVED,
        source=f"prediction log {logs_source}",
    )
    log.info(
        "Evidently drift: %d reference rows (validation split) vs %d served rows, %d columns",
        len(ref),
        len(cur),
        len(columns.numerical) + len(columns.categorical),
    )
    result = drift.run_report(ref, cur, columns, cfg.tests)
    drift_summary = drift.summarise(
        result.columns, columns.prediction, cfg.gate, "monitor.gate", importance
    )
    drift_summary["tests"] = result.tests
    failures = list(drift_summary["gate_failures"])

    summary: dict[str, Any] = {
        "logs": {
            "source": logs_source,
            "files": [Path(f).name if "://" not in f else f for f in batch.files],
            "skipped_lines": batch.skipped,
            "skipped_where": batch.skipped_where[:100],
            "first_ts": _ts(batch.served["ts"].min()),
            "last_ts": _ts(batch.served["ts"].max()),
        },
        "reference": reference_path.as_posix(),
        "importance": importance_path.as_posix(),
        "rows": {"reference": len(ref), "current": len(cur), "served": len(batch.features)},
        "variants": variants(batch.served, sha256_file(model_path)),
        "drift": drift_summary,
        "quality": None,
    }
    if labels_path is not None and labels is not None:
        joined, counts = quality.join_labels(batch.served, labels)
        log.info("labels: %d of %d matched a served prediction", counts["matched"], len(labels))
        promoted = _promoted(Path(evaluate.metrics_out))
        q = cfg.quality
        rows: list[dict[str, Any]] = []
        live: dict[str, Any] = {}
        if counts["matched"] == 0:
            failures.append(
                f"labels {labels_path}: none of {len(labels)} prediction_id(s) is in the logs"
            )
        elif regression:
            live = quality.live_regression_metrics(
                joined, list(q.regression_metrics), q.n_resamples, q.confidence, seed
            )
        else:
            live = quality.live_metrics(
                joined, classes, list(q.metrics), q.n_resamples, q.confidence, seed
            )
        if live:
            rows, quality_failures = quality.compare(
                live, promoted, dict(q.max_drop), counts["matched"], q.min_labels
            )
            failures.extend(quality_failures)
        summary["quality"] = {
            "labels": labels_path.as_posix(),
            "counts": counts,
            "promoted_from": evaluate.metrics_out,
            "confidence": q.confidence,
            "metrics": rows,
        }
    summary["gate_failures"] = failures
    if export_training is not None and labels is not None:
        retrain.write_batch(
            retrain.labelled_rows(batch.features, batch.served, labels, data.target),
            export_training,
        )

    outputs = Outputs.under(out_dir)
    drift.write_html(result.html, outputs.html)
    stage.write_json(outputs.summary, summary)
    stage.write_json(outputs.metrics, headline(summary))
    stage.write_text(outputs.prom, export.render(summary, data.name))
    return summary


def _ts(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 3)


def _promoted(path: Path) -> dict[str, Any]:
    """The test metrics the model was promoted with (evaluate's headline file)."""
    if not path.is_file():
        log.warning("%s not found: live quality is reported without the promoted metrics", path)
        return {}
    payload = stage.read_json(path)
    return payload if isinstance(payload, dict) else {}


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The few numbers worth a dashboard or a `dvc metrics`-style diff."""
    drift_part = summary["drift"]
    out: dict[str, Any] = {
        "rows": summary["rows"]["served"],
        "skipped_lines": summary["logs"]["skipped_lines"],
        "drift_share": drift_part["drift_share"],
        "n_drifted": drift_part["n_drifted"],
        "prediction_drifted": drift_part["prediction_drifted"],
        "gate_passed": not summary["gate_failures"],
        "gate_failures": len(summary["gate_failures"]),
    }
    q = summary.get("quality")
    if q:
        out["labels_matched"] = q["counts"]["matched"]
        out["live"] = {row["metric"]: row["live"] for row in q["metrics"]}
    return out
