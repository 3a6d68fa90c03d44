"""Stage ingest: raw CSV/Parquet -> typed Parquet with clean names and labels."""

import logging
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import IngestConfig, load_data_config, load_params, parse_section
from tabular_pipeline.data.ingest import check_inside, normalize
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
    for name, source in sources.items():
        target = out_dir / f"{name}.parquet"
        if source is None:
            target.unlink(missing_ok=True)
            continue
        check_inside(Path(source), Path(data.raw_dir), f"data.source.{name}")
        raw = read_user_table(Path(source), data.source.read)
        frame = normalize(
            raw, data, source, typed=table_format(Path(source)) == "parquet", task=task
        )
        if task is None and data.target in frame.columns:
            task = task_of_frame(frame, data.target)
        stage.write_parquet(frame, target)
        log.info("%s: %d rows x %d columns -> %s", source, len(frame), frame.shape[1], target)


if __name__ == "__main__":
    stage.run(main)
