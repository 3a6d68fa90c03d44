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
    load_params,
    parse_section,
)
from tabular_pipeline.evaluation.metrics import TRAIN_HEADLINE, classification_metrics, headline
from tabular_pipeline.models.modeling import (
    build_estimator,
    fit_pipeline,
    model_name,
    predict_proba,
    signature_example,
)

log = logging.getLogger("train")


def main() -> None:
    params = load_params()
    data = parse_section(params, "data", DataConfig)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    featurizer_path = Path(parse_section(params, "featurize", FeaturizeConfig).out)
    cfg = parse_section(params, "train", TrainConfig)
    track = parse_section(params, "tracking", TrackingConfig)
    tracking.preflight()
    model_cfg = dict(params["model"])

    frames = {
        name: stage.read_parquet(split_dir / f"{name}.parquet") for name in ("train", "valid")
    }
    estimator = build_estimator(model_cfg)
    log.info("fitting %s on %d rows", model_name(model_cfg), len(frames["train"]))
    pipeline = fit_pipeline(
        stage.load_object(featurizer_path), estimator, frames["train"], data.target
    )

    metrics = {}
    for name, frame in frames.items():
        proba, classes = predict_proba(pipeline, frame, data.target)
        metrics[name] = classification_metrics(frame[data.target], proba, classes)
        log.info(
            "%s: accuracy %.4f, log loss %.4f",
            name,
            metrics[name]["accuracy"],
            metrics[name]["log_loss"],
        )

    model_path = Path(cfg.model_out)
    stage.save_object(pipeline, model_path)
    stage.write_json(
        Path(cfg.metrics_out), {k: headline(v, TRAIN_HEADLINE) for k, v in metrics.items()}
    )

    example = signature_example(frames["valid"].drop(columns=[data.target]))
    tracking.log_training_run(
        experiment=track.experiment,
        run_name=f"{data.name}-{model_name(model_cfg)}",
        pipeline=pipeline,
        model_path=model_path,
        params={"seed": params["seed"], "data": data.name, "model": model_cfg},
        metrics=metrics,
        input_example=example,
    )


if __name__ == "__main__":
    stage.run(main)
