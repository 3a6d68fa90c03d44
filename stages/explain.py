"""Stage explain: SHAP contributions of the trained model on a seeded sample of the test split.

Writes global importance (mean |SHAP| per input column, a DVC plot), a
beeswarm-style summary PNG, per-sensitive-group mean contributions, a summary
for the model card (method, output space, top features, the measured
additivity error) and the background rows the service's explainer needs.
"""

import logging
import time
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import (
    DataConfig,
    SplitConfig,
    TrainConfig,
    load_params,
    parse_section,
)
from tabular_pipeline.explain import report
from tabular_pipeline.explain.settings import ExplainConfig
from tabular_pipeline.explain.shap_values import Explainer

log = logging.getLogger("explain")


def main() -> None:
    params = load_params()
    seed = int(params["seed"])
    data = parse_section(params, "data", DataConfig)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    model_path = Path(parse_section(params, "train", TrainConfig).model_out)
    cfg = parse_section(params, "explain", ExplainConfig)

    train = stage.read_parquet(split_dir / "train.parquet").drop(columns=[data.target])
    test = stage.read_parquet(split_dir / "test.parquet")
    pipeline = stage.load_object(model_path)

    background = report.sample_rows(train, cfg.background_rows, seed)
    explainer = Explainer(
        pipeline,
        background,
        seed=seed,
        permutations=cfg.permutations,
        background_rows=cfg.background_rows,
        target=data.target,
    )
    rows = cfg.sample_rows if explainer.exact else min(cfg.sample_rows, cfg.sampled_rows)
    sample = report.sample_rows(test, rows, seed)
    X = sample.drop(columns=[data.target])
    log.info("explaining %d test rows with %s (%s)", len(X), explainer.method, explainer.space)
    start = time.perf_counter()
    matrix = explainer.transform(X)
    explanation = explainer.explain(matrix)
    reference = explainer.reference(matrix)
    log.info("explained in %.1f s", time.perf_counter() - start)

    importance = report.importance_table(explanation)
    summary = report.summary(explanation, explainer, reference, importance, cfg.top_features)
    groups = report.group_contributions(explanation, sample, list(data.sensitive))
    stage.write_csv(importance, Path(cfg.importance_out))
    stage.write_json(Path(cfg.groups_out), groups)
    stage.write_csv(report.sensitive_table(groups), Path(cfg.sensitive_out))
    stage.write_json(Path(cfg.summary_out), summary)
    stage.write_json(
        Path(cfg.background_out), report.background_rows(train, cfg.background_rows, seed)
    )
    png = report.summary_png(explanation, X, seed=seed, top=cfg.top_features, reference=reference)
    with stage.atomic_path(Path(cfg.beeswarm_out)) as tmp:
        tmp.write_bytes(png)
    top = ", ".join(f"{f['feature']} {f['mean_abs_shap']:.3f}" for f in summary["top_features"][:5])
    log.info(
        "top features (mean |SHAP|, %s): %s; max additivity error %.2g",
        explanation.space,
        top,
        summary["max_additivity_error"],
    )


if __name__ == "__main__":
    stage.run(main)
