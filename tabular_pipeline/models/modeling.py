"""Build estimators from config and assemble the servable pipeline."""

from __future__ import annotations

import inspect
import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from tabular_pipeline.data.task import task_of_frame
from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# conf/model/<name>.yaml: the top level builds the classifier; this block names
# the regressor class and its differing values (see docs/regression.md).
REGRESSOR_KEY = "regressor"


def task_model_cfg(model_cfg: dict[str, Any], task: str) -> dict[str, Any]:
    """The flat estimator config for ``task``: one model file serves every task.

    Classification: the top level without the ``regressor`` block. Regression:
    the top level overlaid with the block (its ``_target_`` and values), minus
    the keys the regressor's constructor does not take (``C`` of
    LogisticRegression for Ridge), which are logged, never silently passed.
    """
    flat = {k: v for k, v in model_cfg.items() if k != REGRESSOR_KEY}
    if task != "regression":
        return flat
    block = model_cfg.get(REGRESSOR_KEY)
    if not isinstance(block, dict) or "_target_" not in block:
        raise PipelineError(
            f"model: {flat.get('_target_')} has no regressor; add a 'regressor:' block with a "
            "'_target_' to its conf/model file (see docs/regression.md)"
        )
    merged = flat | dict(block)
    from hydra.utils import get_class

    try:
        cls = get_class(str(merged["_target_"]))
    except Exception as exc:  # hydra raises ImportError or ValueError variants
        raise PipelineError(f"model.regressor: cannot import {merged['_target_']}: {exc}") from exc
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return merged  # LightGBM/XGBoost take any library parameter as **kwargs
    accepted = {p.name for p in parameters}
    dropped = sorted(k for k in merged if not k.startswith("_") and k not in accepted)
    if dropped:
        log.info(
            "model: %s do(es) not apply to %s: left out for regression",
            dropped,
            cls.__name__,
        )
    return {k: v for k, v in merged.items() if k.startswith("_") or k in accepted}


def target_values(frame: pd.DataFrame, target: str) -> np.ndarray:
    """What the estimator fits on: floats for regression, text labels otherwise."""
    if task_of_frame(frame, target) == "regression":
        return frame[target].to_numpy(dtype=np.float64)
    return frame[target].astype(str).to_numpy()


def model_name(model_cfg: dict[str, Any]) -> str:
    """Short name for tracking: the estimator class from ``_target_``."""
    return str(model_cfg.get("_target_", "model")).rsplit(".", 1)[-1]


def build_estimator(model_cfg: dict[str, Any], task: str | None = None) -> BaseEstimator:
    """Instantiate the configured estimator: adding a model is adding a YAML file.

    ``task`` (when given) must match what the class is: a classifier with
    ``predict_proba``, or a regressor (see :func:`task_model_cfg`).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from sklearn.base import is_regressor

    if "_target_" not in model_cfg:
        raise PipelineError("params.yaml: section 'model' needs a '_target_' (estimator class)")
    try:
        estimator = instantiate(model_cfg, _convert_="all")
    except InstantiationException as exc:
        raise PipelineError(f"model: cannot build {model_cfg['_target_']}: {exc}") from exc
    regressor = is_regressor(estimator)
    if task == "regression" and not regressor:
        raise PipelineError(f"model: {model_cfg['_target_']} is not a regressor (task regression)")
    if ((task is None and not regressor) or task in ("binary", "multiclass")) and not hasattr(
        estimator, "predict_proba"
    ):
        raise PipelineError(f"model: {model_cfg['_target_']} has no predict_proba")
    return estimator


# Top-level module of a GBDT library's estimator classes (or their bases).
GBDT_LIBRARIES = ("lightgbm", "xgboost", "catboost")


def gbdt_library(estimator: BaseEstimator) -> str | None:
    """``lightgbm`` / ``xgboost`` / ``catboost`` for their estimators (and subclasses)."""
    for cls in type(estimator).__mro__:
        top = cls.__module__.split(".")[0]
        if top in GBDT_LIBRARIES:
            return top
    return None


def gbdt_fit_kwargs(estimator: BaseEstimator, X_val: Any, y_val: Any) -> dict[str, Any]:
    """The ``fit`` arguments that hand the validation split to a GBDT library.

    Each takes it in its own shape; the rounds without improvement are a
    parameter of each model file (LightGBM's ``early_stopping_round``,
    XGBoost's and CatBoost's ``early_stopping_rounds``). All three then predict
    with the best iteration only: LightGBM saves the best iteration's model,
    CatBoost's ``use_best_model`` drops the later trees, and the pipeline's
    XGBoost classes slice them off (tabular_pipeline/models/xgb.py).
    """
    library = gbdt_library(estimator)
    if library == "lightgbm":
        # Not 4.7's eval_X/eval_y, which skip the label encoding of text
        # labels that eval_set gets (its deprecation warning is filtered).
        return {"eval_set": [(X_val, y_val)]}
    if library == "xgboost":
        return {"eval_set": [(X_val, y_val)], "verbose": False}
    if library == "catboost":
        return {"eval_set": (X_val, y_val), "use_best_model": True}
    name = type(estimator).__name__
    raise PipelineError(f"model: {name} is not a LightGBM/XGBoost/CatBoost model")


def same_bytes_per_fit(model: Any) -> None:
    """Make a fitted CatBoost model's bytes a function of its content only.

    CatBoost stamps each model with a random ``model_guid`` and the wall-clock
    ``train_finish_time``, so two identical fits pickle differently (and
    ``models/model.joblib`` would change on every run). The time is blanked
    and the id becomes a hash of the model without them.
    """
    import hashlib
    import pickle

    meta = model.get_metadata()
    meta["train_finish_time"] = ""
    meta["model_guid"] = ""
    meta["model_guid"] = hashlib.sha256(pickle.dumps(model)).hexdigest()[:32]


def accepts_eval_set(estimator: BaseEstimator) -> bool:
    """Whether ``fit`` takes a validation split (the torch model's early stopping does)."""
    return "eval_set" in inspect.signature(estimator.fit).parameters


def accepts_x_val(estimator: BaseEstimator) -> bool:
    """Whether ``fit`` early-stops on a given split (scikit-learn's HistGradientBoosting*).

    Given the pipeline's validation split, HGB neither carves its own
    ``validation_fraction`` out of the training rows (a copy of the whole
    featurised matrix: GBs at millions of rows) nor wastes them.
    """
    early = estimator.get_params().get("early_stopping")
    return early is True and "X_val" in inspect.signature(estimator.fit).parameters


def fit_pipeline(
    featurizer: ColumnTransformer,
    estimator: BaseEstimator,
    frame: pd.DataFrame,
    target: str,
    valid: pd.DataFrame | None = None,
) -> Pipeline:
    """Fit only the estimator: the featurizer was fitted on train by its own stage.

    ``valid`` is what the estimator early-stops on, if its ``fit`` takes a
    validation split (LightGBM, XGBoost and CatBoost in their own shapes, the
    torch model's ``eval_set``, HGB's ``X_val`` with ``early_stopping: true``);
    other estimators never see it.
    """
    X = featurizer.transform(frame.drop(columns=[target]))
    y = target_values(frame, target)
    if gbdt_library(estimator) is not None and (valid is None or valid.empty):
        raise PipelineError(
            f"model: {type(estimator).__name__} early-stops on the validation split, which is "
            "empty: set split.valid_size > 0"
        )
    if valid is not None and gbdt_library(estimator) is not None:
        X_val = featurizer.transform(valid.drop(columns=[target]))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The argument 'eval_set' is deprecated")
            estimator.fit(X, y, **gbdt_fit_kwargs(estimator, X_val, target_values(valid, target)))
        if gbdt_library(estimator) == "catboost":
            same_bytes_per_fit(estimator)
    elif valid is not None and accepts_eval_set(estimator):
        eval_set = (
            featurizer.transform(valid.drop(columns=[target])),
            target_values(valid, target),
        )
        estimator.fit(X, y, eval_set=eval_set)
    elif valid is not None and accepts_x_val(estimator):
        X_val = featurizer.transform(valid.drop(columns=[target]))
        estimator.fit(X, y, X_val=X_val, y_val=target_values(valid, target))
    else:
        estimator.fit(X, y)
    return Pipeline([("features", featurizer), ("model", estimator)])


CURVE_COLUMNS = ["epoch", "train_loss", "valid_log_loss", "valid_accuracy"]
REGRESSION_CURVE_COLUMNS = ["epoch", "train_loss", "valid_rmse", "valid_mae"]


def training_curve(pipeline: Pipeline) -> pd.DataFrame:
    """Per-epoch history of an iterative model; empty (header only) for the others."""
    from sklearn.base import is_regressor

    history = getattr(pipeline[-1], "history_", None) or []
    columns = REGRESSION_CURVE_COLUMNS if is_regressor(pipeline[-1]) else CURVE_COLUMNS
    curve = pd.DataFrame(history, columns=columns)
    return curve.astype({"epoch": "int64"})


def uses_package_code(pipeline: Pipeline) -> bool:
    """True if a step's class lives in this package (so a loader needs its code)."""
    return any(type(step).__module__.startswith("tabular_pipeline.") for _, step in pipeline.steps)


# Rows per prediction call. A call holds the featurised chunk (rows x one-hot
# features, float64: ~85 MB for Adult's 105 features) rather than the whole
# frame's, so memory stays flat from 50 k to 5 M test rows; predictions are
# row-wise, so the result does not depend on the chunk size.
PREDICT_CHUNK_ROWS = 100_000


def in_chunks(predict: Any, X: pd.DataFrame, rows: int = PREDICT_CHUNK_ROWS) -> np.ndarray:
    """``predict(X)`` computed ``rows`` at a time and stacked."""
    if len(X) <= rows:
        return np.asarray(predict(X))
    starts = range(0, len(X), rows)
    return np.concatenate([np.asarray(predict(X.iloc[i : i + rows])) for i in starts])


def predict_proba(
    pipeline: Pipeline, frame: pd.DataFrame, target: str
) -> tuple[np.ndarray, list[str]]:
    X = frame.drop(columns=[target], errors="ignore")
    return in_chunks(pipeline.predict_proba, X), [str(c) for c in pipeline.classes_]


def predict_values(pipeline: Pipeline, frame: pd.DataFrame, target: str) -> np.ndarray:
    """A regressor's predictions as float64."""
    X = frame.drop(columns=[target], errors="ignore")
    return np.asarray(in_chunks(pipeline.predict, X), dtype=np.float64)


def signature_example(features: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """Input example for the MLflow signature, typed as a JSON request arrives.

    Integers become floats (an integer column cannot hold a null, yet the
    pipeline imputes nulls) and categories become plain strings.
    """
    example = features.head(rows)
    ints = example.select_dtypes(include=["integer"]).columns
    cats = example.select_dtypes(include=["category"]).columns
    return example.astype(dict.fromkeys(ints, "float64") | dict.fromkeys(cats, object))
