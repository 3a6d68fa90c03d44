"""LightGBM, XGBoost and CatBoost from their shipped model files (conf/model/).

Per library, on a small Adult sample with few trees: two fits give the same
bits, early stopping ran on the pipeline's validation split (the library's
recorded best score is the validation split's loss of the final model), and
tree SHAP adds up to the library's own raw score (binary, multiclass,
regression). The Bento of each is tested in tests/test_bento_standalone.py.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from tabular_pipeline import compose
from tabular_pipeline.config import DataConfig, FeaturizeConfig, load_params
from tabular_pipeline.data.ingest import normalize, read_table
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.explain.shap_values import (
    LOG_ODDS,
    RAW_SCORE,
    TARGET_UNITS,
    Explainer,
    raw_margin,
)
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import (
    build_estimator,
    fit_pipeline,
    gbdt_library,
    task_model_cfg,
)
from tests.conftest import FIXTURE, ROOT, shipped

LIBRARIES = ["lightgbm", "xgboost", "catboost"]
# Smaller than shipped, same classes and flags: the tests are about behaviour.
FEW = {
    "lightgbm": {"n_estimators": 300, "learning_rate": 0.3, "early_stopping_round": 5},
    "xgboost": {"n_estimators": 300, "learning_rate": 0.3, "early_stopping_rounds": 5},
    "catboost": {"iterations": 300, "learning_rate": 0.3, "early_stopping_rounds": 5, "depth": 4},
}
TOL = 1e-6


@pytest.fixture(scope="module")
def model_cfgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each library's model section as the shipped config composes it."""
    cfgs = {}
    for lib in LIBRARIES:
        out = tmp_path_factory.mktemp(lib) / "params.yaml"
        compose.compose_params(ROOT, compose.HydraSettings(), [f"model={lib}"], out)
        cfgs[lib] = load_params(out)["model"]
    return cfgs


def estimator(cfgs: dict[str, dict[str, Any]], lib: str, task: str) -> Any:
    return build_estimator(task_model_cfg(cfgs[lib], task) | FEW[lib], task)


@pytest.fixture(scope="module")
def featurize_cfg() -> FeaturizeConfig:
    return shipped("featurize", FeaturizeConfig)


@pytest.fixture(scope="module")
def adult(adult_cfg: DataConfig) -> pd.DataFrame:
    raw = pd.concat(
        read_table(FIXTURE / path, adult_cfg.source.read)
        for path in (adult_cfg.source.train, adult_cfg.source.test)
        if path is not None
    )
    frame = normalize(raw.sample(1500, random_state=1), adult_cfg).reset_index(drop=True)
    buffer = io.BytesIO()  # typed as split writes it
    frame.to_parquet(buffer, index=False)
    return pd.read_parquet(buffer)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def fitted(
    frame: pd.DataFrame, valid: pd.DataFrame, target: str, model: Any, cfg: FeaturizeConfig
) -> Any:
    numeric, categorical = feature_columns(frame, target)
    featurizer = build_featurizer(numeric, categorical, cfg)
    featurizer.fit(frame.drop(columns=[target]))
    return fit_pipeline(featurizer, model, frame, target, valid=valid)


def test_shipped_files_are_deterministic_and_quiet(model_cfgs: dict[str, dict[str, Any]]) -> None:
    """The determinism flags and a fixed thread count are in the files, regressors included."""
    lgbm, xgb, cat = (model_cfgs[lib] for lib in LIBRARIES)
    for task in ("binary", "regression"):
        assert {"deterministic": True, "force_row_wise": True, "n_jobs": 1}.items() <= (
            task_model_cfg(lgbm, task).items()
        )
        assert {"tree_method": "hist", "n_jobs": 1}.items() <= task_model_cfg(xgb, task).items()
        assert {"thread_count": 1, "allow_writing_files": False}.items() <= (
            task_model_cfg(cat, task).items()
        )
    seed = model_cfgs["lightgbm"]["random_state"]
    assert xgb["random_state"] == seed and cat["random_state"] == seed
    for lib in LIBRARIES:
        model = estimator(model_cfgs, lib, "regression")
        assert gbdt_library(model) == lib
        assert type(model).__name__.endswith("Regressor")


@pytest.mark.parametrize("lib", LIBRARIES)
def test_two_fits_same_bits_early_stopped_on_valid_exact_shap(
    lib: str,
    model_cfgs: dict[str, dict[str, Any]],
    adult: pd.DataFrame,
    adult_cfg: DataConfig,
    featurize_cfg: FeaturizeConfig,
    tmp_path: Path,
) -> None:
    target = adult_cfg.target
    train, valid, test = adult.iloc[:1000], adult.iloc[1000:1300], adult.iloc[1300:]
    runs = [
        fitted(train, valid, target, estimator(model_cfgs, lib, "binary"), featurize_cfg)
        for _ in range(2)
    ]
    X_test = test.drop(columns=[target])
    digests = [hashlib.md5(p.predict_proba(X_test).tobytes()).hexdigest() for p in runs]
    assert digests[0] == digests[1]
    for run in runs:  # the model file too (models/model.joblib is a DVC output)
        joblib.dump(run[-1], tmp_path / f"{len(digests)}.joblib")
        digests.append(hashlib.md5((tmp_path / f"{len(digests)}.joblib").read_bytes()).hexdigest())
    assert digests[2] == digests[3]
    pipeline = runs[0]
    model = pipeline[-1]
    assert list(pipeline.classes_) == ["<=50K", ">50K"]
    assert set(pipeline.predict(X_test)) <= {"<=50K", ">50K"}

    # Early stopping stopped before the cap, and on the validation split: the
    # score the library recorded for its best iteration is the validation
    # split's log loss of the model it kept.
    X_valid = valid.drop(columns=[target])
    valid_loss = log_loss(valid[target], pipeline.predict_proba(X_valid), labels=model.classes_)
    if lib == "lightgbm":
        trees, best = model.booster_.num_trees(), model.best_score_["valid_0"]["binary_logloss"]
    elif lib == "xgboost":
        trees, best = model.get_booster().num_boosted_rounds(), model.best_score
    else:
        trees, best = model.tree_count_, model.get_best_score()["validation"]["Logloss"]
    assert 0 < trees < 300
    assert best == pytest.approx(valid_loss, abs=1e-5)

    explainer = Explainer(pipeline, train.drop(columns=[target]), seed=0)
    assert (explainer.space, explainer.exact, explainer.outputs) == (LOG_ODDS, True, [">50K"])
    totals = explainer.explain_frame(X_test).totals()[:, 0]
    own = raw_margin(model, pipeline[0].transform(X_test)).reshape(-1)
    assert float(np.abs(totals - own).max()) < TOL
    proba = pipeline.predict_proba(X_test)[:, 1]
    np.testing.assert_allclose(1 / (1 + np.exp(-totals)), proba, rtol=0, atol=TOL)


@pytest.mark.parametrize("lib", LIBRARIES)
def test_multiclass_and_regression_shap_add_up(
    lib: str,
    model_cfgs: dict[str, dict[str, Any]],
    toy_frame: pd.DataFrame,
    featurize_cfg: FeaturizeConfig,
) -> None:
    train, valid = toy_frame.iloc[:90], toy_frame.iloc[90:]
    pipeline = fitted(
        train, valid, "label", estimator(model_cfgs, lib, "multiclass"), featurize_cfg
    )
    X = toy_frame.drop(columns=["label"])
    explainer = Explainer(pipeline, X, seed=0)
    assert (explainer.space, explainer.outputs) == (RAW_SCORE, ["a", "b", "c"])
    own = raw_margin(pipeline[-1], pipeline[0].transform(X))
    assert float(np.abs(explainer.explain_frame(X).totals() - own).max()) < TOL
    assert list(pipeline.predict(X[:5])) == list(
        np.asarray(pipeline.classes_)[pipeline.predict_proba(X[:5]).argmax(axis=1)]
    )

    frame = toy_frame.drop(columns=["label"]).dropna(subset=["num"])
    train, valid = frame.iloc[:80], frame.iloc[80:]
    pipeline = fitted(train, valid, "num", estimator(model_cfgs, lib, "regression"), featurize_cfg)
    X = frame.drop(columns=["num"])
    explainer = Explainer(pipeline, X, seed=0, target="num")
    assert (explainer.space, explainer.exact) == (TARGET_UNITS, True)
    error = np.abs(explainer.explain_frame(X).totals()[:, 0] - pipeline.predict(X)).max()
    assert float(error) < TOL


def test_tune_has_a_search_space_of_constructor_parameters(
    model_cfgs: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """tune.search_space names each class and only parameters its constructor takes."""
    import inspect

    from tabular_pipeline.models.tune import check_space

    out = compose.compose_params(ROOT, compose.HydraSettings(), [], tmp_path / "params.yaml")
    spaces = load_params(out)["tune"]["search_space"]
    for lib in LIBRARIES:
        for task in ("binary", "regression"):
            model = estimator(model_cfgs, lib, task)
            name = type(model).__name__
            check_space(spaces.get(name, {}), name)
            accepted = set(model.get_params()) | set(inspect.signature(type(model)).parameters)
            assert set(spaces[name]) <= accepted, (name, set(spaces[name]) - accepted)
            # the tree count is early stopping's, never searched
            assert not {"n_estimators", "iterations"} & set(spaces[name])


@pytest.mark.parametrize("lib", LIBRARIES)
def test_no_validation_rows_is_a_clear_error(
    lib: str,
    model_cfgs: dict[str, dict[str, Any]],
    toy_frame: pd.DataFrame,
    featurize_cfg: FeaturizeConfig,
) -> None:
    with pytest.raises(PipelineError, match=r"validation split, which is empty: set split\.valid"):
        fitted(
            toy_frame,
            toy_frame.iloc[:0],
            "label",
            estimator(model_cfgs, lib, "multiclass"),
            featurize_cfg,
        )


def test_mlflow_requirements_pin_the_models_library(
    model_cfgs: dict[str, dict[str, Any]], toy_frame: pd.DataFrame, featurize_cfg: FeaturizeConfig
) -> None:
    """The MLflow-logged model names its library (it cannot unpickle without it)."""
    from importlib.metadata import version

    from tabular_pipeline.tracking import pip_requirements

    train, valid = toy_frame.iloc[:90], toy_frame.iloc[90:]
    dists = {"lightgbm": "lightgbm", "xgboost": "xgboost-cpu", "catboost": "catboost"}
    for lib, dist in dists.items():
        model = estimator(model_cfgs, lib, "multiclass")
        pins = pip_requirements(model=fitted(train, valid, "label", model, featurize_cfg))
        assert f"{dist}=={version(dist)}" in pins
        assert not any(p.startswith(tuple(d for d in dists.values() if d != dist)) for p in pins)
        assert f"scikit-learn=={version('scikit-learn')}" in pins
