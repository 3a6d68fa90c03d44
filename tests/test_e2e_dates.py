"""A dataset with a date column, set up by config only: calendar features reach the
model, its feature names and SHAP, and beat the same run with the date dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_project, ran_stages, run

pytestmark = pytest.mark.slow


def visits(n: int = 1500, seed: int = 3) -> pd.DataFrame:
    """Whether a shop is busy: mostly a matter of the weekday and the season."""
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365, n), unit="D")
    weekend = days.dayofweek >= 5
    summer = days.month.isin([6, 7, 8])
    p = 0.1 + 0.6 * weekend + 0.2 * summer
    frame = pd.DataFrame(
        {
            "Visit Date": days.strftime("%Y/%m/%d"),  # slash dates: read as text
            "Store": rng.choice(["north", "south", "east"], n),
            "Staff": rng.integers(2, 9, n),
            "Busy": np.where(rng.random(n) < p, "yes", "no"),
        }
    )
    frame.loc[::50, "Visit Date"] = None
    return frame


def test_date_column_by_config_gives_calendar_features_that_help(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "data/raw/visits").mkdir(parents=True)
    visits().to_csv(project / "data/raw/visits/visits.csv", index=False)
    # The only declaration a date needs: its type (make schema proposes it).
    (project / "conf/data/schema/visits.yaml").write_text(
        "types:\n  visit_date: datetime\nmax_null_frac: 0.05\n"
    )
    (project / "conf/data/visits.yaml").write_text(
        "defaults:\n  - /base/data@_here_\n  - _self_\n\n"
        "name: visits\nsource:\n  train: data/raw/visits/visits.csv\n"
        "target: busy\nlabels: ['no', 'yes']\npositive_label: 'yes'\n"
    )
    config = project / "conf/config.yaml"
    config.write_text(config.read_text().replace("- data: adult", "- data: visits"))

    out = run(["dvc", "repro", "explain"], project)
    assert "explain" in ran_stages(out.stdout)
    features = json.loads((project / "reports/featurize/features.json").read_text())
    assert features["kinds"]["visit_date"] == "datetime"
    for part in ("year", "month", "day", "weekday", "total_seconds"):
        assert f"date__visit_date_{part}" in features["features_out"]
    explained = json.loads((project / "reports/explain/summary.json").read_text())
    assert explained["exact"] and explained["max_additivity_error"] < 1e-6
    assert explained["top_features"][0]["feature"] == "visit_date"
    with_date = json.loads((project / "metrics/train.json").read_text())["valid"]
    without = train_without(project, "visit_date")
    assert with_date["roc_auc"] > without["roc_auc"] + 0.1, (with_date, without)
    assert with_date["log_loss"] < without["log_loss"]


def train_without(project: Path, column: str) -> dict[str, Any]:
    """The same featurize and train (params, split, seed) with ``column`` dropped, in
    process: cheaper than a second `dvc repro` from ingest on."""
    from tabular_pipeline.config import FeaturizeConfig, load_params, parse_section
    from tabular_pipeline.evaluation.metrics import score
    from tabular_pipeline.models.features import column_kinds, featurizer_for
    from tabular_pipeline.models.modeling import build_estimator, fit_pipeline, task_model_cfg

    params = load_params(project / "params.yaml")
    train, valid = (
        pd.read_parquet(project / f"data/split/{name}.parquet").drop(columns=[column])
        for name in ("train", "valid")
    )
    featurizer = featurizer_for(
        column_kinds(train, "busy"), parse_section(params, "featurize", FeaturizeConfig)
    ).fit(train.drop(columns=["busy"]))
    estimator = build_estimator(task_model_cfg(params["model"], "binary"), "binary")
    pipeline = fit_pipeline(featurizer, estimator, train, "busy", valid=valid)
    return score(pipeline, valid, "busy")  # as train.json's valid metrics
