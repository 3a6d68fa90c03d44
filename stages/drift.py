"""Stage drift: Evidently data and prediction drift of a batch against the validation split.

The reference is the validation split: the model was not fitted on it, so its
predictions there are out-of-sample like a new batch's (the training split's
are sharper, and a prediction-drift gate against them fires on clean data).

Writes the HTML report, a per-column JSON summary and headline metrics first,
then applies the gate (not to the pipeline's own test split under a group or
time split, which holds other entities or a later period by design: the
differences are logged and recorded in the summary, and `make monitor` still
gates served traffic): under plain `dvc repro` a violation stops the pipeline
with one line per violation; under `dvc exp run` it is recorded (and the
`register` stage rejects the model) unless `drift.gate.enforce_in_experiments`.
"""

import logging
import os
import time
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import (
    DriftConfig,
    SplitConfig,
    TrainConfig,
    load_data_config,
    load_params,
    parse_section,
)
from tabular_pipeline.data.split import Roles, resolve_strategy
from tabular_pipeline.data.task import task_of_frame
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.explain.settings import ExplainConfig
from tabular_pipeline.monitoring import drift

log = logging.getLogger("drift")


# Strategies whose test split is another population than the validation split by
# design: other entities (group), a later period (time), or both.
BY_DESIGN = ("group", "time", "group_time")


def main() -> None:
    drift.check_hash_seed()
    start = time.perf_counter()
    params = load_params()
    data = load_data_config(params)
    split_cfg = parse_section(params, "split", SplitConfig)
    split_dir = Path(split_cfg.out_dir)
    model_path = Path(parse_section(params, "train", TrainConfig).model_out)
    cfg = parse_section(params, "drift", DriftConfig)
    importance_path = Path(parse_section(params, "explain", ExplainConfig).importance_out)

    reference_path = split_dir / "valid.parquet"
    reference = stage.read_parquet(reference_path)
    current = drift.read_batch(Path(cfg.current), data, task_of_frame(reference, data.target))
    pipeline = stage.load_object(model_path)
    ref, cur, columns = drift.prepare(
        reference, current, data, pipeline, cfg.max_rows, int(params["seed"])
    )
    log.info(
        "Evidently drift: %d reference rows (of %d) vs %d current rows (of %d) (%s), %d columns",
        len(ref),
        len(reference),
        len(cur),
        len(current),
        cfg.current,
        len(columns.numerical) + len(columns.categorical),
    )
    result = drift.run_report(ref, cur, columns, cfg.tests)
    html_path = Path(cfg.report_html)
    drift.write_html(result.html, html_path)
    importance = drift.read_importance(importance_path)
    summary = drift.summarise(result.columns, columns.prediction, cfg.gate, importance=importance)
    strategy = resolve_strategy(
        split_cfg.strategy,
        Roles(data.time_column, data.group_column, tuple(data.id_columns)),
        split_cfg.stratify,
    )
    reason = None
    own_test = Path(cfg.current) == split_dir / "test.parquet"
    if own_test and strategy in BY_DESIGN:
        # The test split holds other entities or a later period than the validation
        # split by design: how much they differ is what the split measures (reported
        # in full), not a data problem that should stop the run.
        reason = f"split.strategy {strategy}: the test split is another population by design"
    elif (
        own_test
        and len(cur) <= cfg.tests.small_batch_rows
        and len(ref) < drift.REFERENCE_RATIO * len(cur)
    ):
        # The pipeline's own test split against too small a reference for a calibrated
        # test (docs/monitoring.md, "Known limit"): the distances left are noise at these
        # sizes, and a gate on them stops clean runs. Recorded, not enforced. A batch of
        # the user's (drift.current) is still gated.
        reason = (
            f"a {len(ref)}-row reference is too small to judge a {len(cur)}-row batch "
            f"(calibrated tests need {drift.REFERENCE_RATIO}x): raise split.valid_size"
        )
    if reason and summary["gate_failures"]:
        for line in summary["gate_failures"]:
            log.warning("drift gate not enforced (%s): %s", reason, line)
        summary["gate_not_enforced"] = {"reason": reason, "failures": summary["gate_failures"]}
        summary["gate_failures"] = []
    summary["tests"] = result.tests
    summary["importance"] = importance_path.as_posix()
    summary["reference"] = reference_path.as_posix()
    summary["current"] = cfg.current
    # Evidently compares seeded samples of at most drift.max_rows rows a side.
    summary["rows"] = {"reference": len(ref), "current": len(cur)}
    summary["rows_sampled_from"] = {"reference": len(reference), "current": len(current)}
    stage.write_json(Path(cfg.summary_out), summary)
    stage.write_json(Path(cfg.metrics_out), drift.headline(summary, cfg.gate))
    log.info(
        "drifted feature columns: %d of %d (share %.3f); prediction drift: %s; %.1f s",
        summary["n_drifted"],
        summary["n_columns"],
        summary["drift_share"],
        summary["prediction_drifted"],
        time.perf_counter() - start,
    )
    if not summary["gate_failures"]:
        return
    if os.environ.get("DVC_EXP_NAME") and not cfg.gate.enforce_in_experiments:
        for line in summary["gate_failures"]:
            log.warning("drift gate (recorded, experiment continues): %s", line)
        return
    raise PipelineError(
        f"drift gate failed ({cfg.current} vs validation split; report {html_path}):\n"
        + "\n".join(f"  - {line}" for line in summary["gate_failures"])
    )


if __name__ == "__main__":
    stage.run(main)
