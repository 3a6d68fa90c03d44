"""Stage ingest: raw CSV/Parquet -> typed Parquet with clean names and labels."""

import logging
from pathlib import Path

import pandas as pd

from tabular_pipeline import stage
from tabular_pipeline.config import IngestConfig, load_data_config, load_params, parse_section
from tabular_pipeline.data.ingest import (
    check_inside,
    check_same_columns,
    concat,
    expand,
    normalize,
)
from tabular_pipeline.data.reader import read_user_table, table_format
from tabular_pipeline.data.task import task_of_frame

log = logging.getLogger("ingest")


def main() -> None:
    params = load_params()
    data = load_data_config(params)
    cfg = parse_section(params, "ingest", IngestConfig)
    out_dir = Path(cfg.out_dir)
    sources = {"train": data.source.train, "test": data.source.test}
    task = None  # resolved on the train table, then imposed on the test table
    tables: dict[str, pd.DataFrame] = {}
    columns: dict[str, list[str]] = {}
    for name, source in sources.items():
        target = out_dir / f"{name}.parquet"
        if source is None:
            target.unlink(missing_ok=True)
            continue
        paths = [Path(source)]
        if name == "train":
            paths += expand(list(data.source.extra_train))
        frames = []
        for path in paths:
            key = f"data.source.{name}" if path == Path(source) else "data.source.extra_train"
            check_inside(path, Path(data.raw_dir), key)
            raw = read_user_table(path, data.source.read)
            typed = table_format(path) == "parquet"
            frames.append(normalize(raw, data, str(path), typed=typed, task=task))
            if task is None and data.target in frames[-1].columns:
                task = task_of_frame(frames[-1], data.target)
            columns[str(path)] = [str(c) for c in frames[-1].columns]
            log.info("%s: %d rows x %d columns", path, len(frames[-1]), frames[-1].shape[1])
        tables[name] = concat(frames)
    # Before anything is written: a column in one file only fails here, not in evaluate.
    check_same_columns(columns)
    for name, frame in tables.items():
        target = out_dir / f"{name}.parquet"
        stage.write_parquet(frame, target)
        log.info("%s: %d rows x %d columns -> %s", name, len(frame), frame.shape[1], target)


if __name__ == "__main__":
    stage.run(main)
