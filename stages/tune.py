"""Stage tune: seeded Optuna search on the validation split (opt-in: tune.enabled).

Disabled, it writes an empty tuned-params file, so ``train`` runs on the
model config alone. Enabled, it writes the best trial's values, which
``train`` merges over the model config and DVC tracks as params.
"""

import logging
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
from tabular_pipeline.models import tune

log = logging.getLogger("tune")


def main() -> None:
    params = load_params()
    cfg = parse_section(params, "tune", TuneConfig)
    if not cfg.enabled:
        # The common case, re-run on every model edit (tune declares the model
        # params): no model, tracking, sklearn or pandas imports, so it takes ~1 s.
        log.info("tune.enabled is false: the model keeps its configured values")
        tune.write_tuned(Path(cfg.out), None, {})
        stage.write_text(Path(cfg.trials_out), "trial,value\n")  # what pandas writes, unloaded
        stage.write_json(Path(cfg.metrics_out), {"n_trials": 0})
        return
    search(params, cfg, load_data_config(params))


def search(params: dict[str, Any], cfg: TuneConfig, data: DataConfig) -> None:
    from tabular_pipeline import tracking
    from tabular_pipeline.data.task import task_of_frame
    from tabular_pipeline.evaluation.metrics import score
    from tabular_pipeline.models.modeling import (
        build_estimator,
        fit_pipeline,
        model_name,
        task_model_cfg,
    )

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

    log.info("tuning %s (%s): %d trials, minimising valid %s", name, task, cfg.n_trials, metric)
    with tracking.TrialLogger(
        track.experiment,
        run_name=f"{data.name}-{name}-tune",
        params={"seed": params["seed"], "model": model_cfg, "tune.metric": metric},
    ) as trial_log:
        trials = tune.run_study(
            objective,
            space,
            cfg.n_trials,
            int(params["seed"]),
            on_trial=trial_log.log_trial,
            metric=f"valid {metric}",
        )
        best = tune.best_params(trials, space)
        summary = {
            "n_trials": len(trials),
            "best_trial": int(trials.loc[trials["value"].idxmin(), "trial"]),
            f"best_valid_{metric}": float(trials["value"].min()),
        }
        trial_log.finish(best, summary)

    stage.write_csv(trials, Path(cfg.trials_out))
    stage.write_json(Path(cfg.metrics_out), summary)
    tune.write_tuned(Path(cfg.out), str(model_cfg["_target_"]), best)
    log.info("best of %d trials: %s", len(trials), best)


if __name__ == "__main__":
    stage.run(main)
