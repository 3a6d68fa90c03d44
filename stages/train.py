"""Stage train: fit the configured model, log it to MLflow, save the pipeline."""

import logging
from pathlib import Path

from tabular_pipeline import stage, tracking
from tabular_pipeline.config import (
    DataConfig,
    FeaturizeConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
    load_params,
    parse_section,
)
from tabular_pipeline.data.task import task_of_frame
from tabular_pipeline.evaluation.metrics import headline, score, summary_line, train_headline
from tabular_pipeline.models import distributed
from tabular_pipeline.models.modeling import (
    build_estimator,
    fit_pipeline,
    model_name,
    signature_example,
    task_model_cfg,
    training_curve,
    uses_package_code,
)
from tabular_pipeline.models.tune import apply_tuned

log = logging.getLogger("train")


def main() -> None:
    params = load_params()
    data = parse_section(params, "data", DataConfig)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    featurizer_path = Path(parse_section(params, "featurize", FeaturizeConfig).out)
    cfg = parse_section(params, "train", TrainConfig)
    tune_cfg = parse_section(params, "tune", TuneConfig)
    track = parse_section(params, "tracking", TrackingConfig)
    tracking.preflight()
    frames = {
        name: stage.read_parquet(split_dir / f"{name}.parquet") for name in ("train", "valid")
    }
    task = task_of_frame(frames["train"], data.target)
    model_cfg = apply_tuned(task_model_cfg(dict(params["model"]), task), Path(tune_cfg.out))

    if distributed.planned_world_size(cfg.distributed) > 1:
        distributed.check_supported(build_estimator(model_cfg, task), model_name(model_cfg))
    if distributed.needs_launch(cfg.distributed):
        distributed.launch(cfg.distributed, "stages.train")
        return

    with distributed.process_group(cfg.distributed):
        estimator = build_estimator(model_cfg, task)
        log.info(
            "fitting %s (%s) on %d rows (process %d of %d)",
            model_name(model_cfg),
            task,
            len(frames["train"]),
            distributed.rank() + 1,
            distributed.world_size(),
        )
        pipeline = fit_pipeline(
            stage.load_object(featurizer_path),
            estimator,
            frames["train"],
            data.target,
            valid=frames["valid"],
        )
        if not distributed.is_rank0():
            return  # rank 0 alone writes outputs and logs

    metrics = {}
    for name, frame in frames.items():
        metrics[name] = score(pipeline, frame, data.target)
        log.info("%s: %s", name, summary_line(metrics[name]))

    model_path = Path(cfg.model_out)
    stage.save_object(pipeline, model_path)
    stage.write_json(
        Path(cfg.metrics_out),
        {"valid": headline(metrics["valid"], train_headline(metrics["valid"]))},
    )
    curve = training_curve(pipeline)
    stage.write_csv(curve, Path(cfg.curve_out))

    example = signature_example(frames["valid"].drop(columns=[data.target]))
    tracking.log_training_run(
        experiment=track.experiment,
        run_name=f"{data.name}-{model_name(model_cfg)}",
        pipeline=pipeline,
        model_path=model_path,
        params={
            "seed": params["seed"],
            "data": data.name,
            "model": model_cfg,
            "world_size": distributed.planned_world_size(cfg.distributed),
        },
        metrics=metrics,
        input_example=example,
        history=curve.to_dict("records"),
        package_code=uses_package_code(pipeline),
    )


if __name__ == "__main__":
    stage.run(main)
