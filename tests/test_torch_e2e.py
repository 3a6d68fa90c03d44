"""End to end with the torch model: `dvc exp run -S model=mlp`, DDP under torchrun, tune.

Tiny budgets (sampled Adult, a few epochs): these check the wiring, not accuracy.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import ran_stages, run
from tests.servers import bento_server

pytestmark = pytest.mark.slow

MLP = ["-S", "model=mlp", "-S", "model.max_epochs=8", "-S", "model.patience=3"]
SMALL = [  # torch predictions are the slow part
    *("-S", "evaluate.importance.n_repeats=1"),
    *("-S", "explain.sampled_rows=10", "-S", "explain.permutations=2"),
    *("-S", "explain.background_rows=20"),
]


def query(project: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute(sql).fetchall()


def train_runs(project: Path) -> list[str]:
    """Runs that logged a model (train runs), by id."""
    rows = query(project, "select distinct run_uuid from metrics where key = 'train.accuracy'")
    return [r[0] for r in rows]


# Two chains (one of them 2-process DDP); the estimator is unit-tested in
# test_torch_mlp.py: make test-exhaustive.
@pytest.mark.exhaustive
def test_mlp_runs_single_and_two_process(project: Path, dvc) -> None:
    out = dvc("exp", "run", *MLP, *SMALL)
    log = out.stdout + out.stderr
    assert "package" in ran_stages(out.stdout)  # the whole chain, serving artifact included
    explained = json.loads((project / "reports/explain/summary.json").read_text())
    assert explained["exact"] is False and explained["space"] == "probability"
    assert explained["max_additivity_error"] < 1e-6  # sampled, but additive
    assert "explanations are APPROXIMATE" in log
    curve = pd.read_csv(project / "reports/train/curve.csv")
    epochs = len(curve)
    assert 1 <= epochs <= 8 and curve["epoch"].tolist() == list(range(1, epochs + 1))
    assert sum(f"epoch {e}/8:" in log for e in range(1, epochs + 1)) == epochs
    single = json.loads((project / "metrics/evaluate.json").read_text())
    assert single["accuracy"] > 0.78

    # MLflow: per-epoch history and a model that loads without this repository.
    (run_id,) = train_runs(project)
    steps = query(
        project,
        f"select step from metrics where run_uuid = '{run_id}' and key = 'curve.valid_log_loss'",
    )
    assert sorted(s for (s,) in steps) == list(range(1, epochs + 1))
    (model_dir,) = [p.parent for p in (project / "mlartifacts").rglob("MLmodel")]
    assert (model_dir / "code/tabular_pipeline/models/torch_mlp.py").exists()
    assert "torch==" in (model_dir / "requirements.txt").read_text()
    rows = pd.read_parquet(project / "data/split/test.parquet").drop(columns=["income"]).head(20)
    rows.to_parquet(project.parent / "rows.parquet")
    script = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('tabular_pipeline') is None, 'package visible'\n"
        "import mlflow, pandas as pd\n"
        f"model = mlflow.sklearn.load_model({str(model_dir)!r})\n"
        "print(model.predict_proba(pd.read_parquet('rows.parquet')).shape)\n"
    )
    # -S: no site processing, so the project's editable install is invisible.
    site = sysconfig.get_paths()["purelib"]
    loaded = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=project.parent,
        env={"PYTHONPATH": site, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip() == "(20, 2)"

    # The mlp Bento serves (its src/ ships torch_mlp.py, its requirements torch).
    spec = json.loads((project / "reports/featurize/features.json").read_text())
    served_rows = [
        {k: (None if pd.isna(v) else v) for k, v in r.items()}
        for r in rows[spec["numeric"] + spec["categorical"]].astype(object).to_dict("records")
    ]
    evaluated = pd.read_parquet(project / "data/predictions/test.parquet").head(20)
    auth = {"Authorization": "Bearer k"}
    with bento_server(project, project.parent, "k") as url:
        one = httpx.post(f"{url}/predict", json=served_rows[0], headers=auth, timeout=60)
        batch = httpx.post(f"{url}/predict_batch", json=served_rows, headers=auth, timeout=60)
        bad = httpx.post(f"{url}/predict_batch", json=[], headers=auth, timeout=60)
    assert one.status_code == 200, one.text
    assert one.json()["probabilities"][">50K"] == pytest.approx(
        evaluated["proba_>50K"].iloc[0], abs=1e-6
    )
    assert batch.status_code == 200, batch.text
    served_proba = [p[">50K"] for p in batch.json()["probabilities"]]
    assert served_proba == pytest.approx(evaluated["proba_>50K"].tolist(), abs=1e-6)
    assert batch.json()["labels"] == evaluated["predicted"].astype(str).tolist()
    assert bad.status_code == 400

    # Two processes under torchrun: both train, rank 0 alone writes and logs.
    # Up to evaluate: the stages after it do not depend on how train ran.
    model = project / "models/model.joblib"
    model.unlink()
    out = dvc("exp", "run", *MLP, *SMALL, "-S", "train.distributed.nproc_per_node=2", "evaluate")
    assert ran_stages(out.stdout) == ["train", "evaluate"]
    log = out.stdout + out.stderr
    assert "--standalone --nproc_per_node=2" in log
    assert "(process 1 of 2)" in log and "(process 2 of 2)" in log
    assert log.count("MLflow run ") == 2  # train once, evaluate once
    assert model.exists() and len(train_runs(project)) == 2
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["train"]["distributed"]["nproc_per_node"] == 2
    ddp = json.loads((project / "metrics/evaluate.json").read_text())
    assert abs(ddp["accuracy"] - single["accuracy"]) <= 0.01, (ddp["accuracy"], single)


def test_tune_stage_feeds_train_params(project: Path, dvc) -> None:
    args = [*MLP, "-S", "model.max_epochs=2", "-S", "tune.enabled=true", "-S", "tune.n_trials=2"]
    out = dvc("exp", "run", *args, "train")  # the stages after train are tested above
    # The MLP scales its numeric columns (the `scaled` featurize preset; hgb: `trees`).
    assert ran_stages(out.stdout) == ["featurize", "tune", "train"]
    log = out.stdout + out.stderr
    for n in (1, 2):
        assert f"trial {n}/2:" in log
    best = yaml.safe_load((project / "reports/tune/best_params.yaml").read_text())
    assert best["tuned_for"].endswith("TorchMLPClassifier")
    assert set(best["model"]) == {"lr", "weight_decay", "dropout", "frequency_scale", "d_embedding"}
    trials = pd.read_csv(project / "reports/tune/trials.csv")
    assert trials["trial"].tolist() == [0, 1] and trials["value"].notna().all()
    # The tuned values are DVC params of train.
    diff = run(["dvc", "params", "diff", "--json"], project).stdout
    assert "reports/tune/best_params.yaml" in diff and "model.lr" in diff
    # Nested MLflow runs, one per trial, under one study run.
    parents = query(project, "select value from tags where key = 'mlflow.parentRunId'")
    assert len(parents) == 2 and len({p for (p,) in parents}) == 1
    # Reruns giving identical trials: tests/test_torch_mlp.py (seeded study, byte-identical fits).
