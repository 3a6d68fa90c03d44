"""SHAP explanations: exactness against scikit-learn's own outputs, one-hot sums, plots."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from tabular_pipeline.config import DataConfig, FeaturizeConfig
from tabular_pipeline.data.ingest import normalize, read_table
from tabular_pipeline.explain import report
from tabular_pipeline.explain.shap_values import (
    LOG_ODDS,
    PROBABILITY,
    RAW_SCORE,
    TARGET_UNITS,
    Explainer,
    ExplainError,
    feature_groups,
)
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import fit_pipeline
from tests.conftest import FIXTURE, ROOT, shipped

TOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """HGB's OpenMP fan-out on a loaded 2-core machine: 1 s fits take 50 s."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def featurize_cfg() -> FeaturizeConfig:
    return shipped("featurize", FeaturizeConfig)


@pytest.fixture(scope="module")
def adult(adult_cfg: DataConfig) -> pd.DataFrame:
    raw = pd.concat(  # the committed Adult fixture (train and test rows): no data/raw needed
        read_table(FIXTURE / path, adult_cfg.source.read)
        for path in (adult_cfg.source.train, adult_cfg.source.test)
        if path is not None
    )
    frame = normalize(raw.sample(1800, random_state=1), adult_cfg).reset_index(drop=True)
    buffer = io.BytesIO()  # typed as split writes it
    frame.to_parquet(buffer, index=False)
    return pd.read_parquet(buffer)


def fitted(frame: pd.DataFrame, target: str, estimator: Any, cfg: FeaturizeConfig) -> Any:
    numeric, categorical = feature_columns(frame, target)
    featurizer = build_featurizer(numeric, categorical, cfg)
    featurizer.fit(frame.drop(columns=[target]))
    return fit_pipeline(featurizer, estimator, frame, target)


def check_exact(pipeline: Any, explainer: Explainer, test: pd.DataFrame, own: np.ndarray) -> float:
    """base + sum(contributions) against the model's own output; returns the max error."""
    explanation = explainer.explain_frame(test)
    assert explanation.values.shape == (len(test), len(explanation.features), own.shape[1])
    error = float(np.abs(explanation.totals() - own).max())
    assert error < TOL, error
    return error


@pytest.mark.parametrize(
    "estimator",
    [HistGradientBoostingClassifier(max_iter=40, random_state=0), LogisticRegression(max_iter=500)],
    ids=["hgb", "logreg"],
)
def test_binary_adult_is_exact_in_log_odds(
    adult: pd.DataFrame, adult_cfg: DataConfig, featurize_cfg: FeaturizeConfig, estimator: Any
) -> None:
    train, test = adult.iloc[:1500], adult.iloc[1500:].drop(columns=[adult_cfg.target])
    pipeline = fitted(train, adult_cfg.target, estimator, featurize_cfg)
    explainer = Explainer(pipeline, train.drop(columns=[adult_cfg.target]), seed=0)
    assert (explainer.space, explainer.exact, explainer.outputs) == (LOG_ODDS, True, [">50K"])
    # sklearn directly: decision_function, and the log-odds of predict_proba
    own = pipeline.decision_function(test).reshape(-1, 1)
    check_exact(pipeline, explainer, test, own)
    proba = pipeline.predict_proba(test)[:, 1]
    totals = explainer.explain_frame(test).totals()[:, 0]
    np.testing.assert_allclose(1 / (1 + np.exp(-totals)), proba, rtol=0, atol=TOL)
    # every input column is named, once
    inputs = train.drop(columns=[adult_cfg.target]).columns
    assert sorted(explainer.features) == sorted(inputs) and len(set(explainer.features)) == len(
        inputs
    )


def test_random_forest_is_exact_in_probability(
    adult: pd.DataFrame, adult_cfg: DataConfig, featurize_cfg: FeaturizeConfig
) -> None:
    train, test = adult.iloc[:1500], adult.iloc[1500:1600].drop(columns=[adult_cfg.target])
    forest = RandomForestClassifier(n_estimators=15, min_samples_leaf=2, random_state=0)
    pipeline = fitted(train, adult_cfg.target, forest, featurize_cfg)
    explainer = Explainer(pipeline, seed=0)
    assert explainer.space == PROBABILITY and explainer.exact
    check_exact(pipeline, explainer, test, pipeline.predict_proba(test)[:, 1:])


@pytest.mark.parametrize(
    "estimator",
    [
        HistGradientBoostingClassifier(max_iter=20, random_state=0),
        LogisticRegression(max_iter=500),
        RandomForestClassifier(n_estimators=10, random_state=0),
    ],
    ids=["hgb", "logreg", "rf"],
)
def test_multiclass_is_exact_per_class(
    toy_frame: pd.DataFrame, featurize_cfg: FeaturizeConfig, estimator: Any
) -> None:
    pipeline = fitted(toy_frame, "label", estimator, featurize_cfg)
    X = toy_frame.drop(columns=["label"])
    explainer = Explainer(pipeline, X, seed=0)
    assert explainer.outputs == ["a", "b", "c"]
    if isinstance(estimator, RandomForestClassifier):
        assert explainer.space == PROBABILITY
        own = pipeline.predict_proba(X)
    else:
        assert explainer.space == RAW_SCORE
        own = pipeline.decision_function(X)
    check_exact(pipeline, explainer, X, own)


@pytest.mark.parametrize(
    "estimator",
    [
        HistGradientBoostingRegressor(max_iter=30, random_state=0),
        RandomForestRegressor(n_estimators=10, random_state=0),
        LinearRegression(),
    ],
    ids=["hgb", "rf", "linear"],
)
def test_regressor_is_exact_in_target_units(
    toy_frame: pd.DataFrame, featurize_cfg: FeaturizeConfig, estimator: Any
) -> None:
    frame = toy_frame.drop(columns=["label"])
    numeric, categorical = feature_columns(frame, "num")
    featurizer = build_featurizer(numeric, categorical, featurize_cfg)
    clean = frame.dropna(subset=["num"])
    featurizer.fit(clean.drop(columns=["num"]))
    estimator.fit(featurizer.transform(clean.drop(columns=["num"])), clean["num"])
    pipeline = Pipeline([("features", featurizer), ("model", estimator)])
    X = clean.drop(columns=["num"])
    explainer = Explainer(pipeline, X, seed=0, target="num")
    assert (explainer.space, explainer.outputs) == (TARGET_UNITS, ["num"])
    check_exact(pipeline, explainer, X, pipeline.predict(X).reshape(-1, 1))


def tiny_onehot() -> tuple[Pipeline, pd.DataFrame]:
    """Two columns: colour one-hot (3 categories), size passed through."""
    frame = pd.DataFrame(
        {
            "colour": ["red", "green", "blue", "red", "green", "blue"] * 4,
            "size": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] * 4,
        }
    )
    featurizer = ColumnTransformer(
        [
            ("num", "passthrough", ["size"]),
            ("cat", OneHotEncoder(sparse_output=False), ["colour"]),
        ]
    ).fit(frame)
    model = LinearRegression()
    y = 2.0 * frame["size"] + frame["colour"].map({"red": 3.0, "green": 0.0, "blue": -3.0})
    model.fit(featurizer.transform(frame), y)
    return Pipeline([("features", featurizer), ("model", model)]), frame


def test_onehot_columns_sum_back_to_their_feature() -> None:
    pipeline, frame = tiny_onehot()
    names, groups = feature_groups(pipeline[0])
    assert names == ["size", "colour"]
    assert [g.tolist() for g in groups] == [[0], [1, 2, 3]]
    explanation = Explainer(pipeline, frame, seed=0).explain_frame(frame.iloc[:3])
    # By hand: background mean size 3.5, colours balanced (mean colour effect 0).
    # Row 0: red, size 1 -> size 2 * (1 - 3.5) = -5, colour +3; base = mean(y) = 7.
    np.testing.assert_allclose(explanation.base, [7.0], atol=1e-9)
    np.testing.assert_allclose(
        explanation.values[:, :, 0], [[-5.0, 3.0], [-3.0, 0.0], [-1.0, -3.0]], atol=1e-9
    )


def test_model_without_exact_explainer_is_sampled_additive_and_seeded(
    toy_frame: pd.DataFrame, featurize_cfg: FeaturizeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = fitted(toy_frame, "label", KNeighborsClassifier(5), featurize_cfg)
    X = toy_frame.drop(columns=["label"])
    with caplog.at_level("WARNING"):
        explainer = Explainer(pipeline, X, seed=3, permutations=4, background_rows=20)
    assert "APPROXIMATE" in caplog.text
    assert not explainer.exact and explainer.space == PROBABILITY
    first = explainer.explain_frame(X.iloc[:5])
    # additive by construction, even though the attributions are estimates
    np.testing.assert_allclose(first.totals(), pipeline.predict_proba(X.iloc[:5]), atol=TOL)
    again = Explainer(pipeline, X, seed=3, permutations=4, background_rows=20)
    np.testing.assert_array_equal(again.explain_frame(X.iloc[:5]).values, first.values)


def test_no_background_and_no_exact_explainer_is_a_clear_error(
    toy_frame: pd.DataFrame, featurize_cfg: FeaturizeConfig
) -> None:
    pipeline = fitted(toy_frame, "label", KNeighborsClassifier(5), featurize_cfg)
    with pytest.raises(ExplainError, match="no exact explainer and no background"):
        Explainer(pipeline, None)


def test_native_categorical_hgb_refuses_tree_shap(caplog: pytest.LogCaptureFixture) -> None:
    frame = pd.DataFrame({"c": [0.0, 1.0, 2.0, 1.0] * 30, "x": np.arange(120.0)})
    y = np.where(frame["c"] == 1.0, "yes", "no")
    featurizer = ColumnTransformer([("num", "passthrough", ["c", "x"])]).fit(frame)
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(
        featurizer.transform(frame), y
    )
    pipeline = Pipeline([("features", featurizer), ("model", model)])
    with caplog.at_level("WARNING"):
        explainer = Explainer(pipeline, frame, seed=0, permutations=2)
    assert "native categorical splits" in caplog.text and "shap#3436" in caplog.text
    assert not explainer.exact


def test_report_tables_and_deterministic_plot(
    adult: pd.DataFrame, adult_cfg: DataConfig, featurize_cfg: FeaturizeConfig
) -> None:
    train, test = adult.iloc[:1200], adult.iloc[1500:1700].reset_index(drop=True)
    pipeline = fitted(
        train, adult_cfg.target, HistGradientBoostingClassifier(max_iter=20), featurize_cfg
    )
    explainer = Explainer(pipeline, seed=0)
    X = test.drop(columns=[adult_cfg.target])
    explanation = explainer.explain_frame(X)
    importance = report.importance_table(explanation)
    assert list(importance.columns) == ["feature", "mean_abs_shap"]
    assert importance["mean_abs_shap"].is_monotonic_decreasing
    groups = report.group_contributions(explanation, test, ["sex"])
    assert set(groups["sex"]) == set(test["sex"].astype(str))
    for group, means in groups["sex"].items():
        rows = (test["sex"].astype(str) == group).to_numpy()
        assert means["size"] == int(rows.sum())
        expected = explanation.values[rows, :, 0].mean(axis=0)
        got = [means["mean_contribution"][f] for f in explanation.features]
        np.testing.assert_allclose(got, expected, atol=1e-6)  # rounded to 6 places
    png = [report.summary_png(explanation, X, seed=0, top=8) for _ in range(2)]
    assert png[0] == png[1] and png[0].startswith(b"\x89PNG")
    assert b"Software" not in png[0][:400]


def test_service_explains_rows_as_served(
    adult: pd.DataFrame, adult_cfg: DataConfig, featurize_cfg: FeaturizeConfig
) -> None:
    from tabular_pipeline.serving import explaining
    from tabular_pipeline.serving.fast import FastPredictor
    from tabular_pipeline.serving.schema import build_field_specs, frame_to_rows

    train, test = adult.iloc[:1500], adult.iloc[1500:1540].reset_index(drop=True)
    pipeline = fitted(
        train, adult_cfg.target, HistGradientBoostingClassifier(max_iter=20), featurize_cfg
    )
    specs = build_field_specs(pipeline[0], adult_cfg)
    predictor = FastPredictor(pipeline, specs)
    X = train.drop(columns=[adult_cfg.target])
    settings = {"background": report.background_rows(X, 50, 0), "seed": 0, "permutations": 4}
    explainer, reason = explaining.build(pipeline, predictor, settings, adult_cfg.target)
    assert explainer is not None and reason == ""
    rows = frame_to_rows(test, specs)
    proba = predictor.predict_proba(rows)
    answers = explaining.explain_rows(explainer, predictor, rows, proba)
    own = pipeline.decision_function(test.drop(columns=[adult_cfg.target]))
    for answer, score, p, row in zip(answers, own, proba, rows, strict=True):
        total = answer["base_value"] + sum(c["contribution"] for c in answer["contributions"])
        assert abs(total - score) < TOL and abs(answer["score"] - score) < TOL
        assert abs(1 / (1 + np.exp(-answer["score"])) - p[1]) < TOL
        sizes = [abs(c["contribution"]) for c in answer["contributions"]]
        assert sizes == sorted(sizes, reverse=True)
        assert {c["feature"] for c in answer["contributions"]} == set(row)
        assert all(c["value"] == row[c["feature"]] for c in answer["contributions"])
        assert (answer["space"], answer["output"], answer["exact"]) == (LOG_ODDS, ">50K", True)

    # No explainer applies (no exact one, no background): /explain is disabled, not a crash.
    knn = fitted(train, adult_cfg.target, KNeighborsClassifier(3), featurize_cfg)
    none, why = explaining.build(knn, FastPredictor(knn, specs), {}, adult_cfg.target)
    assert none is None and "no exact explainer" in why


def test_model_card_section_lists_top_features_with_a_reading_note() -> None:
    from tabular_pipeline.reporting import model_card

    summary = {
        "method": "tree SHAP (path-dependent)",
        "exact": True,
        "approximate_reason": None,
        "space": "log-odds",
        "outputs": [">50K"],
        "base_value": [-2.36],
        "rows": 1000,
        "max_additivity_error": 4e-14,
        "top_features": [
            {"feature": "marital_status", "mean_abs_shap": 1.15},
            {"feature": "age", "mean_abs_shap": 0.79},
        ],
    }
    section = model_card.explanations(summary)
    assert section["top_features"] == summary["top_features"]
    assert "not whether the feature causes the outcome" in section["note"]
    assert "exact" in section["note"] and "log-odds" in section["note"]
    lines = model_card._explanation_lines({"explanations": section})
    assert lines[0] == "## What drives the model (SHAP)"
    assert "| marital_status | 1.1500 |" in "\n".join(lines)
    assert model_card._explanation_lines({}) == []
    reason = "TorchMLPClassifier has no exact explainer"
    approximate = model_card.explanations(summary | {"exact": False, "approximate_reason": reason})
    assert "approximate (TorchMLPClassifier has no exact explainer)" in approximate["note"]


def test_shap_is_imported_only_when_explaining() -> None:
    """numba makes `import shap` take seconds: no stage or module imports it at import time."""
    import subprocess
    import sys

    code = (
        "import sys, stages.evaluate, stages.explain, stages.package, stages.register, "
        "tabular_pipeline.serving.explaining, tabular_pipeline.explain.report; "
        "print('shap' in sys.modules, 'numba' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]
