"""Tuning on a shared Optuna storage: several workers, one study (docs/tuning.md)."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from tabular_pipeline.config import TuneConfig, parse_section
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.models import tune
from tests.conftest import SPACE, composed_params, quadratic, ran_stages, run


def slow_quadratic(values: dict) -> float:
    time.sleep(0.05)  # long enough for the workers' trials to overlap
    return quadratic(values)


def tune_params(**changes: object) -> dict:
    params = dict(composed_params())
    params["tune"] = dict(params["tune"]) | changes
    return params


# -- config and storage URLs ---------------------------------------------------------------
def test_shipped_default_is_one_in_memory_worker() -> None:
    cfg = parse_section(composed_params(), "tune", TuneConfig)
    assert (cfg.storage, cfg.study_name, cfg.n_workers) == (None, None, 1)


def test_several_workers_need_a_storage() -> None:
    with pytest.raises(PipelineError, match=r"n_workers: 2 needs tune\.storage"):
        parse_section(tune_params(n_workers=2), "tune", TuneConfig)
    with pytest.raises(PipelineError, match=r"n_workers: 0 must be >= 1"):
        parse_section(tune_params(n_workers=0), "tune", TuneConfig)
    cfg = parse_section(tune_params(n_workers=2, storage="sqlite:///t.db"), "tune", TuneConfig)
    assert cfg.n_workers == 2


def test_urls_are_masked_and_sqlite_paths_resolved(tmp_path: Path) -> None:
    assert tune.mask_url("postgresql://tuner:s3cr#t@db:5432/optuna") == (
        "postgresql://tuner:***@db:5432/optuna"
    )
    assert tune.mask_url("postgresql://tuner@db/optuna") == "postgresql://tuner@db/optuna"
    assert tune.resolve_storage("sqlite:///tune.db", tmp_path) == f"sqlite:///{tmp_path}/tune.db"
    assert tune.resolve_storage("sqlite:////abs/t.db", tmp_path) == "sqlite:////abs/t.db"
    assert tune.resolve_storage("postgresql://h/db", tmp_path) == "postgresql://h/db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("tune.db", r"tune\.storage tune\.db: not a database URL"),
        ("nosuchdb://h/x", r"tune\.storage nosuchdb://h/x: cannot open it: .*nosuchdb"),
        ("sqlite:////nonexistent-dir/sub/t.db", r"cannot open it: .*unable to open database"),
        # The driver is not installed here: one line, the password masked.
        ("postgresql://tuner:hunter2@127.0.0.1:9/optuna", r"tuner:\*\*\*@127\.0\.0\.1:9/optuna"),
    ],
)
def test_bad_storage_fails_in_one_line_naming_it(url: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message) as err:
        tune.open_storage(url)
    assert "hunter2" not in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("params.yaml: tune.storage ")


def test_study_name_follows_model_space_and_data() -> None:
    parts = {"model": {"_target_": "LogisticRegression", "C": 1.0}, "space": SPACE, "inputs": ["a"]}
    same = tune.study_fingerprint(dict(parts))
    assert same == tune.study_fingerprint(parts)
    assert same != tune.study_fingerprint(parts | {"model": {"_target_": "X", "C": 1.0}})
    assert same != tune.study_fingerprint(parts | {"inputs": ["b"]})
    name = tune.default_study_name("adult", "LogisticRegression", 42, same)
    assert re.fullmatch(r"adult-LogisticRegression-seed42-[0-9a-f]{12}", name)
    assert tune.worker_seed(42, "1") == 42 and tune.worker_seed(42, "2") != 42
    assert tune.worker_seed(42, "1", start=8) not in (42, tune.worker_seed(42, "2"))


# -- studies on a SQLite storage -----------------------------------------------------------
def test_sqlite_study_matches_the_in_memory_one_and_is_reused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    study = tune.open_study(tune.open_storage(url), "s", 3, "fp", create=True)
    tune.run_trials(study, quadratic, SPACE, 8, worker="1")
    shared = tune.trials_frame(study, SPACE)
    pd.testing.assert_frame_equal(shared, tune.run_study(quadratic, SPACE, 8, seed=3))
    # Re-running against the finished study adds nothing and gives the same frame.
    again = tune.open_study(tune.open_storage(url), "s", 3, "fp", create=True)
    tune.run_trials(again, quadratic, SPACE, 8, worker="1")
    pd.testing.assert_frame_equal(tune.trials_frame(again, SPACE), shared)
    # A larger budget resumes it, with new points rather than the first ones again.
    resumed = tune.open_study(tune.open_storage(url), "s", 3, "fp", create=True)
    tune.run_trials(resumed, quadratic, SPACE, 10, worker="1")
    more = tune.trials_frame(resumed, SPACE)
    assert len(more) == 10 and more["x"].nunique() == 10
    # A worker cannot join a study that does not exist, nor one made for other data.
    with pytest.raises(PipelineError, match=r"has no study 'other': start the tune stage"):
        tune.open_study(tune.open_storage(url), "other", 3, "fp", create=False)
    with pytest.raises(PipelineError, match=r"tune\.study_name 's' .* made for another"):
        tune.open_study(tune.open_storage(url), "s", 3, "changed", create=True)


def _worker(url: str, n_trials: int) -> None:
    """A second worker process, as `python -m stages.tune --worker` runs one."""
    study = tune.open_study(tune.open_storage(url), "s", 0, "fp", create=False, worker="2")
    tune.run_trials(study, slow_quadratic, SPACE, n_trials, worker="2")


def test_two_workers_share_one_study_and_stop_at_the_budget(tmp_path: Path) -> None:
    url, n_trials = f"sqlite:///{tmp_path}/t.db", 12
    study = tune.open_study(tune.open_storage(url), "s", 0, "fp", create=True)
    other = multiprocessing.get_context("spawn").Process(target=_worker, args=(url, n_trials))
    other.start()

    def objective(values: dict) -> float:
        # Hold the first trial until the other process runs one, so both take part.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            t.user_attrs.get("worker") == "2" for t in study.get_trials(deepcopy=False)
        ):
            time.sleep(0.05)
        return slow_quadratic(values)

    tune.run_trials(study, objective, SPACE, n_trials, worker="1", wait=True)
    other.join(60)
    assert other.exitcode == 0
    finished = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(finished) == n_trials  # exactly the budget, never over it
    assert {t.user_attrs["worker"] for t in finished} == {"1", "2"}
    assert not study.get_trials(states=(TrialState.RUNNING,))
    frame = tune.trials_frame(study, SPACE)
    assert len(frame) == n_trials and frame["value"].min() == study.best_value


def test_shared_study_logs_every_trial_once_and_fails_on_a_failed_worker(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    # Three trials from an earlier run by another worker, then the stage's run.
    tune.run_trials(tune.open_study(tune.open_storage(url), "s", 0, "fp", create=True,
                                    worker="2"), quadratic, SPACE, 3, worker="2")  # fmt: skip
    study = tune.open_study(tune.open_storage(url), "s", 0, "fp", create=True)
    logged: list[tuple[int, str]] = []
    with tune.LocalWorkers([sys.executable, "-c", "pass"], n_workers=1) as workers:
        trials = tune.run_shared_study(
            study, quadratic, SPACE, 5, workers=workers,
            log_trial=lambda n, values, value, worker: logged.append((n, worker)),
        )  # fmt: skip
    assert trials["trial"].tolist() == [0, 1, 2, 3, 4]
    assert sorted(logged) == [(0, "2"), (1, "2"), (2, "2"), (3, "1"), (4, "1")]

    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    with (
        pytest.raises(PipelineError, match="tune worker 2 exited with code 3"),
        tune.LocalWorkers(failing, n_workers=2) as workers,
    ):
        tune.run_shared_study(study, quadratic, SPACE, 6, workers=workers, log_trial=print)


# -- through the real stage ----------------------------------------------------------------
@pytest.mark.slow
def test_two_local_workers_through_the_stage(project: Path, dvc, tmp_path: Path) -> None:
    db = tmp_path / "tune.db"
    out = dvc(
        "exp", "run",
        "-S", "model=logreg",
        "-S", "tune.enabled=true",
        "-S", "tune.n_trials=4",
        "-S", "tune.n_workers=2",
        "-S", f"tune.storage=sqlite:///{db}",
        "train",
    )  # fmt: skip
    # logreg scales its numeric columns (the `scaled` featurize preset; hgb: `trees`).
    assert ran_stages(out.stdout) == ["featurize", "tune", "train"]
    log = out.stdout + out.stderr
    assert "worker 2 joined study" in log and "with 2 local worker(s)" in log
    (name,) = optuna.get_all_study_names(f"sqlite:///{db}")
    assert name.startswith("adult-LogisticRegression-seed")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    finished = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(finished) == 4
    trials = pd.read_csv(project / "reports/tune/trials.csv")
    assert sorted(trials["trial"]) == sorted(t.number for t in finished)
    # The best of every worker's trials reaches train as its params.
    best = yaml.safe_load((project / "reports/tune/best_params.yaml").read_text())
    assert best["model"] == {"C": pytest.approx(study.best_params["C"])}
    shown = run(["dvc", "params", "diff", "--json"], project).stdout
    assert "reports/tune/best_params.yaml" in shown and "model.C" in shown
    # Every trial is a nested MLflow run of the study run, tagged with its worker.
    with sqlite3.connect(project / "mlflow.db") as store:
        tags = store.execute("select value from tags where key = 'worker'").fetchall()
    assert len(tags) == 4 and {w for (w,) in tags} <= {"1", "2"}
    import joblib

    model = joblib.load(project / "models/model.joblib")
    assert model[-1].get_params()["C"] == pytest.approx(study.best_params["C"])
