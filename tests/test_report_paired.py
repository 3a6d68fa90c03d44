"""The PR report's paired comparison: per-row predictions of two revisions, on tiny tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tabular_pipeline import report
from tabular_pipeline.evaluation.holdout import row_ids
from tests.conftest import git

SETTINGS = {"confidence": 0.95, "n_resamples": 400, "seed": 0}


def predictions(n: int, worse_rows: int = 0, seed: int = 0, rows_seed: int = 0) -> pd.DataFrame:
    """evaluate's predictions file for a binary model; ``worse_rows`` right answers made wrong."""
    rng = np.random.default_rng(rows_seed)
    test = pd.DataFrame({"x": rng.normal(size=n), "label": np.where(rng.random(n) < 0.3, "y", "n")})
    noise = np.random.default_rng(seed).random(n)
    p = np.clip((test["label"] == "y") * 0.5 + noise * 0.5, 0.001, 0.999).to_numpy()
    right = np.flatnonzero((p > 0.5) == (test["label"] == "y"))[:worse_rows]
    p[right] = 1 - p[right]
    pred = np.where(p > 0.5, "y", "n")
    return pd.DataFrame(
        {
            "actual": test["label"],
            "predicted": pred,
            "proba_n": 1 - p,
            "proba_y": p,
            "row_id": row_ids(test),
        }
    )


def test_changed_model_gets_delta_interval_and_verdict() -> None:
    base = predictions(3000)
    head = predictions(3000, worse_rows=90)  # 3 % of the rows turn wrong
    text = report.compare_predictions(base, head, "main", SETTINGS)
    assert "Both models on the same 3,000 test rows (matched by row ids)" in text
    acc = next(line for line in text.splitlines() if line.startswith("| accuracy |"))
    assert "| -0.0300 | [-0.0" in acc and acc.endswith("| **worse** |")
    assert "exact McNemar test" in text
    same = report.compare_predictions(base, base.copy(), "main", SETTINGS)
    assert same.count("**no detectable difference**") == 4
    assert "| +0.0000 | [+0.0000, +0.0000] |" in same


def test_changed_test_rows_are_said_in_one_line_and_unpaired() -> None:
    base = predictions(3000)
    head = predictions(2500, rows_seed=1)
    text = report.compare_predictions(base, head, "main", SETTINGS)
    first = text.splitlines()[0]
    assert first.startswith("The test rows differ between `main` and the workspace (3,000 vs 2,500")
    assert "unpaired" in first and "interval" not in text.split("\n", 1)[1]
    assert "verdict" not in text


def test_regression_predictions_compare_with_their_directions() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 1500)
    old = y + rng.normal(0, 3, 1500)
    frame = pd.DataFrame({"x": y})
    base = pd.DataFrame({"actual": y, "predicted": old, "row_id": row_ids(frame)})
    head = base.assign(predicted=y + (old - y) * 0.8)  # errors 20 % smaller everywhere
    text = report.compare_predictions(base, head, "main", SETTINGS)
    rmse = next(line for line in text.splitlines() if line.startswith("| rmse |"))
    assert "| lower |" in rmse and rmse.endswith("| **better** |")
    assert next(line for line in text.splitlines() if line.startswith("| r2 |")).endswith(
        "| **better** |"
    )


def dvc(cwd: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stderr}"


@pytest.mark.slow
def test_report_reads_the_base_predictions_through_dvc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A git repo with a DVC stage whose output is the predictions file: the base
    revision's copy comes from its dvc.lock and the cache (changed model: paired;
    changed test data: unpaired)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    params = {
        "evaluate": {"predictions_out": "preds/test.parquet"},
        "register": {"compare": SETTINGS},
        "data": {"group_column": None},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    stage = {
        "cmd": "python make_preds.py",
        "deps": ["make_preds.py", "src.parquet"],
        "outs": ["preds/test.parquet"],
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": stage}}))
    (repo / "make_preds.py").write_text(
        "import pathlib, shutil\n"
        "pathlib.Path('preds').mkdir(exist_ok=True)\n"
        "shutil.copy('src.parquet', 'preds/test.parquet')\n"
    )
    git(repo, "init", "-q", "-b", "main")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    predictions(3000).to_parquet(repo / "src.parquet")
    dvc(repo, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    monkeypatch.chdir(repo)

    predictions(3000, worse_rows=90).to_parquet(repo / "src.parquet")
    dvc(repo, "repro", "-q")
    text = report.paired_section("main")
    assert "Both models on the same 3,000 test rows" in text
    assert next(line for line in text.splitlines() if line.startswith("| accuracy |")).endswith(
        "| **worse** |"
    )

    predictions(2000, rows_seed=5).to_parquet(repo / "src.parquet")
    dvc(repo, "repro", "-q")
    text = report.paired_section("main")
    assert text.startswith("The test rows differ between `main` and the workspace (3,000 vs 2,000")

    assert "No per-row predictions of `nosuchrev`" in report.paired_section("nosuchrev")
