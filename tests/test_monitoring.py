"""Monitoring of served traffic: log reading, labels, live quality, textfile, retrain batch.

Pure functions on tiny fixtures; the whole command on a served Bento's real
log is in tests/test_serving_e2e.py (classifier, one served session) and
tests/test_regression_e2e.py (regressor).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline.config import DataConfig, MonitorConfig, parse_section
from tabular_pipeline.data import ingest
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.monitoring import dashboard, export, logs, quality, retrain
from tests.conftest import FIXTURE, ROOT, composed_params, fixture_params, gapminder_params

# What the running service exposes (checked against a live /metrics in
# tests/test_serving_e2e.py): the model's metrics and BentoML's own.
SERVICE_METRICS = {
    "tabular_predictions_total",
    "tabular_predict_seconds_bucket",
    "bentoml_service_request_total",
    "bentoml_service_request_duration_seconds_bucket",
}
EXPORTED = {export.PREFIX + name for name in export.METRICS}
METRIC_NAME = re.compile(r"\b((?:tabular|bentoml)_[a-z_]+)\b")


def record(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "prediction_id": f"id{i:03d}",
        "ts": 1000.0 + i,
        "variant": "champion",
        "model_sha256": "abc",
        "features": {"age": 30 + i % 7, "sex": "Female" if i % 2 else "Male"},
        "label": ">50K" if i % 3 == 0 else "<=50K",
        "proba": [0.3, 0.7] if i % 3 == 0 else [0.8, 0.2],
    } | extra


def write_log(path: Path, records: list[Any], tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n" + tail, encoding="utf-8")
    return path


def test_corrupt_and_torn_lines_are_counted_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "logs"
    write_log(folder / "predictions.jsonl.1", [record(i) for i in range(3, 6)])
    write_log(
        folder / "predictions.jsonl",
        [record(0), "{not json", record(1), '["a list"]', {"features": {}}, record(2)],
        tail='{"prediction_id": "id999", "ts": 12',  # a line being written
    )
    (folder / "notes.txt").write_text("not a log")
    with caplog.at_level(logging.WARNING):
        batch = logs.read_logs(str(folder))
    assert batch.skipped == 4
    names = [Path(w).name for w in batch.skipped_where]
    assert names == [
        "predictions.jsonl:2",
        "predictions.jsonl:4",
        "predictions.jsonl:5",
        "predictions.jsonl:7",
    ]
    assert "predictions.jsonl:2: skipped line: not valid JSON" in caplog.text
    assert "predictions.jsonl:5: skipped line: missing key(s) ['proba', 'label']" in caplog.text
    # Sorted by time, whatever the file order: rotated backups hold older rows.
    assert batch.served["prediction_id"].tolist() == [f"id{i:03d}" for i in range(6)]
    assert batch.features.columns.tolist() == ["age", "sex"]
    # A glob and a single file name the same rows.
    assert len(logs.read_logs(str(folder / "predictions.jsonl*")).features) == 6
    assert len(logs.read_logs(str(folder / "predictions.jsonl")).features) == 3


def test_fsspec_urls_are_read_like_files() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe(
        "/bucket/logs/predictions.jsonl",
        "\n".join(json.dumps(record(i)) for i in range(4)).encode(),
    )
    batch = logs.read_logs("memory://bucket/logs/*.jsonl*")
    assert len(batch.features) == 4 and batch.files == ["memory:///bucket/logs/predictions.jsonl"]


def test_empty_or_missing_logs_fail_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="no prediction log found"):
        logs.read_logs(str(tmp_path / "nothing" / "*.jsonl"))
    empty = write_log(tmp_path / "empty.jsonl", [])
    empty.write_text("")
    with pytest.raises(
        PipelineError, match=r"no valid prediction lines in 1 file\(s\) \(empty log\)"
    ):
        logs.read_logs(str(empty))
    torn = write_log(tmp_path / "torn.jsonl", ["{", "[1"])
    with pytest.raises(PipelineError, match=r"2 corrupt line\(s\) skipped"):
        logs.read_logs(str(torn))


def test_labels_file_checks_and_unknown_ids_are_counted(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,x\n")
    with pytest.raises(PipelineError, match=r"missing column\(s\) \['prediction_id'\]"):
        logs.read_labels(bad)
    dupes = tmp_path / "dupes.csv"
    dupes.write_text("prediction_id,label\na,x\na,y\n")
    with pytest.raises(PipelineError, match="duplicate prediction_id"):
        logs.read_labels(dupes)
    with pytest.raises(PipelineError, match="file not found"):
        logs.read_labels(tmp_path / "none.csv")
    good = tmp_path / "labels.csv"
    good.write_text("prediction_id,label\nid000,>50K\nid001,<=50K\nzzz,>50K\nyyy,<=50K\n")
    served = pd.DataFrame({"prediction_id": ["id000", "id001", "id002"], "proba": [[0.1, 0.9]] * 3})
    joined, counts = quality.join_labels(served, logs.read_labels(good))
    assert counts == {"labels": 4, "matched": 2, "unknown_ids": 2, "served": 3}
    assert joined["actual"].tolist() == [">50K", "<=50K"]


def joined_frame(n: int, accuracy: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    actual = rng.choice(["<=50K", ">50K"], size=n)
    right = rng.random(n) < accuracy
    p_pos = np.where((actual == ">50K") == right, 0.8, 0.2)
    return pd.DataFrame({"actual": actual, "proba": [[1 - p, p] for p in p_pos]})


def test_live_quality_gates_on_a_drop_beyond_the_configured_one() -> None:
    classes = ["<=50K", ">50K"]
    promoted = {"accuracy": 0.87, "roc_auc": 0.92, "log_loss": 0.28}
    limits = {"accuracy": 0.05, "log_loss": 0.1}
    metrics = ["accuracy", "roc_auc", "log_loss"]
    worse = quality.live_metrics(joined_frame(400, 0.7), classes, metrics, 200, 0.95, 0)
    assert worse["n_rows"] == 400 and set(worse["ci"]) == {"accuracy", "roc_auc"}
    low, high = worse["ci"]["accuracy"]["low"], worse["ci"]["accuracy"]["high"]
    assert low < worse["values"]["accuracy"] < high
    rows, failures = quality.compare(worse, promoted, limits, n_labels=400, min_labels=100)
    by = {r["metric"]: r for r in rows}
    assert by["accuracy"]["failed"] and by["accuracy"]["drop"] > 0.05
    # log_loss: lower is better, so a *rise* is the drop.
    assert by["log_loss"]["drop"] == pytest.approx(by["log_loss"]["live"] - 0.28, abs=1e-6)
    assert len(failures) == sum(r["failed"] for r in rows) >= 1
    assert failures[0].startswith("live accuracy 0.") and "max_drop.accuracy 0.05" in failures[0]
    # Too few labels: the same drop is reported, not gated.
    rows, failures = quality.compare(worse, promoted, limits, n_labels=40, min_labels=100)
    assert failures == [] and not any(r["failed"] for r in rows)
    fine = quality.live_metrics(joined_frame(400, 0.9), classes, metrics, 200, 0.95, 0)
    assert quality.compare(fine, promoted, limits, 400, 100)[1] == []


def test_labels_outside_the_classes_are_rejected() -> None:
    frame = joined_frame(10, 0.9)
    frame.loc[0, "actual"] = "maybe"
    with pytest.raises(PipelineError, match=r"unknown label\(s\) \['maybe'\]"):
        quality.live_metrics(frame, ["<=50K", ">50K"], ["accuracy"], 10, 0.95, 0)


def test_monitor_section_of_the_shipped_params_parses_and_checks_max_drop() -> None:
    params = copy.deepcopy(composed_params())  # a fresh project has no params.yaml yet
    cfg = parse_section(params, "monitor", MonitorConfig)
    assert cfg.gate.critical_columns == params["data"]["sensitive"]
    assert set(cfg.quality.max_drop) <= set(cfg.quality.metrics) | set(
        cfg.quality.regression_metrics
    )
    section = params["monitor"] | {
        "quality": params["monitor"]["quality"] | {"max_drop": {"f1": 1}}
    }
    with pytest.raises(
        PipelineError, match=r"section 'monitor': quality.max_drop: \['f1'\] not in quality.metrics"
    ):
        parse_section({"monitor": section}, "monitor", MonitorConfig)


def summary_fixture(quality_part: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "drift": {
            "drift_share": 0.25,
            "n_drifted": 1,
            "prediction_drifted": False,
            "prediction": {"column": "prediction"},
            "columns": [
                {"column": "age", "method": "K-S p_value", "score": 0.4, "drifted": False},
                {"column": "prediction", "method": "Wasserstein", "score": 0.01, "drifted": False},
                {
                    "column": 'se"x',
                    "method": "Jensen-Shannon distance",
                    "score": 0.3,
                    "drifted": True,
                },
            ],
        },
        "rows": {"current": 300},
        "logs": {"skipped_lines": 2},
        "gate_failures": ["critical column 'sex' drifted"],
        "quality": quality_part,
    }


def test_textfile_is_valid_exposition_and_deterministic(tmp_path: Path) -> None:
    quality_part = {
        "counts": {"matched": 150},
        "metrics": [
            {"metric": "accuracy", "live": 0.8, "ci": {"low": 0.75, "high": 0.85}, "promoted": 0.87}
        ],
    }
    text = export.render(summary_fixture(quality_part), "adult")
    assert text == export.render(summary_fixture(quality_part), "adult")
    lines = text.splitlines()
    assert 'tabular_monitor_drift_share{model="adult"} 0.25' in lines
    assert 'tabular_monitor_column_drifted{column="se\\"x",model="adult"} 1' in lines
    assert 'tabular_monitor_gate_passed{model="adult"} 0' in lines
    assert 'tabular_monitor_live_metric_low{metric="accuracy",model="adult"} 0.75' in lines
    assert not any('column="prediction"' in line for line in lines)
    names = {line.split("{")[0].split(" ")[0] for line in lines if not line.startswith("#")}
    assert names <= EXPORTED
    no_labels = export.render(summary_fixture(None), "adult")
    assert "live_metric" not in no_labels and "labels_matched" not in no_labels
    import shutil
    import subprocess

    if shutil.which("promtool"):
        out = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_file_is_generated_and_queries_known_metrics() -> None:
    committed = (ROOT / dashboard.OUT).read_text(encoding="utf-8")
    assert committed == dashboard.render(), "run python -m tabular_pipeline.monitoring.dashboard"
    board = json.loads(committed)
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("variant", "latency", "error rate", "drift share", "live quality"):
        assert topic in titles
    used = {name for q in dashboard.queries(board) for name in METRIC_NAME.findall(q)}
    assert used <= SERVICE_METRICS | EXPORTED, used - SERVICE_METRICS - EXPORTED
    assert {"tabular_predictions_total", "tabular_monitor_drift_share"} <= used
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_labelled_batch_is_read_back_by_ingest_as_training_rows(
    tmp_path: Path, adult_cfg: DataConfig
) -> None:
    raw = ingest.read_table(FIXTURE / adult_cfg.source.train, dict(adult_cfg.source.read)).head(300)
    train = ingest.normalize(raw, adult_cfg)
    features = train.drop(columns=[adult_cfg.target]).head(40)
    # What a prediction log holds: JSON values of the served rows.
    served_features = pd.DataFrame(json.loads(features.to_json(orient="records")))
    served = pd.DataFrame({"prediction_id": [f"p{i}" for i in range(40)]})
    labels = pd.DataFrame({"prediction_id": ["p3", "p1", "zz"], "label": [">50K", "<=50K", ">50K"]})
    rows = retrain.labelled_rows(served_features, served, labels, adult_cfg.target)
    assert len(rows) == 2 and rows[adult_cfg.target].tolist() == ["<=50K", ">50K"]
    batch_dir = tmp_path / "batches"
    retrain.write_batch(rows, batch_dir / "b1.parquet")
    retrain.write_batch(rows.head(1), batch_dir / "b2.parquet")
    with pytest.raises(PipelineError, match=r"\.parquet file"):
        retrain.write_batch(rows, tmp_path / "b.csv")
    with pytest.raises(PipelineError, match="no labelled rows"):
        retrain.write_batch(rows.head(0), tmp_path / "b.parquet")
    paths = ingest.expand([str(batch_dir / "*.parquet"), str(batch_dir / "b1.parquet")])
    assert [p.name for p in paths] == ["b1.parquet", "b2.parquet"]
    frames = [train] + [ingest.normalize(ingest.read_table(p), adult_cfg) for p in paths]
    both = ingest.concat(frames)
    assert len(both) == 303 and list(both.columns) == list(train.columns)
    for column in train.columns:
        if isinstance(train[column].dtype, pd.CategoricalDtype):
            assert isinstance(both[column].dtype, pd.CategoricalDtype), column
        else:
            assert both[column].dtype == train[column].dtype or column == adult_cfg.target, column
    assert both[adult_cfg.target].iloc[-3:].tolist() == ["<=50K", ">50K", "<=50K"]
    assert ingest.expand([str(tmp_path / "none" / "*.parquet")]) == []


def test_ingest_stage_appends_extra_train_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adult_cfg: DataConfig
) -> None:
    """The stage itself: `data.source.extra_train` globs inside raw_dir join the train rows."""
    import yaml

    from stages import ingest as ingest_stage

    raw_dir = tmp_path / "data/raw/adult"
    (raw_dir / "batches").mkdir(parents=True)
    raw = ingest.read_table(FIXTURE / adult_cfg.source.train, dict(adult_cfg.source.read))
    raw.head(200).to_csv(raw_dir / "train.csv", index=False)
    train = ingest.normalize(raw.head(200), adult_cfg)
    batch = train.tail(30).astype({c: object for c in train.columns})
    retrain.write_batch(batch.reset_index(drop=True), raw_dir / "batches/b1.parquet")
    # The project's own params with the fixture's data section (no Adult needed).
    params = {**composed_params(), "data": fixture_params()["data"]}
    params["ingest"] = dict(params["ingest"])
    params["data"]["schema"] = str(FIXTURE / params["data"]["schema"])
    params["data"]["raw_dir"] = "data/raw/adult"
    params["data"]["source"] |= {
        "train": "data/raw/adult/train.csv",
        "test": None,
        "extra_train": ["data/raw/adult/batches/*.parquet"],
    }
    params["ingest"]["out_dir"] = "out"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    ingest_stage.main()
    out = pd.read_parquet(tmp_path / "out/train.parquet")
    assert len(out) == 230 and list(out.columns) == list(train.columns)
    # The appended rows read back as they were (JSON: NaN and NA are both null).
    assert out.tail(30).to_json(orient="values") == train.tail(30).to_json(orient="values")
    params["data"]["source"]["extra_train"] = ["/elsewhere/b.parquet"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(
        PipelineError, match=r"data.source.extra_train: /elsewhere/b.parquet is outside"
    ):
        ingest_stage.main()


# -- regression models: a numeric `prediction` per record, numeric labels ---------------
def value_record(i: int, **extra: Any) -> dict[str, Any]:
    """A regressor's record as ``PredictionLog.write_values`` writes it."""
    return {
        "prediction_id": f"r{i:03d}",
        "ts": 2000.0 + i,
        "variant": "champion",
        "model_sha256": "abc",
        "features": {"year": 1952 + 5 * (i % 12), "continent": "Asia" if i % 2 else "Europe"},
        "prediction": 50.0 + i,
    } | extra


def test_regression_records_are_read_and_bad_ones_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_log(
        tmp_path / "predictions.jsonl",
        [
            value_record(2),
            value_record(0),
            value_record(5, prediction="61.2"),
            value_record(6, prediction=True),
            '{"prediction_id": "r007", "features": {}, "prediction": NaN}',
            {"prediction_id": "r008", "prediction": 1.0},
            value_record(1, prediction=70),
        ],
    )
    with caplog.at_level(logging.WARNING):
        batch = logs.read_logs(str(path))
    assert batch.kind == logs.REGRESSION and batch.skipped == 4
    assert "predictions.jsonl:3: skipped line: prediction must be a finite number, got '61.2'" in (
        caplog.text
    )
    assert "predictions.jsonl:4: skipped line: prediction must be a finite number, got True" in (
        caplog.text
    )
    assert "predictions.jsonl:5: skipped line: prediction must be a finite number, got nan" in (
        caplog.text
    )
    assert "predictions.jsonl:6: skipped line: missing key(s) ['features']" in caplog.text
    assert batch.served.columns.tolist() == [
        "prediction_id",
        "ts",
        "variant",
        "model_sha256",
        "prediction",
    ]
    assert batch.served["prediction_id"].tolist() == ["r000", "r001", "r002"]
    assert batch.served["prediction"].tolist() == [50.0, 70.0, 52.0]
    assert batch.served["prediction"].dtype == np.float64
    # A classifier's batch is read exactly as before.
    classic = logs.read_logs(str(write_log(tmp_path / "c.jsonl", [record(0)])))
    assert classic.kind == logs.CLASSIFICATION
    assert classic.served.columns.tolist()[-2:] == ["label", "proba"]


def test_a_log_mixing_both_kinds_fails_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    write_log(folder / "predictions.jsonl", [value_record(0), value_record(1)])
    write_log(folder / "predictions.jsonl.1", [record(0)])
    with pytest.raises(PipelineError) as err:
        logs.read_logs(str(folder))
    message = str(err.value)
    assert "\n" not in message
    assert "mixes classification records (label/proba, e.g. " in message
    assert "predictions.jsonl.1:1) and regression records (prediction, e.g. " in message


def test_log_kind_must_match_the_models_task(tmp_path: Path) -> None:
    from tabular_pipeline.monitoring import monitor

    batch = logs.read_logs(str(write_log(tmp_path / "p.jsonl", [value_record(0)])))
    monitor.check_kind(batch, logs.REGRESSION, Path("models/model.joblib"), "p.jsonl")
    with pytest.raises(
        PipelineError,
        match=r"the log holds a regressor's records \(a numeric prediction\) but "
        r"models/model.joblib is a classification model",
    ):
        monitor.check_kind(batch, logs.CLASSIFICATION, Path("models/model.joblib"), "p.jsonl")


def test_numeric_labels_name_file_line_id_and_value(tmp_path: Path) -> None:
    good = tmp_path / "labels.csv"
    good.write_text("prediction_id,label\nr000,51.5\nr001, 70 \nzzz,60\n")
    labels = logs.read_labels(good, numeric=True)
    assert labels["label"].tolist() == [51.5, 70.0, 60.0] and labels["label"].dtype == np.float64
    bad = tmp_path / "bad.csv"
    bad.write_text("prediction_id,label\nr000,51.5\nr001,old\nr002,inf\nr003,60\n")
    with pytest.raises(PipelineError) as err:
        logs.read_labels(bad, numeric=True)
    assert str(err.value) == (
        f"monitor --labels {bad}: 2 label(s) are not finite numbers, which a regression "
        "model's labels must be: line 3 (prediction_id 'r001': 'old'); "
        "line 4 (prediction_id 'r002': 'inf')"
    )
    # The same file is fine for a classifier: labels stay text.
    assert logs.read_labels(bad)["label"].tolist() == ["51.5", "old", "inf", "60"]


def regression_joined(n: int, noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    actual = rng.normal(60.0, 10.0, size=n)
    return pd.DataFrame({"actual": actual, "prediction": actual + rng.normal(0.0, noise, size=n)})


def test_live_regression_quality_uses_evaluates_metrics_and_bootstrap() -> None:
    from tabular_pipeline.evaluation import metrics as m
    from tabular_pipeline.evaluation import resampling

    joined = regression_joined(300, 4.0)
    live = quality.live_regression_metrics(joined, ["rmse", "mae", "r2", "mape"], 200, 0.9, 3)
    expected = m.regression_metrics(joined["actual"], joined["prediction"])
    assert live["values"] == {k: expected[k] for k in ("rmse", "mae", "r2", "mape")}
    assert live["n_rows"] == 300 and set(live["ci"]) == {"rmse", "mae", "r2"}  # mape: point only
    scored = resampling.regression(joined["actual"], joined["prediction"])
    assert live["ci"] == resampling.bootstrap_ci(scored, ["rmse", "mae", "r2"], 200, 0.9, 3)
    for name in ("rmse", "mae", "r2"):
        assert live["ci"][name]["low"] < live["values"][name] < live["ci"][name]["high"]
    with pytest.raises(PipelineError, match=r"regression_metrics: \['accuracy'\] are not computed"):
        quality.live_regression_metrics(joined, ["accuracy"], 10, 0.9, 0)


def test_regression_gate_reads_a_rise_of_an_error_metric_as_the_drop() -> None:
    promoted = {"rmse": 4.0, "mae": 3.0, "r2": 0.8, "mape": 0.05}
    limits = {"rmse": 1.0, "r2": 0.05, "accuracy": 0.05}  # accuracy: the other task's, ignored
    metrics = ["rmse", "mae", "r2"]
    worse = quality.live_regression_metrics(regression_joined(400, 6.0), metrics, 100, 0.95, 0)
    rows, failures = quality.compare(worse, promoted, limits, n_labels=400, min_labels=100)
    by = {r["metric"]: r for r in rows}
    assert by["rmse"]["live"] > 5.0 and by["rmse"]["failed"]
    assert by["rmse"]["drop"] == pytest.approx(by["rmse"]["live"] - 4.0, abs=1e-6)
    assert by["mae"]["drop"] > 0 and not by["mae"]["failed"]  # no max_drop: reported only
    assert by["r2"]["drop"] == pytest.approx(0.8 - by["r2"]["live"], abs=1e-6)
    rmse_line = next(f for f in failures if f.startswith("live rmse"))
    assert re.fullmatch(
        r"live rmse \d\.\d{4} \(CI [\d.]+-[\d.]+, 400 labels\) is \d\.\d{4} above the promoted "
        r"4\.0000 \(monitor\.quality\.max_drop\.rmse 1\.0, lower is better\)",
        rmse_line,
    ), rmse_line
    # A better model (lower error) is a negative drop: never a failure.
    better = quality.live_regression_metrics(regression_joined(400, 1.0), metrics, 100, 0.95, 0)
    rows, failures = quality.compare(better, promoted, limits, 400, 100)
    assert failures == [] and all(r["drop"] < 0 for r in rows)


def test_max_drop_lists_both_tasks_metrics_and_is_never_negative() -> None:
    params = copy.deepcopy(composed_params())
    cfg = parse_section(params, "monitor", MonitorConfig)
    assert cfg.quality.regression_metrics == params["evaluate"]["bootstrap"]["regression_metrics"]
    assert "r2" in cfg.quality.max_drop
    q = params["monitor"]["quality"]
    section = params["monitor"] | {"quality": q | {"max_drop": {"rmse": -1.0}}}
    with pytest.raises(PipelineError, match=r"quality.max_drop: \['rmse'\] negative"):
        parse_section({"monitor": section}, "monitor", MonitorConfig)


def test_textfile_carries_regression_live_metrics(tmp_path: Path) -> None:
    quality_part = {
        "counts": {"matched": 120},
        "metrics": [
            {"metric": "rmse", "live": 5.25, "ci": {"low": 4.8, "high": 5.7}, "promoted": 4.0},
            {"metric": "r2", "live": 0.71, "ci": {"low": 0.66, "high": 0.76}, "promoted": 0.8},
            {"metric": "mape", "live": 0.08, "ci": None, "promoted": 0.06},
        ],
    }
    text = export.render(summary_fixture(quality_part), "gapminder")
    lines = text.splitlines()
    assert 'tabular_monitor_live_metric{metric="rmse",model="gapminder"} 5.25' in lines
    assert 'tabular_monitor_live_metric_high{metric="rmse",model="gapminder"} 5.7' in lines
    assert 'tabular_monitor_promoted_metric{metric="rmse",model="gapminder"} 4' in lines
    assert 'tabular_monitor_live_metric{metric="mape",model="gapminder"} 0.08' in lines
    assert not any('metric="mape"' in line for line in lines if "_low" in line)
    assert 'tabular_monitor_labels_matched{model="gapminder"} 120' in lines
    import shutil
    import subprocess

    if shutil.which("promtool"):
        out = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stdout + out.stderr
    # The dashboard shows target-unit errors apart from the 0-1 metrics.
    board = dashboard.dashboard()
    by_title = {p["title"]: dashboard.queries({"panels": [p]}) for p in board["panels"]}
    errors = next(q for t, q in by_title.items() if t.startswith("Live error"))
    assert all('metric=~"rmse|mae"' in q for q in errors)


def test_labelled_regression_batch_is_read_back_by_ingest_with_a_numeric_target(
    tmp_path: Path,
) -> None:
    from tabular_pipeline.config import load_data_config
    from tests.conftest import GAPMINDER

    params = gapminder_params()
    cfg = load_data_config(params)
    train = ingest.normalize(ingest.read_table(GAPMINDER / cfg.source.train).head(200), cfg)
    features = train.drop(columns=[cfg.target]).head(20)
    served_features = pd.DataFrame(json.loads(features.to_json(orient="records")))
    served = pd.DataFrame({"prediction_id": [f"p{i}" for i in range(20)]})
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("prediction_id,label\np4,61.25\np2,48\nzz,70\n")
    labels = logs.read_labels(labels_file, numeric=True)
    rows = retrain.labelled_rows(served_features, served, labels, cfg.target)
    assert rows[cfg.target].tolist() == [48.0, 61.25]
    retrain.write_batch(rows, tmp_path / "b1.parquet")
    back = ingest.normalize(
        ingest.read_table(tmp_path / "b1.parquet"), cfg, "b1.parquet", True, task="regression"
    )
    both = ingest.concat([train, back])
    assert len(both) == 202 and list(both.columns) == list(train.columns)
    assert both[cfg.target].dtype == train[cfg.target].dtype == np.float64
    assert both[cfg.target].iloc[-2:].tolist() == [48.0, 61.25]


def test_prediction_log_folder_files_and_backups_are_owner_only(tmp_path: Path) -> None:
    """The log holds every request's features: 0700 folder, 0600 files, under umask 0."""
    import os
    import stat

    from tabular_pipeline.serving.runtime import PredictionLog, Variant

    old = os.umask(0)
    try:
        log = PredictionLog(str(tmp_path / "logs" / "predictions.jsonl"), 600, 2)
        variant = Variant("champion", "t", "s", 1)
        for i in range(12):  # ~200 bytes a line: several rotations at 600 bytes
            log.write([{"age": i, "sex": "Female"}], [">50K"], [[0.3, 0.7]], variant, [f"r{i}"])
        log.close()
    finally:
        os.umask(old)
    folder = tmp_path / "logs"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in files:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    # A file an older version left world-readable is narrowed when reopened.
    (folder / "predictions.jsonl").chmod(0o644)
    PredictionLog(str(folder / "predictions.jsonl"), 600, 2).close()
    assert stat.S_IMODE((folder / "predictions.jsonl").stat().st_mode) == 0o600
    assert logs.read_logs(str(folder)).features["age"].tolist()[-1] == 11


def test_textfile_carries_prediction_drift_score_and_importance() -> None:
    summary = summary_fixture(None)
    summary["drift"]["prediction"] = {
        "column": "prediction",
        "method": "K-S p_value",
        "score": 1.234567e-9,
        "drifted": True,
    }
    summary["drift"]["prediction_drifted"] = True
    for column, share in zip(summary["drift"]["columns"], (0.18, None, 0.03), strict=True):
        if share is not None:
            column["importance"] = share
    lines = export.render(summary, "adult").splitlines()
    assert (
        'tabular_monitor_prediction_drift_score{method="K-S p_value",model="adult"} 1.23e-09'
        in lines
    )
    assert 'tabular_monitor_prediction_drifted{model="adult"} 1' in lines
    assert 'tabular_monitor_column_importance{column="age",model="adult"} 0.18' in lines
    assert 'tabular_monitor_column_importance{column="se\\"x",model="adult"} 0.03' in lines
