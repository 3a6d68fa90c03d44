"""Stage split: train/valid/test by the dataset's strategy, then the leakage gate."""

import logging
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import (
    DataConfig,
    IngestConfig,
    SplitConfig,
    load_params,
    parse_section,
)
from tabular_pipeline.data import leakage
from tabular_pipeline.data.split import (
    QUANTILE_BINS,
    Roles,
    TimeCuts,
    as_gap,
    make_splits,
    resolve_strategy,
    summary,
    time_values,
)
from tabular_pipeline.data.task import task_of_frame
from tabular_pipeline.errors import PipelineError

log = logging.getLogger("split")


def main() -> None:
    params = load_params()
    data = parse_section(params, "data", DataConfig)
    ingested = Path(parse_section(params, "ingest", IngestConfig).out_dir)
    cfg = parse_section(params, "split", SplitConfig)
    seed = int(params["seed"])
    roles = Roles(data.time_column, data.group_column, tuple(data.id_columns))
    strategy = resolve_strategy(cfg.strategy, roles, cfg.stratify)
    test_path = ingested / "test.parquet"
    given_test = test_path.exists()
    cuts = TimeCuts(cfg.test_start, cfg.valid_start, cfg.gap)
    train = stage.read_parquet(ingested / "train.parquet")
    splits = make_splits(
        train=train,
        test=stage.read_parquet(test_path) if given_test else None,
        target=data.target,
        valid_size=cfg.valid_size,
        test_size=cfg.test_size,
        stratify=cfg.stratify,
        seed=seed,
        strategy=strategy,
        roles=roles,
        cuts=cuts,
    )
    log.info("strategy: %s%s", strategy, " (test: the source's test file)" if given_test else "")
    if strategy == "stratified" and task_of_frame(splits["train"], data.target) == "regression":
        log.info("regression: stratified on the target's %d quantile bins (deciles)", QUANTILE_BINS)
    if strategy in ("group", "group_time"):
        log.info(
            "group split on %r: valid_size/test_size count groups, not rows", roles.group_column
        )
    for name, frame in splits.items():
        stage.write_parquet(frame, Path(cfg.out_dir) / f"{name}.parquet")
        log.info("%s: %d rows", name, len(frame))

    gap = 0
    if roles.time_column and strategy in ("time", "group_time"):
        gap = as_gap(cfg.gap, time_values(train, roles.time_column))
    findings, scores = leakage.check_splits(
        splits,
        target=data.target,
        roles=roles,
        strategy=strategy,
        given_test=given_test,
        gap=gap,
        max_duplicate_share=cfg.leakage.max_duplicate_share,
        max_single_feature_score=cfg.leakage.max_single_feature_score,
        sample_rows=cfg.leakage.sample_rows,
        seed=seed,
    )
    out = summary(splits, strategy, roles, given_test) | {
        "leakage": leakage.report(findings, scores)
    }
    stage.write_json(Path(cfg.summary_out), out)
    failed = [f for f in findings if not f.passed]
    for finding in findings:
        if not finding.passed and cfg.leakage.enforce:
            continue  # reported once, as the stage's error below
        if finding.severity == "warn" or not finding.passed:
            log.warning("leakage %s: %s", finding.check, finding.message)
        else:
            log.info("leakage %s: %s", finding.check, finding.message)
    if failed and cfg.leakage.enforce:
        lines = [f"leakage {f.check}: {f.message}" for f in failed]
        raise PipelineError("\n".join(lines))


if __name__ == "__main__":
    stage.run(main)
