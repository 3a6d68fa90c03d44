"""Regression as a task: inference, rules, metrics, CIs, fairness, gates, models, fast path."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import Ridge

from tabular_pipeline.config import DataConfig, FeaturizeConfig, SourceConfig
from tabular_pipeline.data import task as tasks
from tabular_pipeline.data.ingest import normalize, read_table
from tabular_pipeline.data.split import make_splits, strata
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.evaluation import metrics as m
from tabular_pipeline.evaluation import regression as reg
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import fit_pipeline, task_model_cfg
from tabular_pipeline.registry import gates
from tabular_pipeline.serving.fast import FastPredictor
from tabular_pipeline.serving.schema import build_field_specs, frame_to_rows
from tests.conftest import GAPMINDER, ROOT, gapminder_params, shipped


# -- task inference and rules ---------------------------------------------------------
def test_infer_task_from_values_and_config() -> None:
    many = pd.Series(np.linspace(0, 1, 50))
    assert tasks.infer_task(many, [], None)[0] == "regression"
    assert "50 distinct" in tasks.infer_task(many, [], None)[1]
    assert tasks.infer_task(pd.Series([0, 1, 1, 0]), [], None)[0] == "binary"
    assert tasks.infer_task(pd.Series(["a", "b", "c"] * 20), [], None)[0] == "multiclass"
    text_many = pd.Series([f"v{i}" for i in range(40)])
    assert tasks.infer_task(text_many, [], None)[0] == "multiclass"
    # Numeric text counts as numeric; labels mean classification whatever the values.
    assert tasks.infer_task(many.astype(str), [], None)[0] == "regression"
    assert tasks.infer_task(many, ["a", "b"], None)[0] == "binary"
    assert tasks.resolve_task("binary", many, [], None) == ("binary", "data.task")
    with pytest.raises(PipelineError, match=r"data\.task.*'regresion'"):
        tasks.resolve_task("regresion", many, [], None)


def _cfg(**kw: Any) -> DataConfig:
    return DataConfig(name="t", target="y", source=SourceConfig(train="x.csv"), **kw)


def test_ingest_keeps_a_regression_target_numeric_and_drops_nan_inf() -> None:
    raw = pd.DataFrame({"x": range(6), "y": [1.5, np.nan, np.inf, 2.0, "3", -1.0]})
    out = normalize(raw, _cfg(task="regression"))
    assert out["y"].dtype == "float64" and out["y"].tolist() == [1.5, 2.0, 3.0, -1.0]
    assert tasks.task_of_frame(out, "y") == "regression"
    # Inferred: many numeric values -> regression; a classification target stays text.
    inferred = normalize(pd.DataFrame({"y": np.arange(30) * 1.5}), _cfg())
    assert tasks.task_of_frame(inferred, "y") == "regression"
    labels = normalize(pd.DataFrame({"y": [0, 1, 0, 1]}), _cfg())
    assert labels["y"].tolist() == ["0", "1", "0", "1"]
    assert tasks.task_of_frame(labels, "y") == "binary"


def test_validate_rules_name_the_column_and_rule() -> None:
    text = normalize(pd.DataFrame({"y": ["a", "b"] * 20}), _cfg(task="regression"))
    (line,) = tasks.check_task("regression", text, "y", [], None)
    assert "'y'" in line and "must be numeric" in line
    numeric = pd.DataFrame({"y": np.arange(30.0)})
    (line,) = tasks.check_task("regression", numeric, "y", ["a"], None)
    assert "classification only" in line
    constant = pd.DataFrame({"y": [2.0] * 10})
    assert "constant" in tasks.check_task("regression", constant, "y", [], None)[0]
    empty = pd.DataFrame({"y": pd.Series([], dtype="float64")})
    assert "no row has a target value" in tasks.check_task("regression", empty, "y", [], None)[0]
    all_nan = normalize(pd.DataFrame({"y": [np.nan, np.inf]}), _cfg(task="regression"))
    assert all_nan.empty and "'y'" in tasks.check_task("regression", all_nan, "y", [], None)[0]
    three = pd.DataFrame({"y": ["a", "b", "c"]})
    assert "binary" in tasks.check_task("binary", three, "y", [], None)[0]
    assert tasks.check_task("binary", three, "y", [], None, count_classes=False) == []
    assert tasks.check_task("regression", numeric, "y", [], None) == []


def test_split_stratifies_a_continuous_target_on_deciles() -> None:
    frame = pd.DataFrame({"x": np.arange(200), "y": np.linspace(0, 100, 200) ** 2})
    bins = strata(frame, "y")
    assert bins.nunique() == 10 and bins.value_counts().min() == 20
    splits = make_splits(frame, None, "y", 0.2, 0.2, True, seed=0)
    assert [len(s) for s in splits.values()] == [128, 32, 40]
    # Each split spans the target's range (deciles kept in proportion).
    assert all(s["y"].quantile(0.9) > 6000 for s in splits.values())


# -- metrics, CIs, fairness -----------------------------------------------------------
def test_regression_metrics_on_a_tiny_frame() -> None:
    y, pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 4.0, 2.0])
    got = m.regression_metrics(y, pred)
    assert got["rmse"] == pytest.approx(np.sqrt(5 / 4))
    assert got["mae"] == pytest.approx(0.75)
    assert got["r2"] == pytest.approx(1 - 5 / 5)
    assert got["mape"] == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4, abs=1e-6)
    zero = m.regression_metrics(np.array([0.0, 1.0]), np.array([0.5, 1.0]))
    assert zero["mape"] is None and zero["mape_skipped"] == "the target has zeros"
    assert m.test_headline(got) == m.REGRESSION_TEST_HEADLINE


def test_regression_fairness_table_and_gap() -> None:
    frame = pd.DataFrame(
        {
            "g": ["a"] * 40 + ["b"] * 40 + ["c"] * 5 + [None] * 2,
            "y": [10.0] * 87,
        }
    )
    pred = np.array([11.0] * 40 + [7.0] * 40 + [30.0] * 5 + [10.0] * 2)
    gaps, tables = reg.fairness_report(frame, pred, "y", ["g"], 30, 200, 0.95, seed=0)
    table = tables["g"].set_index("group")
    assert table.loc["a", "mae"] == 1.0 and table.loc["a", "mean_residual"] == 1.0
    assert table.loc["b", "mean_residual"] == -3.0 and table.loc["b", "mean_prediction"] == 7.0
    assert table.loc["<missing>", "size"] == 2 and table.loc["c", "mae"] == 20.0
    gap = gaps["g"]
    # Small groups (c, missing) are listed but not compared.
    assert gap["mae_gap"] == 2.0 and gap["groups_compared"] == 2
    assert (gap["worst_group"], gap["best_group"]) == ("b", "a")
    assert gap["mae_gap_ci"]["low"] <= 2.0 <= gap["mae_gap_ci"]["high"]
    with pytest.raises(PipelineError, match=r"data\.sensitive"):
        reg.fairness_report(frame, pred, "y", ["nope"], 30, 10, 0.95, 0)


def test_plot_tables() -> None:
    y = np.arange(5000.0)
    scatter = reg.scatter_points(y, y + 1, seed=0)
    assert len(scatter) == reg.SCATTER_ROWS
    assert scatter.equals(reg.scatter_points(y, y + 1, seed=0))
    hist = reg.residual_histogram(y, y + np.sin(y))
    assert hist["count"].sum() == 5000 and list(hist.columns) == ["residual", "count"]


# -- gates with direction -------------------------------------------------------------
REG_METRICS = {"rmse": 4.0, "mae": 3.0, "r2": 0.8, "mape": None, "fairness": {}}


def test_ceilings_and_floors_name_the_direction() -> None:
    by = {g.name: g for g in gates.ceiling_gates(REG_METRICS, {"rmse": 5.0, "mae": 2.5})}
    assert by["ceiling.rmse"].passed and not by["ceiling.mae"].passed
    assert "lower is better" in by["ceiling.mae"].detail
    decision = gates.Decision(list(by.values()))
    assert decision.directions == {"mae": "lower is better", "rmse": "lower is better"}
    (floor,) = gates.floor_gates(REG_METRICS, {"r2": 0.85})
    assert not floor.passed and "higher is better" in floor.detail
    with pytest.raises(PipelineError, match="r2 is higher-is-better"):
        gates.ceiling_gates(REG_METRICS, {"r2": 0.5})


def reg_differences(shift: float, margins: list[str]) -> dict:
    """Candidate = champion's predictions moved away from the truth by ``shift``."""
    from tabular_pipeline.evaluation import resampling as rs

    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 2000)
    old = y + rng.normal(0, 3, 2000)
    new = old + shift * np.sign(old - y)
    pairs = rs.paired(rs.regression(y, new), rs.regression(y, old), margins, 500, 0.95, 0)
    return {k: d.as_dict() for k, d in pairs.items()}


def test_champion_comparison_uses_the_metric_direction() -> None:
    margins = {"rmse": 0.4, "r2": 0.005, "roc_auc": 0.005, "accuracy": 0.005}
    compared = gates.compared(margins, REG_METRICS)
    # Classification margins do not apply to a regression run.
    assert compared == ["r2", "rmse"]
    diffs = reg_differences(1.0, compared)  # errors 1.0 larger on every row
    by = {g.name: g for g in gates.compare_gates(diffs, margins, "non_inferiority", "2")}
    rmse = by["compare.rmse"]  # lower is better: Δ's upper bound must be below +0.4
    assert diffs["rmse"]["low"] > 0.4 and not rmse.passed and rmse.threshold == 0.4
    assert rmse.value == diffs["rmse"]["high"]
    assert "is above 0.4000" in rmse.detail and "lower is better" in rmse.detail
    r2 = by["compare.r2"]
    assert not r2.passed and r2.threshold == -0.005 and "higher is better" in r2.detail
    better = reg_differences(-0.5, compared)
    assert all(g.passed for g in gates.compare_gates(better, margins, "superiority"))
    decision = gates.decide(
        metrics=REG_METRICS,
        differences=None,
        floors={"r2": 0.5},
        margins={},
        drift=None,
        max_fairness_gap=None,
        ceilings={"rmse": 3},
    )
    assert [g.name for g in decision.failures] == ["ceiling.rmse"]
    (fair,) = gates.fairness_gates({"continent": {"mae_gap": 2.0}}, 1.0)
    assert fair.name == "fairness.continent.mae_gap" and not fair.passed
    # An unknown metric name is still a config error.
    with pytest.raises(PipelineError, match=r"compare\.margins: \['rsme'\]"):
        reg_differences(0.1, gates.compared({"rsme": 0.1}, REG_METRICS))


# -- one model file, every task -------------------------------------------------------
def test_model_configs_resolve_per_task() -> None:
    import yaml

    logreg = yaml.safe_load((ROOT / "conf/model/logreg.yaml").read_text())
    logreg["random_state"] = 0
    assert "regressor" not in task_model_cfg(logreg, "binary")
    ridge = task_model_cfg(logreg, "regression")
    assert ridge["_target_"] == "sklearn.linear_model.Ridge" and "C" not in ridge
    assert ridge["alpha"] == 1.0 and ridge["random_state"] == 0
    mlp = yaml.safe_load((ROOT / "conf/model/mlp.yaml").read_text())
    reg_mlp = task_model_cfg(mlp, "regression")
    assert reg_mlp["monitor"] == "rmse" and reg_mlp["loss"] == "mse"
    assert reg_mlp["hidden_sizes"] == mlp["hidden_sizes"]
    with pytest.raises(PipelineError, match="has no regressor"):
        task_model_cfg({"_target_": "sklearn.svm.SVC"}, "regression")


def test_torch_regressor_learns_and_is_deterministic() -> None:
    from tabular_pipeline.models.torch_mlp import TorchMLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = 1000 + 50 * X[:, 0] - 20 * X[:, 1] ** 2
    kw = {"hidden_sizes": [32], "max_epochs": 30, "patience": 5, "verbose": False}
    kw |= {"batch_size": 64, "lr": 3e-3, "n_frequencies": 4, "d_embedding": 4}
    a = TorchMLPRegressor(**kw).fit(X[:300], y[:300], eval_set=(X[300:], y[300:]))
    b = TorchMLPRegressor(**kw).fit(X[:300], y[:300], eval_set=(X[300:], y[300:]))
    pred = a.predict(X[300:])
    assert np.array_equal(pred, b.predict(X[300:]))
    # Target units come back: far better than the mean, on a target centred at 1000.
    baseline = np.sqrt(np.mean((y[300:] - y[:300].mean()) ** 2))
    assert np.sqrt(np.mean((pred - y[300:]) ** 2)) < 0.5 * baseline
    assert set(a.history_[0]) == {"epoch", "train_loss", "valid_rmse", "valid_mae"}
    assert a.best_epoch_ >= 1
    with pytest.raises(ValueError, match="monitor"):
        TorchMLPRegressor(monitor="log_loss").fit(X, y)


# -- fast path parity on the shipped example -------------------------------------------
@pytest.fixture(scope="module")
def gapminder() -> tuple[DataConfig, dict[str, pd.DataFrame]]:
    from tabular_pipeline.config import load_data_config

    params = gapminder_params()
    cfg = load_data_config(params)
    frame = normalize(read_table(GAPMINDER / cfg.source.train), cfg)
    buffer = io.BytesIO()  # as split writes and train reads it
    frame.to_parquet(buffer, index=False)
    frame = pd.read_parquet(buffer)
    return cfg, make_splits(frame, None, cfg.target, 0.2, 0.2, True, seed=0)


@pytest.mark.parametrize(
    "estimator",
    [
        HistGradientBoostingRegressor(max_iter=60, random_state=0),
        RandomForestRegressor(n_estimators=20, min_samples_leaf=2, random_state=0),
        Ridge(alpha=1.0),
    ],
    ids=["hgb", "random_forest", "ridge"],
)
def test_fast_path_matches_pipeline_predict(
    estimator: Any, gapminder: tuple[DataConfig, dict[str, pd.DataFrame]]
) -> None:
    cfg, splits = gapminder
    train, test = splits["train"], splits["test"]
    numeric, categorical = feature_columns(train, cfg.target)
    featurizer = build_featurizer(numeric, categorical, shipped("featurize", FeaturizeConfig))
    featurizer.fit(train.drop(columns=[cfg.target]))
    pipeline = fit_pipeline(featurizer, estimator, train, cfg.target)
    specs = build_field_specs(featurizer, cfg)
    fast = FastPredictor(pipeline, specs)
    assert fast.fast and fast.regression and fast.classes == []
    assert fast.compiled_estimator == isinstance(estimator, HistGradientBoostingRegressor)
    features = test.drop(columns=[cfg.target])
    expected = pipeline.predict(features)
    rows = frame_to_rows(features, specs)
    got = fast.predict(rows)  # whole test split (sklearn path for big batches)
    one_by_one = np.concatenate([fast.predict([r]) for r in rows])  # compiled small path
    for values in (got, one_by_one):
        assert values.dtype == np.float64
        np.testing.assert_allclose(values, expected, rtol=1e-9, atol=0)
    with pytest.raises(TypeError):
        fast.predict_proba(rows[:1])


# -- plots: scatter in the PR report, header-only files for the other task ------------
def test_scatter_becomes_binned_means_beside_the_diagonal() -> None:
    from tabular_pipeline.charts_md import GRID, plot_markdown

    values = [{"actual_value": x, "predicted_value": x + 1, "rev": "workspace"} for x in range(100)]
    spec = {
        "data": {"values": values},
        "mark": {"type": "point"},
        "encoding": {
            "x": {"field": "actual_value", "type": "quantitative"},
            "y": {"field": "predicted_value", "type": "quantitative"},
        },
    }
    item = {"type": "vega", "revisions": ["workspace"], "content": spec}
    (block,) = plot_markdown({"data": {"Predicted vs actual": [item]}})
    diagonal, means = [
        json.loads(line.split("line ", 1)[1]) for line in block.splitlines() if "line [" in line
    ]
    assert len(diagonal) == len(means) == GRID and "y = x" in block
    assert np.allclose(np.array(means) - np.array(diagonal), 1.0, atol=0.6)


def test_write_plots_fills_the_other_tasks_files_with_headers(tmp_path: Path) -> None:
    from tabular_pipeline.evaluation.holdout import Evaluation, write_plots

    result = Evaluation(metrics={}, task="regression")
    result.regression_plots = {
        "regression/predicted_vs_actual.csv": reg.scatter_points([1.0, 2.0], [1.5, 2.5], 0)
    }
    write_plots(result, tmp_path)
    assert (tmp_path / "roc").is_dir() and not list((tmp_path / "roc").iterdir())
    assert (tmp_path / "fairness.csv").read_text().strip() == "group,selection_rate,tpr,size"
    assert (tmp_path / "regression/residuals.csv").read_text().strip() == "residual,count"
    assert len((tmp_path / "regression/predicted_vs_actual.csv").read_text().splitlines()) == 3


def test_validate_reports_the_task_rules_with_the_suite() -> None:
    from tabular_pipeline.data.validation import summary, validate_tables

    cfg = _cfg(task="regression", labels=["a", "b"])
    frame = normalize(pd.DataFrame({"x": range(30), "y": np.arange(30) * 0.5}), cfg)
    results = validate_tables(cfg, {"train": frame}, 1, None)
    assert not results["train"].success
    assert any("classification only" in f and "'y'" in f for f in results["train"].failures)
    ok = validate_tables(_cfg(task="regression"), {"train": frame}, 1, None)
    assert ok["train"].success
    assert summary(ok, "regression")["task"] == "regression"


def test_prediction_log_records_a_regressors_value(tmp_path: Path) -> None:
    from tabular_pipeline.serving.runtime import PredictionLog, Variant

    log = PredictionLog(str(tmp_path / "p.jsonl"), 10_000, 1)
    log.write_values(
        [{"x": 1.0}, {"x": 2.0}], np.array([3.5, -1.0]), Variant("champion", "t", "s", 1)
    )
    log.close()
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in records] == [3.5, -1.0]
    assert [r["prediction_id"] for r in records] == ["", ""]
    assert records[0]["features"] == {"x": 1.0} and "label" not in records[0]


def test_decision_details_name_directions_and_only_this_tasks_champion_metrics() -> None:
    from tabular_pipeline.registry import promotion

    champion = {"r2": 0.81}
    decision = gates.decide(
        metrics=REG_METRICS,
        differences=reg_differences(0.1, ["r2"]),
        floors={"r2": 0.5},
        margins={"r2": 0.05, "roc_auc": 0.005},
        drift=None,
        max_fairness_gap=None,
        champion_version="1",
        ceilings={"rmse": 5.0},
    )
    headline, details = promotion.records(
        decision=decision,
        verdict="promoted",
        promote=True,
        model_name="m",
        version=2,
        champion_before=1,
        champion=champion,
        compared=gates.compared({"r2": 0.05, "roc_auc": 0.005}, REG_METRICS),
    )
    assert headline == {"promoted": True, "version": 2}
    assert details["champion_rescored"] == {"r2": 0.81}
    assert details["directions"] == {"r2": "higher is better", "rmse": "lower is better"}
    assert set(details["gates"]) == {"floor.r2", "ceiling.rmse", "compare.r2"}
