"""The request schema, generated from the fitted featurizer and the data config.

A bring-your-own dataset gets a typed API with no code change: the column
list and the numeric/categorical split come from the fitted ColumnTransformer,
the JSON type (integer, number, boolean) from ``data.types`` and whether
``null`` is allowed from the data contract (``max_null_frac`` > 0).
The specs are plain JSON so the Bento carries them without the training data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from tabular_pipeline.config import DataConfig
from tabular_pipeline.errors import PipelineError

KINDS = ("number", "integer", "boolean", "category", "datetime", "text")
# featurizer blocks (tabular_pipeline.models.features.BLOCK_NAMES) whose inputs are
# strings in a request: an ISO 8601 date/time, or free text / many-valued categories
STRING_BLOCKS = {"date": "datetime", "high": "text", "text": "text"}
MAX_INT = 2**53  # integers beyond this do not convert to float64 exactly (or at all)
MAX_TEXT = 1000


@dataclass
class FieldSpec:
    """One request field: a raw input column of the pipeline."""

    name: str
    kind: str  # one of KINDS
    nullable: bool
    categories: list[str] = field(default_factory=list)  # known (trained) categories
    minimum: float | None = None  # documented training range, not enforced
    maximum: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> FieldSpec:
        return cls(**payload)


def _encoder(step: Any) -> OneHotEncoder | None:
    if isinstance(step, OneHotEncoder):
        return step
    if isinstance(step, Pipeline):
        for _, sub in step.steps:
            if isinstance(sub, OneHotEncoder):
                return sub
    return None


def featurizer_columns(featurizer: ColumnTransformer) -> dict[str, list[str] | None]:
    """Input column -> known categories (None for a numeric column), in input order."""
    if not hasattr(featurizer, "transformers_"):
        raise PipelineError("package: the featurizer is not fitted")
    found: dict[str, list[str] | None] = {}
    for _, transformer, columns in featurizer.transformers_:
        if transformer == "drop" or isinstance(columns, slice) or len(columns) == 0:
            continue
        encoder = _encoder(transformer)
        for i, column in enumerate(columns):
            if encoder is None:
                found[str(column)] = None
            else:
                found[str(column)] = [str(c) for c in encoder.categories_[i] if not _missing(c)]
    order = [str(c) for c in getattr(featurizer, "feature_names_in_", list(found))]
    return {c: found[c] for c in order if c in found}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _string_kinds(featurizer: ColumnTransformer) -> dict[str, str]:
    """Columns of the date and text blocks -> their request kind."""
    return {
        str(column): STRING_BLOCKS[name]
        for name, transformer, columns in featurizer.transformers_
        if name in STRING_BLOCKS and transformer != "drop" and not isinstance(columns, slice)
        for column in columns
    }


def build_field_specs(featurizer: ColumnTransformer, data: DataConfig) -> list[FieldSpec]:
    """The request fields of a pipeline, in the featurizer's column order."""
    specs = []
    strings = _string_kinds(featurizer) if hasattr(featurizer, "transformers_") else {}
    for column, categories in featurizer_columns(featurizer).items():
        expect = data.expect.get(column)
        null_frac = (
            expect.max_null_frac
            if expect is not None and expect.max_null_frac is not None
            else data.max_null_frac
        )
        declared = str(data.types.get(column, "")).lower()
        if column in strings:
            kind = strings[column]
        elif categories is not None:
            kind = "category"
        elif declared == "int":
            kind = "integer"
        elif declared == "bool":
            kind = "boolean"
        else:
            kind = "number"
        specs.append(
            FieldSpec(
                name=column,
                kind=kind,
                nullable=bool(null_frac and null_frac > 0),
                categories=categories or [],
                minimum=None if expect is None else expect.min,
                maximum=None if expect is None else expect.max,
            )
        )
    if not specs:
        raise PipelineError("package: the featurizer has no input columns")
    return specs


def request_model(specs: list[FieldSpec], name: str = "Row") -> type[Any]:
    """A strict pydantic model of one row: unknown fields, wrong types and NaN/inf are 4xx."""
    from typing import Annotated

    from pydantic import ConfigDict, Field, create_model

    fields: dict[str, Any] = {}
    for spec in specs:
        base: Any
        extra: dict[str, Any] = {}
        if spec.kind == "category":
            base = Annotated[str, Field(max_length=MAX_TEXT)]
            extra["examples"] = spec.categories[:3] or None
            desc = "category; unknown values are treated as the featurizer's infrequent group"
            if spec.categories:
                desc += f"; trained on: {', '.join(spec.categories[:50])}"
        elif spec.kind == "datetime":
            base = Annotated[str, Field(max_length=64)]
            extra["examples"] = ["2024-01-31", "2024-01-31T12:30:00"]
            desc = "date or date-time, ISO 8601"
        elif spec.kind == "text":
            base = Annotated[str, Field(max_length=MAX_TEXT)]
            desc = "text (or a category with many values)"
        elif spec.kind == "integer":
            base = Annotated[int, Field(ge=-MAX_INT, le=MAX_INT)]
            desc = "integer"
        elif spec.kind == "boolean":
            base = bool
            desc = "boolean"
        else:
            base = Annotated[float, Field(allow_inf_nan=False)]
            desc = "finite number"
        if spec.kind in ("integer", "number") and (
            spec.minimum is not None or spec.maximum is not None
        ):
            desc += f"; training range [{spec.minimum}, {spec.maximum}] (not enforced)"
        if spec.nullable:
            base = base | None
            desc += "; null allowed (imputed)"
        fields[spec.name] = (
            base,
            Field(..., description=desc, json_schema_extra={k: v for k, v in extra.items() if v}),
        )
    config = ConfigDict(extra="forbid", strict=True)
    return create_model(name, __config__=config, **fields)


def rows_to_frame(rows: list[dict[str, Any]], specs: list[FieldSpec]) -> pd.DataFrame:
    """Validated rows -> the frame the pipeline was trained on (dtypes as ingest makes them)."""
    columns: dict[str, Any] = {}
    for spec in specs:
        values = [row.get(spec.name) for row in rows]
        if spec.kind in ("category", "text"):
            # NaN, not None: the featurizer's imputer looks for NaN (as Parquet gives it)
            columns[spec.name] = pd.Series(
                [np.nan if v is None else v for v in values], dtype=object
            )
        elif spec.kind == "datetime":
            # a value that does not parse is missing (NaT), as ingest would leave it to validate
            columns[spec.name] = pd.to_datetime(
                pd.Series(values, dtype=object), errors="coerce", format="ISO8601"
            ).astype("datetime64[ns]")
        else:
            columns[spec.name] = np.array(
                [np.nan if v is None else float(v) for v in values], dtype=np.float64
            )
    return pd.DataFrame(columns)


def frame_to_rows(frame: pd.DataFrame, specs: list[FieldSpec]) -> list[dict[str, Any]]:
    """The JSON request rows a client would send for ``frame`` (for tests and benchmarks)."""
    rows: list[dict[str, Any]] = [{} for _ in range(len(frame))]
    for spec in specs:
        for row, value in zip(rows, frame[spec.name].tolist(), strict=True):
            if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                row[spec.name] = None
            elif spec.kind in ("category", "text"):
                row[spec.name] = str(value)
            elif spec.kind == "datetime":
                row[spec.name] = pd.Timestamp(value).isoformat()
            elif spec.kind == "integer":
                row[spec.name] = int(value)
            elif spec.kind == "boolean":
                row[spec.name] = bool(value)
            else:
                row[spec.name] = float(value)
    return rows


def openapi_row(specs: list[FieldSpec]) -> dict[str, Any]:
    """The row schema in OpenAPI 3.0 terms (``nullable``), which BentoML's spec loses."""
    kinds = {
        "integer": "integer",
        "number": "number",
        "boolean": "boolean",
        "category": "string",
        "datetime": "string",
        "text": "string",
    }
    properties: dict[str, Any] = {}
    for spec in specs:
        prop: dict[str, Any] = {"type": kinds[spec.kind]}
        if spec.kind == "integer":
            prop |= {"minimum": -MAX_INT, "maximum": MAX_INT}
        if spec.kind == "datetime":
            prop["format"] = "date-time"
        if spec.kind in ("category", "text"):
            prop["maxLength"] = MAX_TEXT
            if spec.categories:
                prop["example"] = spec.categories[0]
        if spec.nullable:
            prop["nullable"] = True
        properties[spec.name] = prop
    return {
        "type": "object",
        "title": "Row",
        "required": [s.name for s in specs],
        "properties": properties,
        "additionalProperties": False,
    }


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}


def patch_openapi(
    spec: dict[str, Any], specs: list[FieldSpec], max_rows: int, api_paths: list[str]
) -> dict[str, Any]:
    """Make BentoML's OpenAPI spec tell the truth: nullable fields, auth, 4xx bodies."""
    row = openapi_row(specs)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Row"] = row
    schemas["Error"] = ERROR_SCHEMA
    schemas["InvalidArgument"] = ERROR_SCHEMA | {"description": "Bad Request"}
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    ref = {"$ref": "#/components/schemas/Row"}
    batch = {"type": "array", "minItems": 1, "maxItems": max_rows, "items": ref}
    bodies = {"/predict": ref, "/predict_batch": batch, "/explain": ref, "/explain_batch": batch}
    errors = {
        "401": "Missing or wrong API key",
        "413": "Request body over serve.max_body_bytes",
        "415": "Content-Type is not application/json",
    }
    for path in api_paths:
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": bodies[path]}},
        }
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
        codes = dict(errors)
        if path.startswith("/explain"):
            codes["501"] = "No explainer applies to this model (the body says why)"
        for code, text in codes.items():
            operation["responses"][code] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
    return spec
