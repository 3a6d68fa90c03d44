"""Stage tune: seeded Optuna search on the validation split (opt-in: tune.enabled).

Disabled, it writes an empty tuned-params file, so ``train`` runs on the
model config alone. Enabled, it writes the best trial's values, which
``train`` merges over the model config and DVC tracks as params.

With ``tune.storage`` the study lives in a database: the stage starts
``tune.n_workers - 1`` local workers, and ``python -m stages.tune --worker``
joins from another machine (docs/tuning.md). Workers only run trials; the
stage writes the outputs from every worker's trials.
"""

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from tabular_pipeline import stage
from tabular_pipeline.config import (
    DataConfig,
    FeaturizeConfig,
    SplitConfig,
    TrackingConfig,
    TuneConfig,
    load_data_config,
    load_params,
    parse_section,
)
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.models import tune

log = logging.getLogger("tune")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.tune")
    parser.add_argument("--worker", action="store_true", help="join the study, write nothing")
    parser.add_argument("--worker-id", default=f"{socket.gethostname()}-{os.getpid()}")
    args = parser.parse_args(argv)
    params = load_params()
    cfg = parse_section(params, "tune", TuneConfig)
    if args.worker:
        if not (cfg.enabled and cfg.storage):
            raise PipelineError(
                "params.yaml: a tune worker needs tune.enabled: true and tune.storage set "
                "(the database its study lives in)"
            )
        search(params, cfg, load_data_config(params), worker=args.worker_id)
        return
    if not cfg.enabled:
        # The common case, re-run on every model edit (tune declares the model
        # params): no model, tracking, sklearn or pandas imports, so it takes ~1 s.
        log.info("tune.enabled is false: the model keeps its configured values")
        tune.write_tuned(Path(cfg.out), None, {})
        stage.write_text(Path(cfg.trials_out), "trial,value\n")  # what pandas writes, unloaded
        stage.write_json(Path(cfg.metrics_out), {"n_trials": 0})
        return
    search(params, cfg, load_data_config(params))


def search(
    params: dict[str, Any], cfg: TuneConfig, data: DataConfig, worker: str | None = None
) -> None:
    """The stage's study (``worker`` None) or one worker's share of a shared one."""
    from tabular_pipeline import tracking
    from tabular_pipeline.data.task import task_of_frame
    from tabular_pipeline.evaluation.metrics import score
    from tabular_pipeline.models.modeling import (
        build_estimator,
        fit_pipeline,
        model_name,
        task_model_cfg,
    )

    storage = None
    if cfg.storage:  # before the data loads: a bad URL fails at once
        url = tune.resolve_storage(cfg.storage, tracking.project_root())
        storage = tune.open_storage(url, configured=cfg.storage)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    featurizer_path = Path(parse_section(params, "featurize", FeaturizeConfig).out)
    track = parse_section(params, "tracking", TrackingConfig)
    train = stage.read_parquet(split_dir / "train.parquet")
    valid = stage.read_parquet(split_dir / "valid.parquet")
    task = task_of_frame(train, data.target)
    model_cfg = task_model_cfg(dict(params["model"]), task)
    metric = cfg.regression_metric if task == "regression" else cfg.metric
    name = model_name(model_cfg)
    space = cfg.search_space.get(name, {})
    tune.check_space(space, name)
    featurizer = stage.load_object(featurizer_path)

    def objective(values: dict[str, Any]) -> float:
        estimator = build_estimator(model_cfg | values, task)
        if estimator.get_params().get("verbose") is True:
            estimator.set_params(verbose=False)  # one line per trial, not per epoch
        pipeline = fit_pipeline(featurizer, estimator, train, data.target, valid=valid)
        return float(score(pipeline, valid, data.target)[tune.METRIC_KEYS.get(metric, metric)])

    seed = int(params["seed"])
    if storage is None:
        log.info("tuning %s (%s): %d trials, minimising valid %s", name, task, cfg.n_trials, metric)
        with trial_logger(track, data, name, seed, model_cfg, metric) as trial_log:
            trials = tune.run_study(
                objective,
                space,
                cfg.n_trials,
                seed,
                on_trial=trial_log.log_trial,
                metric=f"valid {metric}",
            )
            finish(cfg, trials, space, metric, str(model_cfg["_target_"]), trial_log)
        return

    fingerprint = tune.study_fingerprint(
        {
            "model": model_cfg,
            "space": space,
            "metric": metric,
            "target": data.target,
            "inputs": [
                tracking.file_sha256(p)
                for p in (split_dir / "train.parquet", split_dir / "valid.parquet", featurizer_path)
            ],
        }
    )
    study_name = cfg.study_name or tune.default_study_name(data.name, name, seed, fingerprint)
    masked = tune.mask_url(str(cfg.storage))
    if worker is not None:
        study = tune.open_study(storage, study_name, seed, fingerprint, create=False, worker=worker)
        log.info("worker %s joined study %s in %s", worker, study_name, masked)
        tune.run_trials(
            study, objective, space, cfg.n_trials, metric=f"valid {metric}", worker=worker
        )
        log.info("worker %s: study %s holds its %d trials", worker, study_name, cfg.n_trials)
        return

    study = tune.open_study(storage, study_name, seed, fingerprint, create=True)
    log.info(
        "tuning %s (%s): %d trials in study %s (%s) with %d local worker(s), minimising valid %s",
        name,
        task,
        cfg.n_trials,
        study_name,
        masked,
        cfg.n_workers,
        metric,
    )
    # Workers start first: they load the data while the MLflow run is created.
    worker_cmd = [sys.executable, "-m", "stages.tune", "--worker"]
    with (
        tune.LocalWorkers(worker_cmd, cfg.n_workers) as workers,
        trial_logger(track, data, name, seed, model_cfg, metric) as trial_log,
    ):
        trials = tune.run_shared_study(
            study,
            objective,
            space,
            cfg.n_trials,
            workers=workers,
            log_trial=trial_log.log_trial,
            metric=f"valid {metric}",
        )
        finish(cfg, trials, space, metric, str(model_cfg["_target_"]), trial_log)


def trial_logger(
    track: TrackingConfig,
    data: DataConfig,
    name: str,
    seed: int,
    model_cfg: dict[str, Any],
    metric: str,
) -> Any:
    from tabular_pipeline import tracking

    return tracking.TrialLogger(
        track.experiment,
        run_name=f"{data.name}-{name}-tune",
        params={"seed": seed, "model": model_cfg, "tune.metric": metric},
    )


def finish(
    cfg: TuneConfig,
    trials: Any,
    space: dict[str, Any],
    metric: str,
    target: str,
    trial_log: Any,
) -> None:
    """Write the stage outputs from the study's finished trials."""
    if trials.empty:
        raise PipelineError("tune: the study finished no trial (see the errors above)")
    best = tune.best_params(trials, space)
    summary = {
        "n_trials": len(trials),
        "best_trial": int(trials.loc[trials["value"].idxmin(), "trial"]),
        f"best_valid_{metric}": float(trials["value"].min()),
    }
    trial_log.finish(best, summary)
    stage.write_csv(trials, Path(cfg.trials_out))
    stage.write_json(Path(cfg.metrics_out), summary)
    tune.write_tuned(Path(cfg.out), target, best)
    log.info("best of %d trials: %s", len(trials), best)


if __name__ == "__main__":
    stage.run(main)
