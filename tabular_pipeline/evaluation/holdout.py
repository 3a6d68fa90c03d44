"""Held-out evaluation: metrics, plot data and permutation importance."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from tabular_pipeline import stage
from tabular_pipeline.config import EvaluateConfig
from tabular_pipeline.evaluation import fairness as fair
from tabular_pipeline.evaluation import metrics as m
from tabular_pipeline.evaluation import regression as reg
from tabular_pipeline.evaluation import resampling
from tabular_pipeline.models.modeling import predict_proba, predict_values

log = logging.getLogger(__name__)

# Sub-paths of evaluate.plots_dir; dvc.yaml's top-level `plots:` points at these.
CURVES = ("roc", "precision_recall", "calibration")
# Regression plot files (sub-paths of plots_dir), header-only for classification.
REGRESSION_PLOTS = {
    "regression/predicted_vs_actual.csv": ["actual_value", "predicted_value"],
    "regression/residuals.csv": ["residual", "count"],
}


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    curves: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)
    confusion: pd.DataFrame = field(default_factory=pd.DataFrame)
    importance: pd.DataFrame = field(default_factory=pd.DataFrame)
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Full fairness detail (per-group tables): a non-metric JSON, not metrics.
    fairness: dict[str, Any] = field(default_factory=dict)
    group_bars: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Regression only: plot tables by sub-path of plots_dir.
    regression_plots: dict[str, pd.DataFrame] = field(default_factory=dict)
    task: str = "classification"
    # How many rows each sampled estimate used (stated in the report and the card).
    sampling: dict[str, int] = field(default_factory=dict)


# The confusion plot is one row per prediction, embedded in DVC's HTML: above
# this many test rows it shows a seeded sample (the counts in metrics are exact).
CONFUSION_ROWS = 50_000


def sampling_info(
    test_rows: int, bootstrap_rows: int, importance_rows: int, cfg: EvaluateConfig
) -> dict[str, int]:
    return {
        "test_rows": test_rows,
        "bootstrap_rows": bootstrap_rows,
        "bootstrap_resamples": cfg.bootstrap.n_resamples,
        "importance_rows": importance_rows,
        "importance_repeats": cfg.importance.n_repeats,
    }


def importance_sample(frame: pd.DataFrame, target: str, max_rows: int, seed: int) -> pd.DataFrame:
    """Stratified subsample: permutation importance costs n_features x n_repeats predictions."""
    if len(frame) <= max_rows:
        return frame
    counts = frame[target].value_counts()
    stratify = frame[target] if counts.min() >= 2 else None
    sample, _ = train_test_split(frame, train_size=max_rows, random_state=seed, stratify=stratify)
    return sample


def permutation_table(
    pipeline: Pipeline, frame: pd.DataFrame, target: str, n_repeats: int, seed: int
) -> pd.DataFrame:
    """Importance of each raw input column (not one-hot pieces): drop in log loss or RMSE."""
    X = frame.drop(columns=[target])
    if not hasattr(pipeline, "classes_"):
        scorer, y = "neg_root_mean_squared_error", frame[target].astype("float64")
    else:
        labels = sorted(str(c) for c in pipeline.classes_)
        scorer = "neg_log_loss" if set(frame[target].astype(str)) == set(labels) else "accuracy"
        y = frame[target].astype(str)
    result = permutation_importance(
        pipeline,
        X,
        y,
        scoring=scorer,
        n_repeats=n_repeats,
        random_state=seed,
        n_jobs=1,
    )
    table = pd.DataFrame(
        {
            "feature": X.columns,
            "importance": result.importances_mean,
            "std": result.importances_std,
        }
    ).round(m.DIGITS)
    return table.sort_values(["importance", "feature"], ascending=[False, True]).reset_index(
        drop=True
    )


def row_ids(test: pd.DataFrame) -> np.ndarray:
    """A content hash per test row (features and label): two revisions' predictions
    pair row by row only when these match (``tabular_pipeline.report``)."""
    return pd.util.hash_pandas_object(test, index=False).to_numpy()


def prediction_table(y_true: pd.Series, proba: Any, classes: list[str]) -> pd.DataFrame:
    """Per-row outcome on the test split, for error analysis and drift checks."""
    table = m.confusion_rows(y_true, proba, classes)
    for i, label in enumerate(classes):
        table[f"proba_{label}"] = proba[:, i]
    return table


def evaluate(
    pipeline: Pipeline,
    test: pd.DataFrame,
    target: str,
    positive_label: str | None,
    cfg: EvaluateConfig,
    seed: int,
    sensitive: list[str] | None = None,
) -> Evaluation:
    if not hasattr(pipeline, "classes_"):
        return evaluate_regression(pipeline, test, target, cfg, seed, sensitive or [])
    proba, classes = predict_proba(pipeline, test, target)
    y = test[target]
    result = Evaluation(metrics=m.classification_metrics(y, proba, classes))
    add_uncertainty_and_fairness(
        result, test, target, proba, classes, positive_label, cfg, seed, sensitive or []
    )
    taken: set[str] = set()
    present = set(y.astype(str))
    for label in m.curve_classes(classes, positive_label):
        if label not in present:
            log.warning("class %r has no rows in the test split: no curves for it", label)
            continue
        name = m.slug(label, taken)
        result.curves.setdefault("roc", {})[name] = m.roc_points(y, proba, classes, label)
        result.curves.setdefault("precision_recall", {})[name] = m.pr_points(
            y, proba, classes, label
        )
        result.curves.setdefault("calibration", {})[name] = m.calibration_points(
            y, proba, classes, label, cfg.calibration_bins
        )
    shown = fair.sample_rows(len(test), CONFUSION_ROWS, seed)
    result.confusion = m.confusion_rows(y.iloc[shown], proba[shown], classes)
    result.predictions = prediction_table(y, proba, classes).assign(row_id=row_ids(test))
    sample = importance_sample(test, target, cfg.importance.max_rows, seed)
    log.info(
        "permutation importance on %d rows x %d repeats", len(sample), cfg.importance.n_repeats
    )
    result.importance = permutation_table(pipeline, sample, target, cfg.importance.n_repeats, seed)
    result.sampling["importance_rows"] = len(sample)
    result.sampling["confusion_rows"] = len(shown)
    return result


def evaluate_regression(
    pipeline: Pipeline,
    test: pd.DataFrame,
    target: str,
    cfg: EvaluateConfig,
    seed: int,
    sensitive: list[str],
) -> Evaluation:
    """RMSE/MAE/R²/MAPE with bootstrap CIs, scatter and residual plots, MAE by group."""
    pred = predict_values(pipeline, test, target)
    y = test[target].to_numpy(dtype=np.float64)
    result = Evaluation(metrics=m.regression_metrics(y, pred), task="regression")
    if result.metrics["mape"] is None:
        log.info("MAPE not reported: %s", result.metrics["mape_skipped"])
    boot = cfg.bootstrap
    rows = fair.sample_rows(len(y), boot.max_rows, seed)
    log.info(
        "bootstrap CIs: %d resamples of %d of %d test rows", boot.n_resamples, len(rows), len(y)
    )
    result.metrics["ci"] = resampling.bootstrap_ci(
        resampling.regression(y[rows], pred[rows]),
        list(boot.regression_metrics),
        boot.n_resamples,
        boot.confidence,
        seed,
    )
    result.regression_plots = {
        "regression/predicted_vs_actual.csv": reg.scatter_points(y, pred, seed),
        "regression/residuals.csv": reg.residual_histogram(y, pred),
    }
    result.predictions = pd.DataFrame(
        {"actual": y, "predicted": pred, "residual": pred - y, "row_id": row_ids(test)}
    )
    if sensitive:
        gaps, tables = reg.fairness_report(
            test,
            pred,
            target,
            sensitive,
            cfg.fairness.min_group_size,
            boot.n_resamples,
            boot.confidence,
            seed,
            ci_rows=rows,
        )
        result.metrics["fairness"] = {col: {"mae_gap": g["mae_gap"]} for col, g in gaps.items()}
        result.fairness = {
            "task": "regression",
            "min_group_size": cfg.fairness.min_group_size,
            "columns": {
                col: {**gaps[col], "groups": tables[col].to_dict(orient="records")}
                for col in sensitive
            },
        }
        result.regression_plots["regression/fairness.csv"] = reg.group_bars(tables)
        for col, gap in gaps.items():
            log.info(
                "fairness %s: largest MAE gap %s (%s vs %s), 95%% CI %s",
                col,
                gap["mae_gap"],
                gap["worst_group"],
                gap["best_group"],
                gap["mae_gap_ci"],
            )
    sample = importance_sample(test, target, cfg.importance.max_rows, seed)
    log.info(
        "permutation importance (RMSE) on %d rows x %d repeats",
        len(sample),
        cfg.importance.n_repeats,
    )
    result.importance = permutation_table(pipeline, sample, target, cfg.importance.n_repeats, seed)
    result.confusion = pd.DataFrame(columns=["actual", "predicted"])
    result.sampling = sampling_info(len(y), len(rows), len(sample), cfg)
    return result


def add_uncertainty_and_fairness(
    result: Evaluation,
    test: pd.DataFrame,
    target: str,
    proba: Any,
    classes: list[str],
    positive_label: str | None,
    cfg: EvaluateConfig,
    seed: int,
    sensitive: list[str],
) -> None:
    """Bootstrap CIs and group gaps as headline metrics; per-group tables aside."""
    boot = cfg.bootstrap
    rows = fair.sample_rows(len(test), boot.max_rows, seed)
    log.info(
        "bootstrap CIs: %d resamples of %d of %d test rows", boot.n_resamples, len(rows), len(test)
    )
    result.sampling = sampling_info(len(test), len(rows), 0, cfg)
    result.metrics["ci"] = resampling.bootstrap_ci(
        resampling.classification(test[target].to_numpy()[rows], proba[rows], classes),
        list(boot.metrics),
        boot.n_resamples,
        boot.confidence,
        seed,
    )
    if not sensitive:
        return
    if len(classes) != 2 and positive_label is None:
        log.warning("fairness needs a positive class: set data.positive_label (multiclass)")
        return
    positive = m.curve_classes(classes, positive_label)[0]
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    gaps, tables = fair.fairness_report(
        test, pred, target, positive, sensitive, cfg.fairness.min_group_size
    )
    result.metrics["fairness"] = {
        col: {"dpd": gap["dpd"], "eod": gap["eod"]} for col, gap in gaps.items()
    }
    result.fairness = {
        "positive_label": positive,
        "min_group_size": cfg.fairness.min_group_size,
        "columns": {
            col: {**gaps[col], "groups": tables[col].to_dict(orient="records")} for col in sensitive
        },
    }
    result.group_bars = fair.group_bars(tables)
    for col, gap in gaps.items():
        log.info(
            "fairness %s: demographic parity difference %s, ratio %s, equalized odds %s",
            col,
            gap["dpd"],
            gap["dpr"],
            gap["eod"],
        )


def write_plots(result: Evaluation, plots_dir: Path) -> None:
    for kind, by_class in result.curves.items():
        for name, frame in by_class.items():
            stage.write_csv(frame, plots_dir / kind / f"{name}.csv")
    stage.write_csv(result.confusion, plots_dir / "confusion.csv")
    stage.write_csv(result.importance, plots_dir / "importance.csv")
    if not result.group_bars.empty:
        stage.write_csv(result.group_bars, plots_dir / "fairness.csv")
    # Not-applicable plots are header-only files (as the training curve of a
    # non-iterative model), so every plot declared in dvc.yaml has its file.
    for sub, columns in REGRESSION_PLOTS.items():
        frame = result.regression_plots.get(sub, pd.DataFrame(columns=columns))
        stage.write_csv(frame, plots_dir / sub)
    reg_bars = result.regression_plots.get(
        "regression/fairness.csv", pd.DataFrame(columns=["group", "mae", "mean_residual", "size"])
    )
    stage.write_csv(reg_bars, plots_dir / "regression" / "fairness.csv")
    if result.task == "regression":
        # A regressor has no per-class curves or selection rates: empty folders
        # and a header-only table keep `dvc plots show` free of missing-file errors.
        for kind in CURVES:
            (plots_dir / kind).mkdir(parents=True, exist_ok=True)
        stage.write_csv(fair.group_bars({}), plots_dir / "fairness.csv")
