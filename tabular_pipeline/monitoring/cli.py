"""`make monitor`: drift (and live quality) of served traffic; exit 1 on a gate failure.

    python -m tabular_pipeline.monitoring.cli [--logs SRC] [--labels FILE] [--out DIR]
        [--export-training data/raw/<name>/batches/<batch>.parquet]

SRC defaults to $MONITOR_LOGS, else ``monitor.logs`` (a file, folder, glob or
s3:// URL); FILE ($MONITOR_LABELS) is a ``prediction_id,label`` CSV of delayed
labels. Thresholds come from the ``monitor`` section of params.yaml; the
batch never does, so monitoring a new batch edits nothing under conf/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import load_params
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.monitoring import drift, monitor

log = logging.getLogger("monitor")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="monitor", description=__doc__.split("\n")[0])
    parser.add_argument("--logs", default=os.environ.get("MONITOR_LOGS") or None)
    parser.add_argument("--labels", default=os.environ.get("MONITOR_LABELS") or None)
    parser.add_argument("--out", default=os.environ.get("MONITOR_OUT") or None)
    parser.add_argument(
        "--export-training",
        default=os.environ.get("MONITOR_EXPORT") or None,
        help="write the labelled served rows as a raw training file (.parquet)",
    )
    parser.add_argument("--params", default="params.yaml")
    return parser.parse_args(argv)


def pin_hash_seed() -> None:
    """Re-run under PYTHONHASHSEED=0 (before any heavy import): Evidently's scores
    depend on set order, and the outputs must be byte-identical run to run.
    `make monitor` sets it already; this keeps a direct call just as stable."""
    if os.environ.get("PYTHONHASHSEED") == "0":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable, "-m", __spec__.name, *sys.argv[1:]], env)


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        pin_hash_seed()
    drift.check_hash_seed()
    args = parse_args(argv)
    start = time.perf_counter()
    params = load_params(Path(args.params))
    section = params.get("monitor") or {}
    source = args.logs or section.get("logs")
    if not source:
        raise PipelineError("monitor: no logs given (--logs, $MONITOR_LOGS or monitor.logs)")
    out_dir = Path(args.out or section.get("out_dir") or "reports/monitor")
    labels = Path(args.labels) if args.labels else None
    export = Path(args.export_training) if args.export_training else None
    summary = monitor.run(params, str(source), labels, out_dir, export)
    d = summary["drift"]
    log.info(
        "drifted feature columns: %d of %d (share %.3f)%s; prediction drift: %s; %.1f s",
        d["n_drifted"],
        d["n_columns"],
        d["drift_share"],
        f": {', '.join(d['drifted_columns'])}" if d["drifted_columns"] else "",
        d["prediction_drifted"],
        time.perf_counter() - start,
    )
    for row in (summary["quality"] or {}).get("metrics", []):
        ci = row["ci"] or {}
        log.info(
            "live %s %s (CI %s-%s) vs promoted %s",
            row["metric"],
            row["live"],
            ci.get("low"),
            ci.get("high"),
            row["promoted"],
        )
    log.info("report %s, summary %s", out_dir / "report.html", out_dir / "summary.json")
    if summary["gate_failures"]:
        raise PipelineError(
            f"monitoring gate failed ({source} vs validation split; report "
            f"{out_dir / 'report.html'}):\n"
            + "\n".join(f"  - {line}" for line in summary["gate_failures"])
        )


if __name__ == "__main__":
    stage.run(main)
