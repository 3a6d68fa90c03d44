"""Great Expectations (GX Core 1.x) suite built from the data config.

The suite comes from ``data.types``, ``data.expect``, ``data.labels`` and the
null-rate ceilings, never from the data itself, so validation can fail. Both
ingested tables (train and, when given, test) are checked; each failed
expectation becomes one readable line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tabular_pipeline.config import DataConfig
from tabular_pipeline.data.dates import parse_dates
from tabular_pipeline.data.task import check_declared, check_task, task_of_frame
from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# GX type names per declared kind (ExpectColumnValuesToBeInTypeList). `category`
# columns use ExpectColumnValuesToBeOfType instead: InTypeList never matches
# pandas' CategoricalDtype in GX 1.x.
TYPE_NAMES = {
    "int": ["int", "int64", "Int64Dtype"],
    "float": ["float", "float64"],
    "bool": ["float", "float64"],  # ingest stores booleans as 0.0/1.0 (NaN when missing)
    "string": ["str"],
    # ingest parses dates to datetime64; a column with a value that does not parse stays text
    "datetime": ["datetime64", "datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
}
CATEGORY_TYPE = "CategoricalDtypeType"
# Data Docs show the run time and name pages after it; a fixed one keeps the
# report byte-identical across runs (the time a person wants is in git/DVC).
FIXED_RUN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
VOLATILE_META = ("run_id", "validation_time", "validation_id", "checkpoint_id", "batch_markers")


@dataclass
class TableResult:
    success: bool
    failures: list[str] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)


def build_expectations(
    cfg: DataConfig, frame: pd.DataFrame, min_rows: int, labels: list[str] | None = None
) -> list[Any]:
    """Expectations for one table. ``frame`` only decides which checks can run at all.

    ``labels`` are the allowed target values: ``data.labels`` when configured,
    else (for the test table) the labels seen in train.
    """
    import great_expectations.expectations as gxe

    out: list[Any] = [gxe.ExpectTableRowCountToBeBetween(min_value=min_rows)]
    required = list(dict.fromkeys([cfg.target, *cfg.types, *cfg.expect]))
    for column in required:
        out.append(gxe.ExpectColumnToExist(column=column))
    for column, kind in cfg.types.items():
        if kind == "category":
            out.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_=CATEGORY_TYPE))
        elif kind in TYPE_NAMES:
            out.append(
                gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=TYPE_NAMES[kind])
            )
        if kind == "bool":
            out.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[0.0, 1.0]))

    if labels:
        out.append(gxe.ExpectColumnValuesToBeInSet(column=cfg.target, value_set=labels))
    out.append(gxe.ExpectColumnValuesToNotBeNull(column=cfg.target))

    for column, spec in cfg.expect.items():
        numeric = column in frame.columns and pd.api.types.is_numeric_dtype(frame[column])
        if (spec.min is not None or spec.max is not None) and (numeric or column not in frame):
            # On a text column GX raises instead of reporting; the type check covers it.
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column, min_value=spec.min, max_value=spec.max
                )
            )
        if spec.categories is not None:
            values = [str(v) for v in spec.categories]
            out.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values))

    features = [c for c in dict.fromkeys([*required, *frame.columns]) if c != cfg.target]
    for column in features:
        spec_null = cfg.expect[column].max_null_frac if column in cfg.expect else None
        ceiling = cfg.max_null_frac if spec_null is None else spec_null
        if ceiling < 1.0:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=1.0 - ceiling))
    return out


def _context(docs_dir: Path | None) -> Any:
    """In-memory GX context (no gx/ folder) with an optional local Data Docs site."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites["local"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _observed(item: Any, frame: pd.DataFrame) -> str:
    """The observed side of a failed expectation, as a person would want to read it."""
    cfg, res, exc = item.expectation_config, item.result or {}, item.exception_info or {}
    column = cfg.kwargs.get("column")
    if cfg.type == "expect_column_to_exist" or (column and column not in frame.columns):
        return "column is missing"
    if cfg.type in (
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_of_type",
    ):
        series = frame[column]
        text = f"dtype {series.dtype}"
        sample = res.get("partial_unexpected_list")
        if "datetime64" in cfg.kwargs.get("type_list", []):
            bad = series[series.notna() & parse_dates(series).isna()]
            text = f"{len(bad)} value(s) are not dates ({text})"
            sample = bad.astype(str).unique()[:3].tolist()
        elif series.dtype == object:
            bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()]
            if len(bad):
                sample = bad.astype(str).unique()[:3].tolist()
        return f"{text}, e.g. {sample}" if sample else text
    errors = [exc] if "raised_exception" in exc else list(exc.values())
    messages = [
        e.get("exception_message")
        for e in errors
        if isinstance(e, dict) and e.get("raised_exception")
    ]
    if messages:
        return f"error: {messages[0]}"
    if "observed_value" in res:
        return f"observed {res['observed_value']!r}"
    if "unexpected_percent" in res:
        return (
            f"{res.get('unexpected_count')} of {res.get('element_count')} rows "
            f"({res['unexpected_percent']:.2f} %) fail, e.g. {res.get('partial_unexpected_list')}"
        )
    return f"result {res}"


def describe_failure(table: str, item: Any, frame: pd.DataFrame) -> str:
    cfg = item.expectation_config
    rule = {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")}
    rule_text = ", ".join(f"{k}={v}" for k, v in rule.items())
    column = cfg.kwargs.get("column", "<table>")
    return f"{table}: column {column!r}: {cfg.type}({rule_text}): {_observed(item, frame)}"


def _stable(result: dict[str, Any]) -> dict[str, Any]:
    """Drop run ids, times, uuids and tracebacks so identical data gives an identical file."""
    data = json.loads(json.dumps(result, default=str))
    for key in VOLATILE_META:
        data.get("meta", {}).pop(key, None)
    for item in data.get("results", []):
        item.get("expectation_config", {}).pop("id", None)
        info = item.get("exception_info") or {}
        for sub in [info, *[v for v in info.values() if isinstance(v, dict)]]:
            sub.pop("exception_traceback", None)
    return data


def check_labels_config(cfg: DataConfig) -> None:
    """Config mistakes that no data can fix: fail before looking at any table."""
    labels = [str(v) for v in cfg.labels]
    if cfg.positive_label is not None and labels and str(cfg.positive_label) not in labels:
        raise PipelineError(
            f"data.positive_label: {cfg.positive_label!r} is not one of data.labels {labels}"
        )


def resolved_task(cfg: DataConfig, tables: dict[str, pd.DataFrame]) -> str:
    """``data.task`` when declared, else what ingest inferred (the train target's dtype)."""
    if cfg.task is not None:
        return cfg.task
    train = tables.get("train")
    if train is None or cfg.target not in train.columns:
        return "multiclass"
    return task_of_frame(train, cfg.target)


def task_failures(cfg: DataConfig, tables: dict[str, pd.DataFrame]) -> dict[str, list[str]]:
    """Per table, the target's violations of the task's rules (one line each)."""
    check_declared(cfg.task)
    task = resolved_task(cfg, tables)
    return {
        name: [
            f"{name}: {line}"
            for line in check_task(
                task,
                frame,
                cfg.target,
                list(cfg.labels),
                cfg.positive_label,
                count_classes=name == "train",
            )
        ]
        for name, frame in tables.items()
    }


def allowed_labels(cfg: DataConfig, tables: dict[str, pd.DataFrame], name: str) -> list[str]:
    """Configured labels, else for non-train tables the labels train has (none: regression)."""
    if resolved_task(cfg, tables) == "regression":
        return []
    if cfg.labels:
        return [str(v) for v in cfg.labels]
    train = tables.get("train")
    if name == "train" or train is None or cfg.target not in train.columns:
        return []
    return sorted(train[cfg.target].astype(str).unique().tolist())


def validate_tables(
    cfg: DataConfig, tables: dict[str, pd.DataFrame], min_rows: int, docs_dir: Path | None
) -> dict[str, TableResult]:
    """Validate each table with a suite built for it; build Data Docs for all of them."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    check_labels_config(cfg)
    rules = task_failures(cfg, tables)
    log.info("task: %s", resolved_task(cfg, tables))
    context = _context(docs_dir)
    source = context.data_sources.add_pandas("ingested")
    results: dict[str, TableResult] = {}
    for name, frame in tables.items():
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=f"{cfg.name}_{name}",
                expectations=build_expectations(
                    cfg, frame, min_rows, allowed_labels(cfg, tables, name)
                ),
            )
        )
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{cfg.name}_{name}", data=batch, suite=suite)
        )
        outcome = definition.run(
            run_id=RunIdentifier(run_name=cfg.name, run_time=FIXED_RUN_TIME),
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
        )
        failures = rules[name] + [
            describe_failure(name, r, frame) for r in outcome.results if not r.success
        ]
        results[name] = TableResult(
            success=bool(outcome.success) and not rules[name],
            failures=failures,
            statistics=dict(outcome.statistics),
            result=_stable(outcome.to_json_dict()),
        )
    if docs_dir is not None:
        context.build_data_docs(site_names=["local"])
    return results


def summary(results: dict[str, TableResult], task: str | None = None) -> dict[str, Any]:
    return {
        "task": task,
        "success": all(r.success for r in results.values()),
        "tables": {
            name: {
                "success": r.success,
                "statistics": r.statistics,
                "failures": r.failures,
                "result": r.result,
            }
            for name, r in results.items()
        },
    }
