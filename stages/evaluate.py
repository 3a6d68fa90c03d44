"""Stage evaluate: held-out metrics, DVC plots and permutation importance."""

import logging
from pathlib import Path

from tabular_pipeline import stage, tracking
from tabular_pipeline.config import (
    DataConfig,
    EvaluateConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    load_params,
    parse_section,
)
from tabular_pipeline.evaluation import holdout
from tabular_pipeline.evaluation.metrics import headline, summary_line, test_headline

log = logging.getLogger("evaluate")


def main() -> None:
    params = load_params()
    data = parse_section(params, "data", DataConfig)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    model_path = Path(parse_section(params, "train", TrainConfig).model_out)
    cfg = parse_section(params, "evaluate", EvaluateConfig)
    track = parse_section(params, "tracking", TrackingConfig)
    tracking.preflight()

    test = stage.read_parquet(split_dir / "test.parquet")
    pipeline = stage.load_object(model_path)
    result = holdout.evaluate(
        pipeline,
        test,
        target=data.target,
        positive_label=None if data.positive_label is None else str(data.positive_label),
        cfg=cfg,
        seed=int(params["seed"]),
        sensitive=list(data.sensitive),
    )
    plots_dir = Path(cfg.plots_dir)
    holdout.write_plots(result, plots_dir)
    # Metrics: headline numbers and one gap per sensitive column (demographic
    # parity difference; regression: the largest MAE gap); confidence
    # intervals and the other gaps go to the fairness report.
    key = "mae_gap" if result.task == "regression" else "dpd"
    gap = {col: {key: gaps[key]} for col, gaps in result.metrics.get("fairness", {}).items()}
    stage.write_json(
        Path(cfg.metrics_out),
        headline(result.metrics, test_headline(result.metrics)) | {"fairness": gap},
    )
    stage.write_json(Path(cfg.per_class_out), result.metrics.get("per_class", {}))
    stage.write_json(
        Path(cfg.fairness_out),
        result.fairness
        | {
            "ci": result.metrics.get("ci", {}),
            "gaps": result.metrics.get("fairness", {}),
            "sampling": result.sampling,
        },
    )
    stage.write_parquet(result.predictions, Path(cfg.predictions_out))
    log.info("test: %s", summary_line(result.metrics))
    tracking.log_evaluation(track.experiment, model_path, result.metrics, plots_dir)


if __name__ == "__main__":
    stage.run(main)
