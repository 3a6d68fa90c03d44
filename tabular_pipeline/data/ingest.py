"""Read a raw table and normalise names, labels and types.

Ingest is deliberately lenient: a value that cannot be cast to its declared
type is left as text and logged, so that ``validate`` (Great Expectations)
reports every problem at once instead of ingest dying on the first one.
"""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.config import COLUMN_TYPES, DataConfig
from tabular_pipeline.data.dates import parse_dates
from tabular_pipeline.data.reader import read_user_table
from tabular_pipeline.data.task import as_number, resolve_task
from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

NUMERIC_TYPES = {"int", "float"}


def check_inside(path: Path, raw_dir: Path, key: str) -> None:
    """DVC tracks ``data.raw_dir`` for ingest; a file outside it would go unnoticed."""
    if not path.resolve().is_relative_to(raw_dir.resolve()):
        raise PipelineError(
            f"{key}: {path} is outside data.raw_dir ({raw_dir}); move it there or set "
            "data.raw_dir to a folder that contains it, so `dvc repro` notices changes"
        )


def read_table(path: Path, read_kwargs: dict[str, Any] | None = None) -> pd.DataFrame:
    """A raw file through the guarded reader (the name callers used before it existed)."""
    return read_user_table(path, read_kwargs)


def normalize_name(name: object) -> str:
    """snake_case a column name so configs and overrides never need quoting."""
    text = re.sub(r"[^0-9a-zA-Z]+", "_", str(name).strip()).strip("_").lower()
    return text or "column"


def as_text(series: pd.Series) -> pd.Series:
    """Values as text, with whole floats written as integers.

    A numeric column with a missing value is read as float, so a 0/1 target
    would otherwise become the labels '0.0' and '1.0'.
    """
    if pd.api.types.is_float_dtype(series):
        present = series.dropna()
        if (present == present.round()).all():
            series = series.astype("Int64")
    return series.astype("string")


def _to_bool_float(series: pd.Series, column: str) -> pd.Series:
    """Booleans as 0.0/1.0 (NaN when missing): numeric for the featurizer, nullable."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    lowered = series.astype("string").str.strip().str.lower()
    mapping = {
        "true": 1.0,
        "1": 1.0,
        "1.0": 1.0,
        "yes": 1.0,
        "false": 0.0,
        "0": 0.0,
        "0.0": 0.0,
        "no": 0.0,
    }
    mapped = lowered.map(mapping)
    if (lowered.notna() & mapped.isna()).any():
        examples = series[lowered.notna() & mapped.isna()].astype(str).unique()[:3].tolist()
        log.warning(
            "column %r: values that are not booleans, e.g. %s; left as text", column, examples
        )
        return series
    return mapped.astype("float64")


def _to_datetime(series: pd.Series, column: str) -> pd.Series:
    """Declared dates, or the column untouched (validate names the values that do not parse)."""
    parsed = parse_dates(series)
    bad = series.notna() & parsed.isna()
    if bad.any():
        examples = series[bad].astype(str).unique()[:3].tolist()
        log.warning(
            "column %r: %d value(s) are not dates, e.g. %s; left as text",
            column,
            int(bad.sum()),
            examples,
        )
        return series.astype(object).where(series.notna(), other=float("nan"))
    return parsed


def _cast(series: pd.Series, kind: str, column: str) -> pd.Series:
    """Cast to the declared kind, or leave the column untouched for validate to reject."""
    if kind in NUMERIC_TYPES:
        numeric = pd.to_numeric(series, errors="coerce")
        bad = series.notna() & numeric.isna()
        if bad.any():
            examples = series[bad].astype(str).unique()[:3].tolist()
            log.warning(
                "column %r: %d value(s) are not numeric, e.g. %s; left as text",
                column,
                int(bad.sum()),
                examples,
            )
            return series
        if kind == "int":
            whole = numeric.dropna()
            if (whole != whole.round()).any():
                log.warning("column %r: declared int but has fractions; left as float", column)
                return numeric.astype("float64")
            return numeric.astype("Int64" if numeric.isna().any() else "int64")
        return numeric.astype("float64")
    if kind == "category":
        return as_text(series).astype("category")
    if kind == "string":
        # object + NaN, not pandas' "string" dtype: pd.NA is not missing to sklearn.
        return series.astype(object).where(series.notna(), other=float("nan"))
    if kind == "bool":
        return _to_bool_float(series, column)
    if kind == "datetime":
        return _to_datetime(series, column)
    raise PipelineError(
        f"schema types.{column}: unknown type {kind!r} (expected one of {list(COLUMN_TYPES)})"
    )


def _stored_type_problem(series: pd.Series, kind: str) -> str | None:
    """Why a typed column cannot hold ``kind`` (None if it can)."""
    dtype = series.dtype
    present = series.dropna()
    if len(present) and present.map(lambda v: isinstance(v, (list, dict, bytes, np.ndarray))).any():
        return "nested or binary values"
    if kind in ("category", "string"):
        return None
    if kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(dtype):
            return None
        bad = present[parse_dates(present).isna()]
        return None if bad.empty else f"{dtype} values such as {bad.astype(str).unique()[:3].tolist()}"
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        return f"{dtype} values"
    if kind == "bool":
        if pd.api.types.is_bool_dtype(dtype):
            return None
        text = present.astype("string").str.strip().str.lower()
        bad = present[~text.isin(["true", "false", "1", "0", "1.0", "0.0", "yes", "no"])]
    elif pd.api.types.is_numeric_dtype(dtype):
        return None
    else:
        bad = present[pd.to_numeric(present, errors="coerce").isna()]
    if bad.empty:
        return None
    return f"{dtype} values such as {bad.astype(str).unique()[:3].tolist()}"


def _check_stored_type(series: pd.Series, kind: str, column: str, where: str, schema: str) -> None:
    problem = _stored_type_problem(series, kind)
    if problem is not None:
        raise PipelineError(
            f"{where}column {column!r} holds {problem} but the schema ({schema}) declares "
            f"{kind}; write the column as {kind}, or change types.{column}"
        )


def normalize(
    frame: pd.DataFrame,
    cfg: DataConfig,
    source: str | None = None,
    typed: bool = False,
    *,
    task: str | None = None,
) -> pd.DataFrame:
    """Rename, clean text, map labels, drop rows without a target and cast types.

    ``source`` names the file in messages. ``typed`` is for Parquet: there a
    column's type was chosen by whoever wrote the file, so a stored type that
    cannot hold the declared one is one error naming the column, not values
    left as text for ``validate`` to count.

    ``task`` is the resolved task (see ``data.task``); when None it is
    resolved here from ``data.task`` or inferred from this table's target. A
    regression target is stored as float64 (rows with a missing or infinite
    value dropped and counted), a classification target as text labels, so
    later stages read the task back from the dtype (``data.task.task_of_frame``).
    """
    where = f"{source}: " if source else ""
    originals = [str(c) for c in frame.columns]
    df = frame.rename(columns=dict(cfg.rename))
    df.columns = [normalize_name(c) for c in df.columns]
    first: dict[str, int] = {}
    for i, name in enumerate(df.columns):
        if name in first:
            raise PipelineError(
                f"{where}columns {originals[first[name]]!r} and {originals[i]!r} both become "
                f"{name!r} after normalisation; rename one in the file or with data.rename"
            )
        first[name] = i
    df = df.drop(columns=[c for c in cfg.drop if c in df.columns])

    for column in df.select_dtypes(include=["object", "string"]).columns:
        df[column] = df[column].map(lambda v: v.strip() if isinstance(v, str) else v)

    target = cfg.target
    if target in df.columns:
        if task is None:
            task, reason = resolve_task(
                cfg.task, df[target], list(cfg.labels), cfg.positive_label
            )
            log.info("task: %s (%s)", task, reason)
        numbers = as_number(df[target]) if task == "regression" else None
        if task == "regression" and numbers is None:
            log.warning("target %r is not numeric; validate will reject it for regression", target)
        missing = df[target].isna() if numbers is None else ~np.isfinite(numbers)
        if missing.any():
            log.warning(
                "dropping %d row(s) with no %svalue for target %r",
                int(missing.sum()),
                "finite " if numbers is not None else "",
                target,
            )
            df = df.loc[~missing].reset_index(drop=True)
        if numbers is not None:
            df[target] = numbers.loc[~missing].to_numpy()
        else:
            # Labels are text, so 1, 1.0 and '1' never diverge; label_map keys too.
            labels = as_text(df[target]).astype(object)
            mapping = {str(k): str(v) for k, v in cfg.label_map.items()}
            df[target] = labels.map(lambda v: mapping.get(v, v)) if mapping else labels
    else:
        log.warning("target column %r is missing; validate will reject this table", target)

    for column, kind in cfg.types.items():
        if column not in df.columns:
            log.warning("declared column %r is missing; validate will reject this table", column)
            continue
        if typed and kind in COLUMN_TYPES:
            _check_stored_type(df[column], kind, column, where, cfg.schema)
        df[column] = _cast(df[column], kind, column)

    for column in df.columns:
        if column == target or column in cfg.types:
            continue
        if pd.api.types.is_bool_dtype(df[column]):
            df[column] = df[column].astype("float64")
        elif df[column].dtype == object or pd.api.types.is_string_dtype(df[column]):
            df[column] = df[column].astype("string").astype("category")
    return df


def expand(patterns: list[str]) -> list[Path]:
    """Paths and globs in order given, each glob's matches sorted; duplicates once."""
    found: list[Path] = []
    for pattern in patterns:
        magic = any(ch in pattern for ch in "*?[")
        matches = sorted(glob.glob(pattern)) if magic else [pattern]
        if not matches:
            log.info("data.source.extra_train: %s matches no file yet", pattern)
        for match in matches:
            path = Path(match)
            if path not in found:
                found.append(path)
    return found


def check_same_columns(columns: dict[str, list[str]]) -> None:
    """Every source file (train, extra_train, test) has the same columns after rename/drop.

    A column in one file only would train a model on it and crash evaluate
    (or, worse, be imputed as missing everywhere it is absent).
    """
    files = list(columns)
    if len(files) < 2:
        return
    first = files[0]
    for other in files[1:]:
        for here, there in ((first, other), (other, first)):
            extra = [c for c in columns[here] if c not in set(columns[there])]
            if extra:
                raise PipelineError(
                    f"ingest: column {extra[0]!r} is in {here} but not in {there}"
                    + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                    + "; every source file needs the same columns: add it to both, or list it "
                    "in data.drop"
                )


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Row-bind normalised tables; a category column stays categorical (union of values).

    pandas turns categoricals with different categories into object when
    concatenating, which the featurizer would then treat differently.
    """
    if len(frames) == 1:
        return frames[0]
    categorical = [
        c for c in dict.fromkeys(c for f in frames for c in f.columns)
        if any(isinstance(f[c].dtype, pd.CategoricalDtype) for f in frames if c in f.columns)
    ]
    out = pd.concat(frames, ignore_index=True)
    for column in categorical:
        out[column] = out[column].astype("string").astype("category")
    return out
