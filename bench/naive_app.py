"""The baseline people usually write: FastAPI + pydantic + ``pd.DataFrame([row])``.

Started by ``bench/serving.py`` with uvicorn; reads the same pipeline file as
the Bento (``$NAIVE_MODEL``) and a pydantic model of the same columns.
"""

from __future__ import annotations

import json
import os
from typing import Any

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import create_model

pipeline = joblib.load(os.environ["NAIVE_MODEL"])
fields: list[dict[str, Any]] = json.loads(os.environ["NAIVE_FIELDS"])
types = {"integer": int, "number": float, "boolean": bool, "category": str}
Row = create_model(  # type: ignore[call-overload]
    "Row", **{f["name"]: (types[f["kind"]] | None, ...) for f in fields}
)
classes = [str(c) for c in pipeline.classes_]
app = FastAPI()


@app.post("/predict")
def predict(row: Row) -> dict[str, Any]:  # type: ignore[valid-type]
    proba = pipeline.predict_proba(pd.DataFrame([row.model_dump()]))[0]  # type: ignore[attr-defined]
    return {
        "label": classes[int(proba.argmax())],
        "probabilities": dict(zip(classes, proba, strict=True)),
    }


@app.post("/predict_batch")
def predict_batch(rows: list[Row]) -> dict[str, Any]:  # type: ignore[valid-type]
    proba = pipeline.predict_proba(pd.DataFrame([r.model_dump() for r in rows]))  # type: ignore[attr-defined]
    return {
        "labels": [classes[int(p.argmax())] for p in proba],
        "probabilities": [dict(zip(classes, p, strict=True)) for p in proba],
    }
