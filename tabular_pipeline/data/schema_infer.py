"""Draft a dataset's schema file from its raw files (`make schema`).

A new dataset starts with an empty schema, which validates almost nothing. The
draft records what the raw data looks like now, read exactly as ingest reads it
(same reader, same column names): each column's type, numeric bounds, the
categories of low-cardinality text columns and null fractions. It describes
one sample, not the rules the data must follow, so its header asks for a
review; it never replaces a schema someone has written unless forced.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tabular_pipeline.config import DataConfig, load_params, parse_section
from tabular_pipeline.data.dates import parse_dates
from tabular_pipeline.data.ingest import check_inside, normalize
from tabular_pipeline.data.leakage import propose_roles
from tabular_pipeline.data.reader import read_user_table, table_format
from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# Text columns with at most this many distinct values become categories (with
# their values listed); wider ones are free text (`string`, no value check).
MAX_CATEGORIES = 50
# A column whose every value differs is an identifier when its name says so
# (customer_id, uuid, key) or its values are short single tokens; free text
# has words. Proposed for data.id_columns (never a feature), not decided.
ID_NAME = re.compile(r"(^|_)(id|ids|uuid|guid|key|code|number|no)$")
MIN_ROWS_FOR_ID = 20


def _null_ceiling(frac: float) -> float:
    """Observed null fraction plus less than 0.001, so the same data passes on any rounding."""
    return min(1.0, math.floor(frac * 1000) / 1000 + 0.001)


def _scalar(value: Any) -> int | float:
    """A plain Python number for YAML (numpy scalars do not serialise)."""
    number = value.item() if hasattr(value, "item") else value
    return int(number) if float(number).is_integer() else float(number)


def infer_column(series: pd.Series) -> tuple[str | None, dict[str, Any]]:
    """The type and expectations one column's values support."""
    present = series.dropna()
    expect: dict[str, Any] = {}
    if present.empty:
        return None, expect
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        numeric = present.astype("float64")
        kind = "int" if (numeric == numeric.round()).all() else "float"
        expect = {"min": _scalar(numeric.min()), "max": _scalar(numeric.max())}
        if kind == "int":
            expect = {key: int(value) for key, value in expect.items()}
        return kind, expect
    if pd.api.types.is_bool_dtype(series):
        return "bool", expect
    if looks_like_dates(present):
        return "datetime", expect
    values = sorted({str(v) for v in present})
    if len(values) <= MAX_CATEGORIES:
        return "category", {"categories": values}
    return "string", expect


def looks_like_dates(present: pd.Series) -> bool:
    """Every value parses as a date, and they are not plain numbers (a year, a count)."""
    if pd.api.types.is_datetime64_any_dtype(present):
        return True
    text = present.astype(str)
    if text.empty or pd.to_numeric(text, errors="coerce").notna().any():
        return False
    return bool(parse_dates(text).notna().all())


def infer_kind(series: pd.Series, column: str, kind: str | None) -> tuple[str, bool]:
    """The featurizing kind of a column with inferred ``kind``, and whether it looks like an id."""
    present = series.dropna()
    unique = len(present) >= MIN_ROWS_FOR_ID and present.nunique() == len(present)
    id_name = bool(ID_NAME.search(column))
    if kind in ("int", "float", "bool"):
        return "numeric", unique and kind == "int" and id_name
    if kind == "datetime":
        return "datetime", False
    if kind == "category" or kind is None:
        return "categorical", False
    text = present.astype(str)
    wordy = bool(text.str.contains(r"\s").mean() > 0.5)
    if unique and (id_name or not wordy):
        return "high_cardinality", True
    return ("text" if wordy else "high_cardinality"), False


def infer_schema(frames: list[pd.DataFrame], target: str) -> dict[str, Any]:
    """Schema mapping (types, max_null_frac, expect) that each of ``frames`` satisfies.

    Validate checks each table on its own, so a null ceiling is the largest
    null fraction of any one table; types and ranges come from all rows.
    """
    frame = pd.concat(frames, ignore_index=True)
    types: dict[str, str] = {}
    kinds: dict[str, str] = {}
    ids: list[str] = []
    expect: dict[str, dict[str, Any]] = {}
    for column in frame.columns:
        if column == target:
            continue
        kind, spec = infer_column(frame[column])
        kinds[column], is_id = infer_kind(frame[column], str(column), kind)
        if is_id:
            ids.append(column)
        null_frac = max(
            float(f[column].isna().mean()) if column in f else 1.0 for f in frames if len(f)
        )
        if null_frac > 0:
            spec["max_null_frac"] = _null_ceiling(null_frac)
        if kind is not None:
            types[column] = kind
        if spec:
            expect[column] = spec
    return {"types": types, "kinds": kinds, "ids": ids, "max_null_frac": 0.0, "expect": expect}


def render(schema: dict[str, Any], name: str, sources: list[str], rows: int) -> str:
    """The schema file: a header that says where it came from, then one line per column."""
    header = [
        f"# Schema of the {name} dataset, INFERRED by `make schema` from",
        *(f"#   {source}" for source in sources),
        f"# ({rows} rows). Review it before trusting it: the bounds, categories and",
        "# null fractions are what this sample happened to contain, not rules. Widen",
        "# what new data may legitimately exceed, drop what you do not want checked.",
        "#",
        "#   types:          column -> int | float | category | bool | string | datetime",
        "#   kinds:          column -> numeric | categorical | high_cardinality | datetime | text",
        "#                   (how featurize encodes it: featurize.steps.<kind>, docs/columns.md)",
        "#   max_null_frac:  default null-rate ceiling for every feature column",
        "#   expect:         column -> {min, max, categories, max_null_frac}",
    ]
    ids = schema.get("ids", [])
    if ids:
        header += [
            "#",
            f"# Every value differs in {', '.join(ids)}: identifiers? If so, add them to",
            f"# data.id_columns in conf/data/{name}.yaml (kept, never a feature).",
        ]
    lines = ["types:"]
    lines += [f"  {yaml_key(c)}: {k}" for c, k in schema["types"].items()]
    if not schema["types"]:
        lines[-1] = "types: {}"
    kinds = schema.get("kinds", {})
    lines.append("kinds:" if kinds else "kinds: {}")
    lines += [
        f"  {yaml_key(c)}: {k}" + ("  # looks like an id: data.id_columns?" if c in ids else "")
        for c, k in kinds.items()
    ]
    lines.append(f"max_null_frac: {schema['max_null_frac']}")
    lines.append("expect:" if schema["expect"] else "expect: {}")
    for column, spec in schema["expect"].items():
        flow = yaml.safe_dump(spec, default_flow_style=True, sort_keys=False, width=10**6)
        lines.append(f"  {yaml_key(column)}: {flow.strip()}")
    return "\n".join([*header, *lines]) + "\n"


def yaml_key(column: str) -> str:
    """A column name as a YAML key (quoted when YAML would read it as something else)."""
    return yaml.safe_dump(column, default_flow_style=True).strip().removesuffix("\n...")


def has_content(path: Path) -> bool:
    """True when the file holds any schema key (comments and blank lines do not count)."""
    if not path.exists():
        return False
    try:
        return bool(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError:
        return True  # something is there, even if broken: never overwrite it silently


def read_raw(data: DataConfig) -> tuple[list[pd.DataFrame], list[str]]:
    """Every raw file of the dataset, read and normalised as ingest does."""
    frames, sources = [], []
    for key, source in (("train", data.source.train), ("test", data.source.test)):
        if source is None:
            continue
        check_inside(Path(source), Path(data.raw_dir), f"data.source.{key}")
        raw = read_user_table(Path(source), data.source.read)
        typed = table_format(Path(source)) == "parquet"
        frames.append(normalize(raw, data, source, typed=typed))
        sources.append(source)
    if not sum(len(f) for f in frames):
        raise PipelineError(f"{', '.join(sources)}: no rows to infer a schema from")
    return frames, sources


def write_schema(params: dict[str, Any], force: bool = False) -> Path:
    """Infer the schema of ``params``' dataset and write it to ``data.schema``."""
    data = parse_section(params, "data", DataConfig)
    path = Path(data.schema)
    if has_content(path) and not force:
        raise PipelineError(
            f"{path}: already holds a schema; edit it, or replace it with an inferred one "
            "by `make schema FORCE=1`"
        )
    frames, sources = read_raw(data)  # types stay empty: pandas' own reading decides
    schema = infer_schema(frames, data.target)
    rows = sum(len(f) for f in frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(schema, data.name, sources, rows), encoding="utf-8")
    log.info(
        "%s: %d column(s) inferred from %d row(s); review it before committing",
        path,
        len(schema["types"]),
        rows,
    )
    if schema["ids"]:
        log.warning(
            "every value differs in %s: if identifiers, add them to data.id_columns in "
            "conf/data/%s.yaml so they are never used as features",
            schema["ids"],
            data.name,
        )
    roles = propose_roles(pd.concat(frames, ignore_index=True), data.target)
    for key, found in roles.items():
        if found and not getattr(data, key):  # declared already: the user decided
            log.info("proposed data.%s (confirm in conf/data/%s.yaml): %s", key, data.name, found)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--force", action="store_true", help="replace a non-empty schema")
    args = parser.parse_args(argv)
    write_schema(load_params(args.params), force=args.force)


if __name__ == "__main__":
    from tabular_pipeline import stage

    stage.run(main)
