"""Stage validate: Great Expectations suite from the data config; gate the pipeline."""

import logging
import shutil
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import (
    IngestConfig,
    ValidateConfig,
    load_data_config,
    load_params,
    parse_section,
)
from tabular_pipeline.data import docs
from tabular_pipeline.data.validation import resolved_task, summary, validate_tables
from tabular_pipeline.errors import PipelineError

log = logging.getLogger("validate")


def main() -> None:
    params = load_params()
    data = load_data_config(params)
    ingested = Path(parse_section(params, "ingest", IngestConfig).out_dir)
    cfg = parse_section(params, "validate", ValidateConfig)
    report_dir = Path(cfg.report_dir)
    docs_dir = report_dir / "data_docs"
    shutil.rmtree(docs_dir, ignore_errors=True)

    tables = {
        name: stage.read_parquet(ingested / f"{name}.parquet")
        for name in ("train", "test")
        if name == "train" or (ingested / f"{name}.parquet").exists()
    }
    results = validate_tables(data, tables, cfg.min_rows, docs_dir)
    report = summary(results, resolved_task(data, tables))
    stage.write_json(report_dir / "result.json", report)
    docs.normalise_data_docs(docs_dir)
    stage.write_text(report_dir / "summary.md", docs.summary_markdown(report, data.name))
    stage.write_text(report_dir / "summary.html", docs.summary_html(report, data.name))
    for name, result in results.items():
        stats = result.statistics
        log.info(
            "%s: %s/%s expectations met",
            name,
            stats.get("successful_expectations"),
            stats.get("evaluated_expectations"),
        )
    failures = [line for r in results.values() for line in r.failures]
    if failures:
        for line in failures:
            log.error("%s", line)
        raise PipelineError(
            f"validation failed: {len(failures)} expectation(s) not met; "
            f"details in {report_dir / 'summary.html'} and {report_dir / 'result.json'}"
        )
    log.info("report: %s (Data Docs: %s)", report_dir / "summary.html", docs_dir / "index.html")


if __name__ == "__main__":
    stage.run(main)
