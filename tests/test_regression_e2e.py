"""End to end, regression: `dvc repro` of a 600-row gapminder sample through `package`,
the Bento served (float predictions, batch, 4xx), `monitor` on its prediction log with
delayed numeric labels, a no-op repro and a queued sweep of two regression models.
One project, one test: building costs most of the time."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import GAPMINDER, git, make_project, ran_stages, run
from tests.servers import bento_server
from tests.test_e2e import ALL_STAGES

pytestmark = pytest.mark.slow

ALL = ALL_STAGES


def gapminder_project(tmp: Path, rows: int = 600) -> Path:
    """The sampled project with data=gapminder as the default and smaller budgets."""
    project = make_project(tmp)
    shutil.copytree(GAPMINDER, project, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    src = GAPMINDER / "data/raw/gapminder/gapminder.csv.gz"
    with gzip.open(src, "rt") as fh:
        header, *lines = fh.read().splitlines()
    picked = sorted(np.random.default_rng(0).choice(len(lines), size=rows, replace=False))
    with gzip.open(project / "data/raw/gapminder/gapminder.csv.gz", "wt") as fh:
        fh.write("\n".join([header, *(lines[i] for i in picked)]) + "\n")
    cfg = project / "conf/config.yaml"
    text = cfg.read_text().replace("  - data: adult\n", "  - data: gapminder\n")
    text = re.sub(r"n_repeats: \d+", "n_repeats: 1", text)
    text = re.sub(r"n_resamples: \d+", "n_resamples: 200", text)
    # The test split holds whole countries (a group split): ~120 of 600 rows,
    # so continents have fewer than the shipped 30 rows a fairness gap needs.
    text = re.sub(r"min_group_size: \d+", "min_group_size: 10", text)
    cfg.write_text(text)
    model = project / "conf/model/hgb.yaml"
    model.write_text(model.read_text().replace("max_iter: 500", "max_iter: 100"))
    # dvc.yaml interpolates paths from params.yaml before the compose stage
    # could rewrite it (as `make repro` does): compose first.
    run([sys.executable, "-m", "stages.compose"], project)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "gapminder sample")
    return project


def test_regression_pipeline_serves_floats_and_reruns_one_param(tmp_path: Path) -> None:
    project = gapminder_project(tmp_path)
    out = run(["dvc", "repro"], project, timeout=900)
    assert ran_stages(out.stdout) == ALL
    assert "task: regression" in out.stderr + out.stdout
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert set(metrics) >= {"rmse", "mae", "r2", "mape", "n_rows", "fairness"}
    assert metrics["r2"] > 0.6 and "accuracy" not in metrics
    assert metrics["fairness"]["continent"]["mae_gap"] is not None
    fairness = json.loads((project / "reports/evaluate/fairness.json").read_text())
    assert set(fairness["ci"]) == {"rmse", "mae", "r2"}
    assert fairness["columns"]["continent"]["mae_gap_ci"]["low"] is not None
    assert json.loads((project / "metrics/register.json").read_text())["promoted"]
    decision = json.loads((project / "reports/register/decision.json").read_text())
    assert decision["decision"] == "promoted"
    assert set(decision["gates"]) == {"floor.r2", "ceiling.rmse", "drift"}
    assert decision["directions"] == {"r2": "higher is better", "rmse": "lower is better"}
    scatter = pd.read_csv(project / "plots/regression/predicted_vs_actual.csv")
    assert len(scatter) == metrics["n_rows"] and scatter.notna().all().all()
    card = (project / "reports/model_card/model_card.md").read_text()
    assert "HistGradientBoostingRegressor" in card and "Largest MAE gap" in card
    # Split by country (conf/data/gapminder.yaml: group_column), CV on (small data).
    summary = json.loads((project / "reports/split/summary.json").read_text())
    assert summary["strategy"] == "group" and summary["leakage"]["passed"]
    countries = {
        n: set(pd.read_parquet(project / f"data/split/{n}.parquet")["country"])
        for n in ("train", "valid", "test")
    }
    assert not countries["train"] & (countries["valid"] | countries["test"])
    assert summary["splits"]["test"]["groups"] == len(countries["test"])
    cv = json.loads((project / "metrics/cv.json").read_text())
    assert cv["enabled"] and cv["strategy"] == "group" and cv["folds"] == 5
    assert cv["rmse"]["ci_low"] < cv["rmse"]["mean"] < cv["rmse"]["ci_high"]
    assert "Strategy `group`" in card and "### Cross-validation (5 folds" in card
    plots = run(["dvc", "plots", "show", "--json"], project)
    payload = json.loads(plots.stdout)
    assert not payload.get("errors"), payload.get("errors")
    assert {
        "Predicted vs actual",
        "Residual distribution",
        "MAE by group",
        "Cross-validation score by fold",
    } <= set(payload["data"])

    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "repro")
    with bento_server(project, tmp_path, "k") as url:
        # The service takes the features only: country (the group column) is not one.
        test = pd.read_parquet(project / "data/split/test.parquet").drop(
            columns=["lifeexp", "country"]
        )
        rows = json.loads(test.to_json(orient="records"))
        auth = {"Authorization": "Bearer k"}
        one = httpx.post(f"{url}/predict", json=rows[0], headers=auth, timeout=30)
        assert one.status_code == 200, one.text
        body = one.json()
        assert set(body) == {"prediction_id", "prediction", "variant", "model_version"}
        assert isinstance(body["prediction"], float)
        batch = httpx.post(f"{url}/predict_batch", json=rows, headers=auth, timeout=30).json()
        batch_ids = batch["prediction_ids"]
        expected = pd.read_parquet(project / "data/predictions/test.parquet")["predicted"]
        np.testing.assert_allclose(batch["predictions"], expected, rtol=1e-9, atol=0)
        assert batch["predictions"][0] == body["prediction"]
        bad = json.dumps(rows[0] | {"gdppercap": 1.0}).replace(
            '"gdppercap": 1.0', '"gdppercap": Infinity'
        )
        inf = httpx.post(
            f"{url}/predict",
            content=bad,
            headers=auth | {"Content-Type": "application/json"},
            timeout=30,
        )
        assert inf.status_code == 400 and "gdppercap" in inf.text
        assert httpx.post(f"{url}/predict", json=rows[0], timeout=30).status_code == 401

    monitor_served_values(project, tmp_path, batch_ids)

    assert ran_stages(run(["dvc", "repro"], project).stdout) == []


# One param re-run and a queued sweep (two more chains): make test-exhaustive.
@pytest.mark.exhaustive
def test_regression_param_rerun_and_queued_sweep_of_two_models(tmp_path: Path) -> None:
    project = gapminder_project(tmp_path)
    run(["dvc", "repro"], project, timeout=900)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "repro")

    # One param change (as tests/test_e2e.py measures it: a fresh MLflow store,
    # so no champion comparison) fits on one screen of `dvc exp show`.
    (project / "mlflow.db").unlink()
    shutil.rmtree(project / "mlartifacts", ignore_errors=True)
    model = project / "conf/model/hgb.yaml"
    model.write_text(model.read_text().replace("learning_rate: 0.05", "learning_rate: 0.1"))
    out = run(["dvc", "repro"], project)
    assert ran_stages(out.stdout) == ["compose", "tune", *ALL[6:]]
    header = run(["dvc", "exp", "show", "--only-changed", "--csv"], project).stdout.splitlines()[0]
    columns = [c for c in header.split(",") if c not in ("rev", "typ")]
    assert "model.learning_rate" in columns and "r2" in columns
    assert len(columns) <= 25, columns
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "learning rate")
    # A queued sweep of two regression models.
    run(["dvc", "exp", "run", "--queue", "-S", "model=linear"], project)
    run(["dvc", "exp", "run", "--queue", "-S", "model=random_forest"], project)
    # `queue start` outlived the default 600 s limit on a loaded 2-core machine
    run(["dvc", "queue", "start", "-j", "1"], project, timeout=1500)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], project).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    assert status.count("Success") == 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    exps = [e["data"] for rev in shown for g in (rev.get("experiments") or []) for e in g["revs"]]
    built = {
        e["params"]["params.yaml"]["data"]["model"]["regressor"]["_target_"]: e["metrics"][
            "metrics/evaluate.json"
        ]["data"]
        for e in exps
    }
    assert set(built) == {
        "sklearn.linear_model.Ridge",
        "sklearn.ensemble.RandomForestRegressor",
    }
    assert all(m["rmse"] > 0 and m["r2"] > 0 for m in built.values())


def monitor_served_values(project: Path, tmp: Path, batch_ids: list[str]) -> None:
    """`monitor` on the regressor's own log (docs/monitoring.md): the served values are the
    numerical prediction column, and delayed labels 8 years above the truth fail the gate
    on a *rise* of RMSE and a fall of R2. The drift report is the expensive part (~10 s)."""
    test = pd.read_parquet(project / "data/split/test.parquet")
    served_logs = sorted((project / "logs").glob("predictions*.jsonl*"))
    assert served_logs, list(project.iterdir())
    labels = tmp / "labels.csv"
    truth = test["lifeexp"].to_numpy() + 8.0
    lines = [f"{pid},{float(v)!r}" for pid, v in zip(batch_ids, truth, strict=True)]
    labels.write_text("prediction_id,label\n" + "\n".join([*lines, "unknown,1"]) + "\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["monitor"]["quality"]["max_drop"]["rmse"] = 2.0  # years: a per-dataset tolerance
    params_file = tmp / "monitor-params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    out_dir, export = tmp / "monitor", tmp / "batch.parquet"
    cmd = [sys.executable, "-m", "tabular_pipeline.monitoring.cli", "--logs", str(project / "logs")]
    cmd += ["--labels", str(labels), "--out", str(out_dir), "--params", str(params_file)]
    cmd += ["--export-training", str(export)]
    result = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-4000:]
    assert "Traceback" not in result.stderr
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["rows"]["served"] == len(batch_ids) + 1
    prediction = summary["drift"]["prediction"]
    assert prediction["column"] == "prediction" and prediction["method"] in (
        "Wasserstein distance (normed)",
        "K-S p_value",
    )
    assert summary["quality"]["counts"]["matched"] == len(batch_ids)
    live = {row["metric"]: row for row in summary["quality"]["metrics"]}
    assert set(live) == {"rmse", "mae", "r2"}
    promoted = json.loads((project / "metrics/evaluate.json").read_text())
    assert live["rmse"]["promoted"] == promoted["rmse"]
    assert live["rmse"]["live"] > promoted["rmse"] + 2 and live["rmse"]["failed"]
    assert live["rmse"]["ci"]["low"] < live["rmse"]["live"] < live["rmse"]["ci"]["high"]
    assert live["r2"]["drop"] > 0.05 and live["r2"]["failed"]
    failures = summary["gate_failures"]
    assert any(f.startswith("live rmse") and "above the promoted" in f for f in failures)
    assert any(f.startswith("live r2") and "below the promoted" in f for f in failures)
    assert "monitoring gate failed" in result.stderr
    prom = (out_dir / "monitor.prom").read_text()
    assert 'tabular_monitor_live_metric{metric="rmse",model="gapminder"}' in prom
    exported = pd.read_parquet(export)
    assert len(exported) == len(batch_ids) and exported["lifeexp"].dtype == np.float64
