"""The last monitoring run as Prometheus metrics, in the text exposition format.

Written as a file for node_exporter's textfile collector
(``--collector.textfile.directory``): decoupled from the service, so a
monitoring run needs no running server and a restart loses nothing.
node_exporter adds ``node_textfile_mtime_seconds`` per file, which is what a
"monitoring has not run" alert watches: the file itself has no timestamp,
so two runs on the same logs write identical bytes.
"""

from __future__ import annotations

import math
from typing import Any

PREFIX = "tabular_monitor_"

# name -> (help, labels). The Grafana dashboard and the alert rules refer to
# these names; tests check both against this table.
METRICS: dict[str, str] = {
    "drift_share": "Share of feature columns Evidently found drifted in the last monitoring run",
    "drifted_columns": "Number of drifted feature columns in the last monitoring run",
    "column_drifted": "1 when the column drifted in the last monitoring run, else 0",
    "column_drift_score": "Evidently's drift score of the column (method in the label)",
    "prediction_drifted": "1 when the served predictions drifted from the reference",
    "prediction_drift_score": (
        "Drift score of the served predictions against the model's out-of-sample predictions "
        "(method in the label; a p-value falls, a distance rises with drift)"
    ),
    "column_importance": "The column's share of the model's mean |SHAP| (explain)",
    "rows": "Served rows read by the last monitoring run",
    "skipped_lines": "Corrupt or partial log lines skipped by the last monitoring run",
    "gate_passed": "1 when the last monitoring run passed every gate, else 0",
    "gate_failures": "Number of gate violations in the last monitoring run",
    "labels_matched": "Labelled rows joined to served predictions in the last monitoring run",
    "live_metric": "Live metric on labelled served rows (point estimate)",
    "live_metric_low": "Lower bound of the live metric's bootstrap interval",
    "live_metric_high": "Upper bound of the live metric's bootstrap interval",
    "promoted_metric": "The same metric on the test split the model was promoted with",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _number(value: Any) -> str:
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if number.is_integer():
        return str(int(number))
    if abs(number) < 1e-3:  # a p-value: keep its significant digits
        return repr(float(f"{number:.3g}"))
    return repr(round(number, 6))


def render(summary: dict[str, Any], model: str) -> str:
    """Exposition text: HELP/TYPE once per metric, samples sorted, no timestamps."""
    samples: dict[str, list[tuple[dict[str, str], Any]]] = {name: [] for name in METRICS}
    base = {"model": model}
    drift = summary["drift"]
    samples["drift_share"].append((base, drift["drift_share"]))
    samples["drifted_columns"].append((base, drift["n_drifted"]))
    samples["prediction_drifted"].append((base, int(bool(drift["prediction_drifted"]))))
    for column in drift["columns"]:
        if column["column"] == (drift.get("prediction") or {}).get("column"):
            continue
        labels = base | {"column": column["column"]}
        samples["column_drifted"].append((labels, int(bool(column["drifted"]))))
        samples["column_drift_score"].append(
            (labels | {"method": str(column["method"])}, column["score"])
        )
        if "importance" in column:
            samples["column_importance"].append((labels, column["importance"]))
    pred = drift.get("prediction")
    if pred and "score" in pred:
        samples["prediction_drift_score"].append(
            (base | {"method": str(pred["method"])}, pred["score"])
        )
    samples["rows"].append((base, summary["rows"]["current"]))
    samples["skipped_lines"].append((base, summary["logs"]["skipped_lines"]))
    samples["gate_passed"].append((base, int(not summary["gate_failures"])))
    samples["gate_failures"].append((base, len(summary["gate_failures"])))
    quality = summary.get("quality")
    if quality:
        samples["labels_matched"].append((base, quality["counts"]["matched"]))
        for row in quality["metrics"]:
            labels = base | {"metric": row["metric"]}
            if row["live"] is not None:
                samples["live_metric"].append((labels, row["live"]))
            if row["ci"]:
                samples["live_metric_low"].append((labels, row["ci"]["low"]))
                samples["live_metric_high"].append((labels, row["ci"]["high"]))
            if row["promoted"] is not None:
                samples["promoted_metric"].append((labels, row["promoted"]))
    lines = []
    for name, help_text in METRICS.items():
        if not samples[name]:
            continue
        full = PREFIX + name
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} gauge")
        for labels, value in sorted(samples[name], key=lambda s: _labels(s[0])):
            lines.append(f"{full}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"
