from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from tabular_pipeline import tracking
from tabular_pipeline.config import EvaluateConfig, FeaturizeConfig, ImportanceConfig
from tabular_pipeline.evaluation.holdout import evaluate, write_plots
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import build_estimator, fit_pipeline, signature_example
from tests.conftest import shipped

EVALUATE = shipped("evaluate", EvaluateConfig)


@pytest.fixture
def fitted(toy_frame: pd.DataFrame):
    numeric, categorical = feature_columns(toy_frame, "label")
    featurizer = build_featurizer(numeric, categorical, shipped("featurize", FeaturizeConfig)).fit(
        toy_frame.drop(columns=["label"])
    )
    estimator = build_estimator(
        {"_target_": "sklearn.linear_model.LogisticRegression", "max_iter": 500}
    )
    return fit_pipeline(featurizer, estimator, toy_frame, "label")


def test_pipeline_predicts_raw_frames(fitted, toy_frame: pd.DataFrame) -> None:
    proba = fitted.predict_proba(toy_frame.drop(columns=["label"]))
    assert proba.shape == (len(toy_frame), 3)
    assert list(fitted.classes_) == ["a", "b", "c"]


def test_signature_example_turns_ints_into_floats(toy_frame: pd.DataFrame) -> None:
    example = signature_example(toy_frame.drop(columns=["label"]), rows=3)
    assert len(example) == 3
    assert example["count"].dtype == "float64"
    assert example["colour"].dtype == object


def test_evaluate_multiclass_writes_one_curve_per_class(fitted, toy_frame, tmp_path: Path) -> None:
    cfg = replace(EVALUATE, importance=ImportanceConfig(n_repeats=2, max_rows=60))
    result = evaluate(fitted, toy_frame, "label", None, cfg, seed=0)
    # The toy label is a function of the row index only, so no column matters.
    assert result.importance["importance"].abs().max() < 0.2
    write_plots(result, tmp_path)
    for kind in ("roc", "precision_recall", "calibration"):
        assert sorted(p.name for p in (tmp_path / kind).iterdir()) == ["a.csv", "b.csv", "c.csv"]
    assert list(result.predictions.columns) == [
        "actual",
        "predicted",
        "proba_a",
        "proba_b",
        "proba_c",
        "row_id",
    ]
    assert len(result.predictions) == len(toy_frame)
    assert result.predictions["row_id"].dtype == "uint64"
    importance = pd.read_csv(tmp_path / "importance.csv")
    assert set(importance["feature"]) == {"num", "count", "colour"}


def test_importance_finds_the_informative_column(toy_frame: pd.DataFrame) -> None:
    frame = toy_frame.assign(label=toy_frame["colour"].astype(str))  # colour decides the label
    numeric, categorical = feature_columns(frame, "label")
    featurizer = build_featurizer(numeric, categorical, shipped("featurize", FeaturizeConfig)).fit(
        frame.drop(columns=["label"])
    )
    model = fit_pipeline(
        featurizer,
        build_estimator({"_target_": "sklearn.linear_model.LogisticRegression", "C": 10.0}),
        frame,
        "label",
    )
    cfg = replace(EVALUATE, importance=ImportanceConfig(n_repeats=3, max_rows=100))
    result = evaluate(model, frame, "label", None, cfg, seed=0)
    top = result.importance.iloc[0]
    assert top["feature"] == "colour"
    assert top["importance"] > 0.3
    assert result.importance.iloc[1:]["importance"].abs().max() < 0.05
    assert result.metrics["accuracy"] == 1.0


def test_class_absent_from_test_gets_no_curve(fitted, toy_frame: pd.DataFrame) -> None:
    cfg = replace(EVALUATE, importance=ImportanceConfig(n_repeats=1, max_rows=60))
    test = toy_frame[toy_frame["label"] != "c"]
    result = evaluate(fitted, test, "label", None, cfg, seed=0)
    assert sorted(result.curves["roc"]) == ["a", "b"]
    assert result.metrics["per_class"]["c"]["support"] == 0


def test_project_root_follows_dvc_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking.project_root() == tmp_path.resolve()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking.tracking_uri(tmp_path) == "http://mlflow.internal:5000"
    assert not tracking.is_local_store("http://mlflow.internal:5000")


def test_flatten_metrics_and_params() -> None:
    flat = tracking.flatten(
        "test", {"accuracy": 0.9, "roc_auc": None, "per_class": {">50K": {"recall": 0.5}}}
    )
    assert flat == {"test.accuracy": 0.9, "test.per_class._50K.recall": 0.5}
    assert tracking.flatten_params("", {"model": {"C": 1.0}, "seed": 3}) == {
        "model.C": "1.0",
        "seed": "3",
    }


def test_run_tags_carry_dvc_experiment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lark")
    tags = tracking.run_tags(tmp_path)
    assert tags["dvc_exp_name"] == "lucky-lark"
    assert "git_commit" not in tags  # tmp_path is no git repo


def test_training_and_evaluation_land_in_one_run(
    fitted, toy_frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import joblib
    import mlflow

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model_path = tmp_path / "model.joblib"
    joblib.dump(fitted, model_path)
    features = toy_frame.drop(columns=["label"])
    run_id = tracking.log_training_run(
        "unit",
        "toy",
        fitted,
        model_path,
        {"seed": 1},
        {"valid": {"accuracy": 0.5}},
        signature_example(features),
    )
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "x.csv").write_text("a\n1\n")
    tracking.log_evaluation("unit", model_path, {"accuracy": 0.75}, tmp_path / "plots")
    run = mlflow.get_run(run_id)
    assert run.data.metrics["test.accuracy"] == 0.75
    assert run.data.metrics["valid.accuracy"] == 0.5
    assert run.data.tags[tracking.MODEL_HASH_TAG] == tracking.file_sha256(model_path)
    assert (tmp_path / "mlflow.db").exists()
    assert list((tmp_path / "mlartifacts").rglob("MLmodel"))
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert len(loaded.predict(signature_example(features, rows=4))) == 4


def test_chunked_predictions_equal_one_call(fitted, toy_frame: pd.DataFrame) -> None:
    """Evaluate, train and drift predict in chunks: the result must not depend on the size."""
    from tabular_pipeline.models import modeling

    X = toy_frame.drop(columns=["label"])
    whole = fitted.predict_proba(X)
    chunked = modeling.in_chunks(fitted.predict_proba, X, rows=7)  # 120 rows: 18 chunks
    assert chunked.shape == whole.shape
    assert (chunked == whole).all()


def test_hgb_early_stops_on_the_validation_split(toy_frame: pd.DataFrame) -> None:
    """With early_stopping true, HGB is given the pipeline's valid split (no split of its own)."""
    import numpy as np

    from tabular_pipeline.models.modeling import accepts_x_val

    numeric, categorical = feature_columns(toy_frame, "label")
    featurizer = build_featurizer(numeric, categorical, shipped("featurize", FeaturizeConfig))
    featurizer.fit(toy_frame.drop(columns=["label"]))
    hgb = {"_target_": "sklearn.ensemble.HistGradientBoostingClassifier", "max_iter": 20}
    early = build_estimator(hgb | {"early_stopping": True, "n_iter_no_change": 2})
    assert accepts_x_val(early)
    assert not accepts_x_val(build_estimator(hgb | {"early_stopping": "auto"}))
    logreg = build_estimator({"_target_": "sklearn.linear_model.LogisticRegression"})
    assert not accepts_x_val(logreg)
    train, valid = toy_frame.iloc[:80], toy_frame.iloc[80:]
    seen: dict[str, object] = {}
    fit = early.fit

    def spy(X, y, X_val=None, y_val=None):  # what fit_pipeline hands the estimator
        seen.update(rows=len(X), X_val=X_val, y_val=y_val)
        return fit(X, y, X_val=X_val, y_val=y_val)

    early.fit = spy  # type: ignore[method-assign]
    fit_pipeline(featurizer, early, train, "label", valid=valid)
    assert seen["rows"] == 80 and len(seen["X_val"]) == 40  # type: ignore[arg-type]
    assert list(seen["y_val"]) == valid["label"].astype(str).tolist()  # type: ignore[call-overload]
    assert len(early.validation_score_) == early.n_iter_ + 1
    assert np.isfinite(early.validation_score_).all()
