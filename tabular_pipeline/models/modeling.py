"""Build estimators from config and assemble the servable pipeline."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from tabular_pipeline.errors import PipelineError


def model_name(model_cfg: dict[str, Any]) -> str:
    """Short name for tracking: the estimator class from ``_target_``."""
    return str(model_cfg.get("_target_", "model")).rsplit(".", 1)[-1]


def build_estimator(model_cfg: dict[str, Any]) -> BaseEstimator:
    """Instantiate the configured estimator: adding a model is adding a YAML file."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if "_target_" not in model_cfg:
        raise PipelineError("params.yaml: section 'model' needs a '_target_' (estimator class)")
    try:
        estimator = instantiate(model_cfg, _convert_="all")
    except InstantiationException as exc:
        raise PipelineError(f"model: cannot build {model_cfg['_target_']}: {exc}") from exc
    if not hasattr(estimator, "predict_proba"):
        raise PipelineError(f"model: {model_cfg['_target_']} has no predict_proba")
    return estimator


def accepts_eval_set(estimator: BaseEstimator) -> bool:
    """Whether ``fit`` takes a validation split (the torch model's early stopping does)."""
    return "eval_set" in inspect.signature(estimator.fit).parameters


def fit_pipeline(
    featurizer: ColumnTransformer,
    estimator: BaseEstimator,
    frame: pd.DataFrame,
    target: str,
    valid: pd.DataFrame | None = None,
) -> Pipeline:
    """Fit only the estimator: the featurizer was fitted on train by its own stage.

    ``valid`` reaches the estimator only if its ``fit`` has an ``eval_set``
    parameter, so the scikit-learn models are fitted exactly as before.
    """
    X = featurizer.transform(frame.drop(columns=[target]))
    y = frame[target].astype(str).to_numpy()
    if valid is not None and accepts_eval_set(estimator):
        eval_set = (
            featurizer.transform(valid.drop(columns=[target])),
            valid[target].astype(str).to_numpy(),
        )
        estimator.fit(X, y, eval_set=eval_set)
    else:
        estimator.fit(X, y)
    return Pipeline([("features", featurizer), ("model", estimator)])


CURVE_COLUMNS = ["epoch", "train_loss", "valid_log_loss", "valid_accuracy"]


def training_curve(pipeline: Pipeline) -> pd.DataFrame:
    """Per-epoch history of an iterative model; empty (header only) for the others."""
    history = getattr(pipeline[-1], "history_", None) or []
    curve = pd.DataFrame(history, columns=CURVE_COLUMNS)
    return curve.astype({"epoch": "int64"})


def uses_package_code(pipeline: Pipeline) -> bool:
    """True if a step's class lives in this package (so a loader needs its code)."""
    return any(type(step).__module__.startswith("tabular_pipeline.") for _, step in pipeline.steps)


def predict_proba(
    pipeline: Pipeline, frame: pd.DataFrame, target: str
) -> tuple[np.ndarray, list[str]]:
    X = frame.drop(columns=[target], errors="ignore")
    return pipeline.predict_proba(X), [str(c) for c in pipeline.classes_]


def signature_example(features: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """Input example for the MLflow signature, typed as a JSON request arrives.

    Integers become floats (an integer column cannot hold a null, yet the
    pipeline imputes nulls) and categories become plain strings.
    """
    example = features.head(rows)
    ints = example.select_dtypes(include=["integer"]).columns
    cats = example.select_dtypes(include=["category"]).columns
    return example.astype(dict.fromkeys(ints, "float64") | dict.fromkeys(cats, object))
