"""The Grafana dashboard as code: ``monitoring/grafana/dashboard.json``.

    python -m tabular_pipeline.monitoring.dashboard [--out monitoring/grafana/dashboard.json]

Plain dicts in Grafana's dashboard JSON model (schemaVersion 39): a dozen
panels do not earn grafanalib as a dependency. The data source is a
dashboard variable, so the file imports into any Grafana with a Prometheus
data source (Dashboards -> New -> Import -> upload). Every query uses the
service's metric names (tests check them against a running service's
/metrics) or the monitoring textfile's (``export.METRICS``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

OUT = Path("monitoring/grafana/dashboard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
API = 'endpoint=~"/predict.*"'
# Live-quality metrics in the target's units (regression): their own panel,
# a 0-1 axis would flatten them.
TARGET_UNITS = "rmse|mae"


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


def _panel(
    title: str,
    targets: list[tuple[str, str]],
    grid: tuple[int, int, int, int],
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [_target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(targets)],
    }


def _quantile(q: float, metric: str, by: str = "le", match: str = API) -> str:
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{match}}}[5m])))"


def panels() -> list[dict[str, Any]]:
    request = "bentoml_service_request_total"
    duration = "bentoml_service_request_duration_seconds"
    return [
        _panel(
            "Predicted rows per second, by variant",
            [("sum by (variant) (rate(tabular_predictions_total[5m]))", "{{variant}}")],
            (0, 0, 12, 8),
            unit="rowsps",
        ),
        _panel(
            "Traffic share by variant (A/B)",
            [
                (
                    "sum by (variant) (rate(tabular_predictions_total[15m])) / ignoring (variant) "
                    "group_left sum(rate(tabular_predictions_total[15m]))",
                    "{{variant}}",
                )
            ],
            (12, 0, 12, 8),
            unit="percentunit",
        ),
        _panel(
            "Request latency quantiles (HTTP, prediction endpoints)",
            [(_quantile(q, duration), f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)],
            (0, 8, 12, 8),
            unit="s",
        ),
        _panel(
            "Model time p99 by variant (featurize + predict)",
            [
                (
                    _quantile(0.99, "tabular_predict_seconds", by="le, variant", match=""),
                    "{{variant}}",
                )
            ],
            (12, 8, 12, 8),
            unit="s",
        ),
        _panel(
            "Error rate (prediction endpoints)",
            [
                (
                    f'sum(rate({request}{{{API},http_response_code=~"5.."}}[5m])) '
                    f"/ sum(rate({request}{{{API}}}[5m]))",
                    "5xx",
                ),
                (
                    f'sum(rate({request}{{{API},http_response_code=~"4.."}}[5m])) '
                    f"/ sum(rate({request}{{{API}}}[5m]))",
                    "4xx (client errors)",
                ),
            ],
            (0, 16, 12, 8),
            unit="percentunit",
        ),
        _panel(
            "Drift share (last monitoring run)",
            [("tabular_monitor_drift_share", "{{model}}")],
            (12, 16, 6, 8),
            unit="percentunit",
            kind="stat",
            description="Share of feature columns Evidently found drifted; gate at "
            "monitor.gate.max_drift_share",
        ),
        _panel(
            "Monitoring gate (last run)",
            [("tabular_monitor_gate_passed", "passed"), ("tabular_monitor_rows", "rows")],
            (18, 16, 6, 8),
            kind="stat",
        ),
        _panel(
            "Drifted features by importance (last monitoring run)",
            [
                (
                    "sort_desc(tabular_monitor_column_importance and on (model, column) "
                    "tabular_monitor_column_drifted == 1)",
                    "{{column}}",
                )
            ],
            (0, 24, 12, 8),
            unit="percentunit",
            kind="bargauge",
            description="Each drifted feature's share of the model's mean |SHAP|; the gate "
            "fails at monitor.gate.min_importance",
        ),
        _panel(
            "Live quality vs promoted (delayed labels)",
            _quality_targets(f'metric!~"{TARGET_UNITS}"'),
            (12, 24, 12, 8),
            unit="percentunit",
            description="Scale-free metrics: accuracy, roc_auc, ... (classification), r2 and "
            "mape (regression)",
        ),
        _panel(
            "Prediction drift (last monitoring run)",
            [
                ("tabular_monitor_prediction_drift_score", "score ({{method}})"),
                ("tabular_monitor_prediction_drifted", "drifted"),
            ],
            (12, 32, 12, 8),
            kind="stat",
            description="Served predictions against the model's out-of-sample predictions on "
            "the validation split: a p-value (small batches, drifted when below the "
            "Bonferroni level) or a Wasserstein distance (large batches, drifted above 0.1)",
        ),
        _panel(
            "Live error vs promoted, regression (delayed labels, target units)",
            _quality_targets(f'metric=~"{TARGET_UNITS}"'),
            (0, 32, 12, 8),
            description="RMSE and MAE are in the target's units (lower is better): a rise is "
            "the drop monitor.quality.max_drop gates on",
        ),
    ]


def _quality_targets(match: str) -> list[tuple[str, str]]:
    return [
        (f"tabular_monitor_live_metric{{{match}}}", "live {{metric}}"),
        (f"tabular_monitor_live_metric_low{{{match}}}", "live {{metric}} CI low"),
        (f"tabular_monitor_live_metric_high{{{match}}}", "live {{metric}} CI high"),
        (f"tabular_monitor_promoted_metric{{{match}}}", "promoted {{metric}}"),
    ]


def dashboard() -> dict[str, Any]:
    return {
        "title": "Tabular model service",
        "uid": "tabular-service",
        "description": "Traffic, latency, errors, drift and live quality (docs/monitoring.md)",
        "tags": ["tabular-pipeline", "bentoml"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": [dict(p, id=i + 1) for i, p in enumerate(panels())],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def queries(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for panel in board["panels"] for t in panel["targets"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    main()
