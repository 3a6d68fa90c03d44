"""Stage split: train/valid/test, honouring a given test file."""

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
from tabular_pipeline.data.split import QUANTILE_BINS, make_splits
from tabular_pipeline.data.task import task_of_frame

log = logging.getLogger("split")


def main() -> None:
    params = load_params()
    data = parse_section(params, "data", DataConfig)
    ingested = Path(parse_section(params, "ingest", IngestConfig).out_dir)
    cfg = parse_section(params, "split", SplitConfig)
    test_path = ingested / "test.parquet"
    splits = make_splits(
        train=stage.read_parquet(ingested / "train.parquet"),
        test=stage.read_parquet(test_path) if test_path.exists() else None,
        target=data.target,
        valid_size=cfg.valid_size,
        test_size=cfg.test_size,
        stratify=cfg.stratify,
        seed=int(params["seed"]),
    )
    if cfg.stratify and task_of_frame(splits["train"], data.target) == "regression":
        log.info("regression: stratified on the target's %d quantile bins (deciles)", QUANTILE_BINS)
    for name, frame in splits.items():
        stage.write_parquet(frame, Path(cfg.out_dir) / f"{name}.parquet")
        log.info("%s: %d rows", name, len(frame))


if __name__ == "__main__":
    stage.run(main)
