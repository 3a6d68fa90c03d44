"""End to end: the real `dvc` CLI on a temporary git copy with sampled Adult data."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import git, make_project, ran_stages, run

pytestmark = pytest.mark.slow

ALL_STAGES = [
    "compose",
    "ingest",
    "validate",
    "split",
    "featurize",
    "tune",
    "cv",
    "train",
    "evaluate",
    "explain",
    "drift",
    "register",
    "package",
]
# What a model param change re-runs (tune declares the model params too).
MODEL_STAGES = ALL_STAGES[ALL_STAGES.index("tune") :]


def lock_outs(project: Path) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {
        f"{stage}:{out['path']}": out["md5"]
        for stage, spec in lock["stages"].items()
        for out in spec.get("outs", [])
    }


def mlflow_runs(project: Path) -> list[dict[str, str]]:
    with sqlite3.connect(project / "mlflow.db") as db:
        rows = db.execute("select run_uuid, name from runs").fetchall()
        tags = db.execute("select run_uuid, key, value from tags").fetchall()
    runs = {uuid: {"name": name} for uuid, name in rows}
    for uuid, key, value in tags:
        runs[uuid][key] = value
    return list(runs.values())


def test_full_repro_builds_everything(project: Path) -> None:
    for path in (
        "data/ingested/train.parquet",
        "data/split/test.parquet",
        "models/model.joblib",
        "metrics/evaluate.json",
        "plots/roc/gt50K.csv",
        "plots/confusion.csv",
        "reports/validate/data_docs/index.html",
        "reports/drift/report.html",
        "reports/model_card/model_card.md",
        "metrics/register.json",
        "plots/fairness.csv",
    ):
        assert (project / path).exists(), path
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert metrics["n_rows"] == 800
    assert 0.7 < metrics["accuracy"] <= 1.0
    per_class = json.loads((project / "reports/evaluate/per_class.json").read_text())
    assert set(per_class) == {"<=50K", ">50K"}
    assert "error" not in metrics and "per_class" not in metrics  # DVC reads "error" as a failure
    status = run(["dvc", "status"], project)
    assert "up to date" in status.stdout
    shown = run(["dvc", "metrics", "show"], project)
    assert "failed" not in (shown.stdout + shown.stderr).lower()
    assert "accuracy" in shown.stdout


def test_noop_repro_runs_nothing_and_is_fast(dvc) -> None:
    start = time.perf_counter()
    out = dvc("repro")
    elapsed = time.perf_counter() - start
    assert ran_stages(out.stdout) == []
    assert "Data and pipelines are up to date." in out.stdout
    assert elapsed < 10, f"no-op repro took {elapsed:.1f}s"


# A conf edit -> the stages whose declared params it changes (what `dvc status`
# reports after compose; DVC then re-runs everything downstream of them).
CONF_EDITS = [
    ("conf/config.yaml", "valid_size: 0.2 ", "valid_size: 0.25 ", {"split", "cv"}),
    ("conf/featurize/scaled.yaml", "min_frequency: 10 ", "min_frequency: 5 ", {"featurize", "cv"}),
    ("conf/config.yaml", "n_trials: 20 ", "n_trials: 5 ", {"tune"}),
    ("conf/config.yaml", "nproc_per_node: 1", "nproc_per_node: 2", {"train"}),
    ("conf/config.yaml", "n_resamples: 1000", "n_resamples: 200", {"evaluate"}),
    ("conf/config.yaml", "max_drift_share: 0.5", "max_drift_share: 0.4", {"drift"}),
    ("conf/config.yaml", "alias: champion", "alias: best", {"register"}),
    ("conf/config.yaml", "sample_rows: 1000 ", "sample_rows: 500 ", {"explain"}),
    ("conf/config.yaml", "permutations: 10 ", "permutations: 6 ", {"explain", "package"}),
    (
        "conf/model/hgb.yaml",
        "max_leaf_nodes: 31",
        "max_leaf_nodes: 7",
        {"tune", "cv", "train", "register"},
    ),
    (
        "conf/data/adult.yaml",
        'positive_label: ">50K"',
        'positive_label: "<=50K"',
        # ingest reads it to tell the task (regression refuses labels); its output is
        # unchanged, so nothing runs for ingest's sake.
        {"ingest", "validate", "evaluate", "drift"},
    ),
]


def test_conf_edit_reruns_only_affected_stages(project: Path, dvc) -> None:
    cfg = project / "conf/config.yaml"
    cfg.write_text(cfg.read_text().replace("calibration_bins: 10", "calibration_bins: 5"))
    out = dvc("repro")
    assert ran_stages(out.stdout) == ["compose", "evaluate"]
    assert (
        yaml.safe_load((project / "params.yaml").read_text())["evaluate"]["calibration_bins"] == 5
    )
    assert len((project / "plots/calibration/gt50K.csv").read_text().splitlines()) <= 6
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "5 calibration bins")

    # Each stage declares exactly the params it reads: an edit makes only the
    # stages that read it stale. (The cascade below them is DVC's own; real
    # runs of it: the model edit in test_report_compares_against_base, the
    # full pipeline in the build, the fresh clone and the multiclass test.)
    # In-process: the compose stage's own function and DVC's status API.
    from dvc.repo import Repo

    from tabular_pipeline import compose

    settings = compose.hydra_settings(project)
    for path, old, new, stale in CONF_EDITS:
        conf = project / path
        text = conf.read_text()
        assert old in text, (path, old)
        conf.write_text(text.replace(old, new, 1))
        compose.compose_params(project, settings, [])
        with Repo(str(project)) as repo:
            status = repo.status()  # keys: "<dvc.yaml path>:<stage>"
        assert {key.rsplit(":", 1)[-1] for key in status} - {"compose"} == stale, (path, new)
        git(project, "checkout", "-q", "--", ".")
    assert "up to date" in dvc("status").stdout


def test_set_param_overrides_reach_the_run(project: Path, dvc) -> None:
    # A conf edit and -S overrides together: compose runs (conf/ changed) but
    # must keep the overrides DVC wrote into params.yaml.
    cfg = project / "conf/config.yaml"
    cfg.write_text(cfg.read_text().replace("n_repeats: 5", "n_repeats: 2"))
    out = dvc("exp", "run", "-S", "model=logreg", "-S", "model.C=0.7")
    # logreg scales its numeric columns (the `scaled` featurize preset; hgb: `trees`).
    assert ran_stages(out.stdout) == ["compose", "featurize", *MODEL_STAGES]
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["model"]["_target_"] == "sklearn.linear_model.LogisticRegression"
    assert params["model"]["C"] == 0.7
    assert params["evaluate"]["importance"]["n_repeats"] == 2
    runs = mlflow_runs(project)
    assert [r["name"] for r in runs] == ["adult-LogisticRegression"]
    assert runs[0]["dvc_exp_name"] and runs[0]["git_commit"]


# A full sweep (two experiments through the chain): make test-exhaustive.
@pytest.mark.exhaustive
def test_queued_sweep_runs_both_and_tracks_in_project_store(project: Path, dvc) -> None:
    dvc("exp", "run", "--queue", "-S", "model=logreg,random_forest")
    dvc("queue", "start", "-j", "2")
    deadline = time.time() + 480
    while time.time() < deadline:
        status = dvc("queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(3)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc("exp", "show", "--json").stdout)
    exps = [
        exp["data"]
        for rev in shown
        for group in (rev.get("experiments") or [])
        for exp in group["revs"]
    ]
    targets = sorted(e["params"]["params.yaml"]["data"]["model"]["_target_"] for e in exps)
    assert targets == [
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.linear_model.LogisticRegression",
    ]
    for exp in exps:
        assert exp["metrics"]["metrics/evaluate.json"]["data"]["accuracy"] > 0.7
    runs = mlflow_runs(project)
    assert sorted(r["name"] for r in runs) == [
        "adult-LogisticRegression",
        "adult-RandomForestClassifier",
    ]
    assert all(r.get("dvc_exp_name") for r in runs)
    assert not list((project / ".dvc/tmp").rglob("mlflow.db"))
    assert list((project / "mlartifacts").rglob("MLmodel"))


def test_report_compares_against_base(project: Path, dvc) -> None:
    """A model-file edit: the model stages re-run, and the PR report and `exp show` say so."""
    model = project / "conf/model/hgb.yaml"
    model.write_text(model.read_text().replace("learning_rate: 0.05", "learning_rate: 0.2"))
    bento_before = (project / "models/service.bento").read_bytes()
    out = dvc("repro")
    # It re-runs the trust gates and rebuilds the serving artifact; nothing upstream.
    assert ran_stages(out.stdout) == ["compose", *MODEL_STAGES]
    assert (project / "models/service.bento").read_bytes() != bento_before
    assert yaml.safe_load((project / "params.yaml").read_text())["model"]["learning_rate"] == 0.2

    # One changed param fits on one screen of `dvc exp show --only-changed`.
    header = dvc("exp", "show", "--only-changed", "--csv").stdout.splitlines()[0]
    columns = [c for c in header.split(",") if c not in ("rev", "typ")]  # CSV-only columns
    assert "model.learning_rate" in columns
    assert len(columns) <= 25, columns
    assert not any("categories" in c or "types." in c for c in columns)

    run(
        ["python", "-m", "tabular_pipeline.report", "--base", "main", "--out", "reports/pr"],
        project,
    )
    report = (project / "reports/pr/report.md").read_text()
    assert re.search(r"model\.learning_rate\s*\|\s*0\.05\s*\|\s*0\.2", report)
    assert "| Change" in report and "accuracy" in report
    # The paired comparison: both revisions' per-row predictions (main's through DVC).
    assert "test rows (matched by row ids)" in report
    roc = next(line for line in report.splitlines() if line.startswith("| roc_auc |"))
    assert re.search(r"\| \*\*(better|worse|no detectable difference)\*\* \|$", roc), roc
    html = (project / "reports/pr/plots/index.html").read_text()
    assert "main" in html and "workspace" in html


# A second full chain on a fresh clone: make test-exhaustive.
@pytest.mark.exhaustive
def test_fresh_clone_repro_reproduces_every_output_and_leaves_git_clean(
    built_project: Path, tmp_path: Path
) -> None:
    """What a new user does: clone, repro. Nothing may change, reports included.

    The build ran every stage cold; this repro runs them with the warm runner
    (tabular_pipeline/warm.py), so byte-identical outputs also prove that a
    stage forked from a preloaded server writes what a fresh process writes.
    """
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(built_project), str(clone))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    warm = {"TABULAR_WARM": "1", "XDG_RUNTIME_DIR": str(runtime), "TABULAR_WARM_IDLE": "120"}
    try:
        out = run(["dvc", "repro"], clone, timeout=900, env=warm)
    finally:
        run([sys.executable, "-m", "tabular_pipeline.warm", "--stop"], clone, env=warm)
    assert "train" in ran_stages(out.stdout)  # no DVC cache: the stages really ran
    assert git(clone, "status", "--porcelain") == ""
    ours, theirs = lock_outs(built_project), lock_outs(clone)
    assert ours == theirs
    assert any("data_docs" in k for k in ours) and len(ours) >= 12
    served = "".join(p.read_text() for p in runtime.glob("*/*.log"))
    warm_stages = set(re.findall(r"stages\.(\w+) \(pid \d+\): exit 0", served))
    assert "package" in warm_stages and len(warm_stages) >= 2, served  # after the warm-up


def test_bring_your_own_multiclass_data(tmp_path: Path) -> None:
    """A fresh project (not the shared build): it runs every stage anyway."""
    import numpy as np
    import pandas as pd

    project = make_project(tmp_path)

    rng = np.random.default_rng(1)
    n = 600
    species = rng.choice(["adelie", "gentoo", "chinstrap"], size=n)
    base = {"adelie": 38.0, "gentoo": 47.0, "chinstrap": 49.0}
    frame = pd.DataFrame(
        {
            "Bill Length": [base[s] + rng.normal(scale=2.0) for s in species],
            "Island": rng.choice(["Biscoe", "Dream", "Torgersen"], size=n),
            "Mass": rng.normal(4200, 500, size=n).round(),
            "Species": species,
        }
    )
    frame.loc[::17, "Bill Length"] = np.nan
    frame["Island"] = pd.array(frame["Island"], dtype="string")  # pandas string dtype, with NA
    frame.loc[::23, "Island"] = pd.NA
    frame["Tagged"] = rng.random(n) > 0.5  # a bool column
    (project / "data/raw/penguins").mkdir(parents=True)
    frame.to_parquet(project / "data/raw/penguins/penguins.parquet", index=False)
    (project / "conf/data/penguins.yaml").write_text(
        "defaults:\n  - /base/data@_here_\n  - _self_\n\n"
        "name: penguins\nsource:\n  train: data/raw/penguins/penguins.parquet\n"
        "target: species\nlabels: [adelie, gentoo, chinstrap]\n"
    )
    # The BYO minimum: every type inferred.
    (project / "conf/data/schema/penguins.yaml").write_text("{}\n")
    cfg = project / "conf/config.yaml"
    cfg.write_text(cfg.read_text().replace("- data: adult", "- data: penguins"))
    out = run(["dvc", "repro"], project)
    assert ran_stages(out.stdout) == ALL_STAGES
    # 600 rows give a 96-row validation split: too small a reference to judge the
    # 120-row test split, so drift is recorded, not enforced (docs/monitoring.md).
    drift = json.loads((project / "reports/drift/summary.json").read_text())
    assert drift["gate_failures"] == []
    assert "too small" in drift.get("gate_not_enforced", {"reason": "too small"})["reason"]
    # DVC's own warnings start the line (ours start with a time): none on a BYO run.
    dvc_warnings = [x for x in (out.stdout + out.stderr).splitlines() if x.startswith("WARNING")]
    assert dvc_warnings == []
    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    per_class = json.loads((project / "reports/evaluate/per_class.json").read_text())
    assert set(per_class) == {"adelie", "gentoo", "chinstrap"}
    assert metrics["n_rows"] == 120  # split.test_size of 600 rows
    assert sorted(p.stem for p in (project / "plots/roc").iterdir()) == [
        "adelie",
        "chinstrap",
        "gentoo",
    ]
    assert not (project / "plots/roc/gt50K.csv").exists()
    explained = json.loads((project / "reports/explain/summary.json").read_text())
    assert explained["outputs"] == ["adelie", "chinstrap", "gentoo"]
    assert explained["space"] == "raw score" and explained["max_additivity_error"] < 1e-6
    features = json.loads((project / "reports/featurize/features.json").read_text())
    assert features["numeric"] == ["bill_length", "mass", "tagged"]
    assert features["categorical"] == ["island"]


# Each kind of bad data is unit-tested against the GX suite (test_validation.py);
# here the real pipeline gets several defects at once in both raw files and
# must stop at validate naming every one. A file that cannot be read at all
# (empty, truncated, wrong format) stops at ingest: tests/test_e2e_rawfile.py.
BAD_INPUTS = {
    "several_defects": (
        {
            "adult.data.csv.gz": lambda df: df.drop(columns=["age"]).assign(
                **{"hours-per-week": df["hours-per-week"] + 0.5}
            ),
            # Dropped from both files: one file only fails at ingest (files must agree).
            "adult.test.csv.gz": lambda df: df.drop(columns=["age"]).assign(
                Y=df["Y"].where(df.index % 50 != 0, "maybe"),
                **{
                    "hours-per-week": df["hours-per-week"].astype(str).where(df.index != 3, "forty")
                },
            ),
        },
        [
            "train: column 'age': expect_column_to_exist",
            "train: column 'hours_per_week': expect_column_values_to_be_in_type_list",
            "test: column 'income': expect_column_values_to_be_in_set",
            "test: column 'hours_per_week': expect_column_values_to_be_in_type_list",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_stops_at_validate(project: Path, dvc, case: str) -> None:
    import pandas as pd

    mutations, expected = BAD_INPUTS[case]
    for name, mutate in mutations.items():
        raw = project / "data/raw/adult" / name
        df = pd.read_csv(raw, sep=",", skipinitialspace=True)
        mutate(df).to_csv(raw, index=False)
    model_before = (project / "models/model.joblib").read_bytes()
    out = dvc("repro", check=False)
    assert out.returncode != 0
    assert ran_stages(out.stdout) == ["ingest", "validate"]
    log = out.stdout + out.stderr
    assert "validation failed" in log
    for line in expected:  # each failing table and rule is named
        assert line in log, (line, log[-3000:])
    # Nothing downstream ran and the last good artifacts are still restorable.
    assert (project / "models/model.joblib").read_bytes() == model_before
    git(project, "reset", "-q", "--hard")
    dvc("checkout", "--force")  # drops the failed run's unsaved Data Docs
    assert "up to date" in dvc("status").stdout


def test_stages_run_the_projects_own_package(project: Path, dvc) -> None:
    """Not the editable install: queued experiments must run their own snapshot's code."""
    module = project / "tabular_pipeline/data/split.py"
    module.write_text(
        module.read_text()
        + '\nimport logging\nlogging.getLogger(__name__).warning("COPY-%s", "MARK")\n'
    )
    out = dvc("repro")
    # Same outputs: featurize is not re-run (cv and drift import the module, so they are).
    assert ran_stages(out.stdout) == ["split", "cv", "drift"]
    assert "COPY-MARK" in out.stdout + out.stderr
