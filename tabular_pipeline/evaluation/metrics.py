"""Classification metrics (any number of classes), regression metrics, and plot data."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from tabular_pipeline.errors import PipelineError

DIGITS = 6


def _round(value: float) -> float | None:
    """Stable, JSON-safe floats: metrics files are diffed across git revisions."""
    return None if value is None or math.isnan(value) else round(float(value), DIGITS)


def curve_classes(classes: list[str], positive_label: str | None) -> list[str]:
    """Binary: one curve for the positive class; multiclass: one-vs-rest per class."""
    if len(classes) == 2:
        if positive_label is None:
            return [classes[1]]
        if positive_label not in classes:
            raise PipelineError(
                f"data.positive_label: {positive_label!r} is not one of the classes {classes}"
            )
        return [positive_label]
    return list(classes)


def classification_metrics(
    y_true: pd.Series, proba: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Headline metrics plus per-class precision/recall from predicted probabilities.

    Macro averages run over the classes present in ``y_true`` (sklearn's
    default), so a class missing from a small test split does not count as 0.
    """
    y = np.asarray(y_true).astype(str)
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    present = [c for c in classes if c in set(y)]
    metrics: dict[str, Any] = {
        "accuracy": _round(accuracy_score(y, pred)),
        "error_rate": _round(1.0 - accuracy_score(y, pred)),
        "balanced_accuracy": _round(balanced_accuracy_score(y, pred)),
        "f1_macro": _round(f1_score(y, pred, average="macro", zero_division=0)),
        "log_loss": _round(log_loss(y, proba, labels=classes)),
        "roc_auc": None,
        "n_rows": len(y),
    }
    if len(present) >= 2:
        if len(classes) == 2:
            auc = roc_auc_score(y == classes[1], proba[:, 1])
        elif len(present) == len(classes):
            auc = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)
        else:
            # sklearn's multiclass AUC needs every class in y_true; one-vs-rest
            # macro over the present classes is the same definition restricted.
            auc = float(
                np.mean([roc_auc_score(y == c, proba[:, classes.index(c)]) for c in present])
            )
        metrics["roc_auc"] = _round(auc)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=classes, zero_division=0
    )
    metrics["per_class"] = {
        str(c): {
            "precision": _round(p),
            "recall": _round(r),
            "f1": _round(f),
            "support": int(s),
        }
        for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    return metrics


# What the DVC metrics files hold. `dvc exp show` makes a column of every
# metric, so per-class detail goes to a report file and to MLflow instead.
# (No metric may be called "error": DVC reads that key as a load failure.)
# Budget: `dvc exp show --only-changed` for one param must stay within ~25
# columns with every stage's metrics, so only the valid split goes to
# metrics/train.json, and test error rate / balanced accuracy (derivable or
# secondary) are in MLflow only.
TRAIN_HEADLINE = ("accuracy", "log_loss", "roc_auc", "n_rows")
TEST_HEADLINE = ("accuracy", "f1_macro", "log_loss", "roc_auc", "n_rows")
REGRESSION_TRAIN_HEADLINE = ("rmse", "mae", "r2", "n_rows")
REGRESSION_TEST_HEADLINE = ("rmse", "mae", "r2", "mape", "n_rows")


def regression_metrics(y_true: Any, pred: Any) -> dict[str, Any]:
    """RMSE, MAE, R² and MAPE (None when a true value is 0: MAPE divides by it)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    err = p - y
    n = len(y)
    has_zero = bool((y == 0).any())
    ss_tot = float(((y - y.mean()) ** 2).sum()) if n else float("nan")
    return {
        "rmse": _round(math.sqrt(float(np.mean(err**2)))) if n else None,
        "mae": _round(float(np.mean(np.abs(err)))) if n else None,
        "r2": _round(1.0 - float((err**2).sum()) / ss_tot) if n and ss_tot > 0 else None,
        "mape": None if has_zero or not n else _round(float(np.mean(np.abs(err / y)))),
        "mape_skipped": "the target has zeros" if has_zero else None,
        "n_rows": n,
    }


def score(pipeline: Any, frame: pd.DataFrame, target: str) -> dict[str, Any]:
    """The task's metrics of a fitted pipeline on a labelled frame."""
    from tabular_pipeline.models.modeling import predict_proba, predict_values

    if not hasattr(pipeline, "classes_"):
        return regression_metrics(frame[target], predict_values(pipeline, frame, target))
    proba, classes = predict_proba(pipeline, frame, target)
    return classification_metrics(frame[target], proba, classes)


def train_headline(metrics: dict[str, Any]) -> tuple[str, ...]:
    return REGRESSION_TRAIN_HEADLINE if "rmse" in metrics else TRAIN_HEADLINE


def test_headline(metrics: dict[str, Any]) -> tuple[str, ...]:
    return REGRESSION_TEST_HEADLINE if "rmse" in metrics else TEST_HEADLINE


def summary_line(metrics: dict[str, Any]) -> str:
    """One log line of the headline numbers, whatever the task."""
    if "rmse" in metrics:
        mape = metrics["mape"] if metrics["mape"] is not None else "n/a (target has zeros)"
        return f"RMSE {metrics['rmse']}, MAE {metrics['mae']}, R2 {metrics['r2']}, MAPE {mape}"
    return (
        f"accuracy {metrics['accuracy']}, log loss {metrics['log_loss']}, "
        f"ROC AUC {metrics['roc_auc']}"
    )


def headline(metrics: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: metrics[k] for k in keys if k in metrics}


def slug(label: str, taken: set[str]) -> str:
    """File-name-safe, unique name for a class label ('>50K' -> 'gt50K')."""
    text = str(label)
    for op, word in ((">=", "ge"), ("<=", "le"), (">", "gt"), ("<", "lt"), ("=", "eq")):
        text = text.replace(op, word)
    base = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_") or "class"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


# A curve has up to one point per distinct score: millions on a large test
# split, all embedded in DVC's plot HTML. Above this, evenly spaced points
# (first and last kept) draw the same line.
CURVE_POINTS = 10_000


def thin(curve: pd.DataFrame, points: int = CURVE_POINTS) -> pd.DataFrame:
    if len(curve) <= points:
        return curve
    keep = np.unique(np.linspace(0, len(curve) - 1, points).round().astype(int))
    return curve.iloc[keep].reset_index(drop=True)


def roc_points(
    y_true: pd.Series, proba: np.ndarray, classes: list[str], label: str
) -> pd.DataFrame:
    col = classes.index(label)
    fpr, tpr, _ = roc_curve(np.asarray(y_true).astype(str) == label, proba[:, col])
    return thin(pd.DataFrame({"fpr": fpr, "tpr": tpr}).round(DIGITS))


def pr_points(y_true: pd.Series, proba: np.ndarray, classes: list[str], label: str) -> pd.DataFrame:
    col = classes.index(label)
    precision, recall, _ = precision_recall_curve(
        np.asarray(y_true).astype(str) == label, proba[:, col], drop_intermediate=True
    )
    return thin(pd.DataFrame({"recall": recall, "precision": precision}).round(DIGITS))


def calibration_points(
    y_true: pd.Series, proba: np.ndarray, classes: list[str], label: str, bins: int
) -> pd.DataFrame:
    # sklearn.calibration pulls in model_selection, svm and linear_model
    # (~0.5 s): only evaluate plots calibration; train and register score.
    from sklearn.calibration import calibration_curve

    col = classes.index(label)
    prob_true, prob_pred = calibration_curve(
        np.asarray(y_true).astype(str) == label, proba[:, col], n_bins=bins, strategy="quantile"
    )
    return pd.DataFrame({"predicted": prob_pred, "observed": prob_true}).round(DIGITS)


def confusion_rows(y_true: pd.Series, proba: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per prediction, the shape DVC's confusion template expects."""
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    return pd.DataFrame({"actual": np.asarray(y_true).astype(str), "predicted": pred})
