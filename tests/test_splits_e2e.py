"""End to end with the real dvc CLI: a time split set up by config only (through `package`),
a planted leak and a column in one source file only, each stopping the pipeline with one
line and dvc.lock unchanged. The group split through `package` is in
tests/test_regression_e2e.py (Gapminder splits by country)."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ran_stages, run
from tests.test_e2e import ALL_STAGES
from tests.test_regression_e2e import gapminder_project

pytestmark = pytest.mark.slow


def test_time_split_by_config_only_through_package(tmp_path: Path) -> None:
    project = gapminder_project(tmp_path, rows=600)
    data = project / "conf/data/gapminder.yaml"
    # A model of 600 sampled rows predicting later years misses Gapminder's floors
    # (R² 0.38): this test is about the split, so the floors go.
    text = data.read_text().replace("min_metrics:\n  r2: 0.6\n", "min_metrics: {}\n")
    text = text.replace("max_metrics:\n  rmse: 8.0\n", "max_metrics: {}\n")
    assert "min_metrics: {}" in text and "max_metrics: {}" in text
    data.write_text(text + "time_column: year\n")
    cfg = project / "conf/config.yaml"
    text = cfg.read_text().replace("  strategy: auto\n", "  strategy: time\n")
    cfg.write_text(re.sub(r"(?m)^  gap: 0 ", "  gap: 5 ", text))
    out = run(["dvc", "repro"], project, timeout=1200)
    assert ran_stages(out.stdout) == ALL_STAGES
    assert (project / "models/service.bento").stat().st_size > 0
    drift = json.loads((project / "reports/drift/summary.json").read_text())
    # The test split is a later period by design: drift is recorded, not enforced.
    assert drift["gate_failures"] == []
    summary = json.loads((project / "reports/split/summary.json").read_text())
    assert summary["strategy"] == "time" and summary["leakage"]["passed"]
    parts = summary["splits"]
    # Years 1952-2007: test from 1996 (last 20 % of the range), a 5-year embargo before
    # valid and before test.
    assert parts["test"]["time_min"] == 1997 and parts["test"]["time_max"] == 2007
    assert parts["train"]["time_max"] + 5 < parts["valid"]["time_min"]
    assert parts["valid"]["time_max"] + 5 < parts["test"]["time_min"]
    train = pd.read_parquet(project / "data/split/train.parquet")
    assert train["year"].is_monotonic_increasing  # ordered, never shuffled
    cv = json.loads((project / "metrics/cv.json").read_text())
    assert cv["enabled"] and cv["strategy"] == "time" and cv["folds"] == 5
    folds = pd.read_csv(project / "reports/cv/folds.csv")
    assert folds["n_train"].is_monotonic_increasing  # expanding windows
    assert "split on 'year'" in out.stderr + out.stdout


def lock(project: Path, stage: str) -> object:
    """The stage's dvc.lock entry (compose, which ran fine before it, may move on)."""
    return yaml.safe_load((project / "dvc.lock").read_text())["stages"][stage]


def failed(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (out.stdout + out.stderr).splitlines() if " ERROR " in line]


def test_planted_leak_stops_split_with_one_line(
    project: Path, dvc: Callable[..., subprocess.CompletedProcess]
) -> None:
    before = lock(project, "split")
    # Adult's best single feature (relationship) scores ROC AUC 0.78 on the fixture's
    # validation split, the next (marital_status) 0.76: a threshold between the two
    # plants the "leaked column".
    cfg = project / "conf/config.yaml"
    cfg.write_text(
        cfg.read_text().replace("max_single_feature_score: 0.95", "max_single_feature_score: 0.77")
    )
    out = dvc("repro", "split", check=False)
    assert out.returncode != 0
    errors = failed(out)
    assert len(errors) == 1, errors
    assert "leakage single_feature: feature 'relationship' alone scores ROC AUC 0.7" in errors[0]
    assert "threshold split.leakage.max_single_feature_score=0.77" in errors[0]
    assert "Traceback" not in out.stderr
    assert lock(project, "split") == before


def test_a_column_in_the_train_file_only_fails_at_ingest(
    project: Path, dvc: Callable[..., subprocess.CompletedProcess]
) -> None:
    before = lock(project, "ingest")
    path = project / "data/raw/adult/adult.data.csv.gz"
    with gzip.open(path, "rt") as fh:
        lines = fh.read().splitlines()
    lines = [lines[0] + ",audit_score"] + [line + ",1" for line in lines[1:] if line]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    out = dvc("repro", "ingest", check=False)
    assert out.returncode != 0
    errors = failed(out)
    assert len(errors) == 1, errors
    assert (
        "column 'audit_score' is in data/raw/adult/adult.data.csv.gz but not in "
        "data/raw/adult/adult.test.csv.gz" in errors[0]
    )
    assert lock(project, "ingest") == before
