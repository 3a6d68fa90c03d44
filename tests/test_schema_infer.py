"""`make schema`: the inferred schema describes the raw data, which then validates cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tabular_pipeline.config import load_data_config
from tabular_pipeline.data.ingest import normalize
from tabular_pipeline.data.schema_infer import main, read_raw, write_schema
from tabular_pipeline.data.validation import validate_tables
from tabular_pipeline.errors import PipelineError


def raw_csv(path: Path, rows: int = 300) -> None:
    """Mixed columns, messy names, missing values and a free-text column."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "Age (years)": rng.integers(18, 90, rows).astype(float),
            "Income": rng.normal(50_000, 9_000, rows).round(2),
            "City": rng.choice(["Rome", "Paris", "Oslo", "yes"], rows),
            "Note": [f"note {i}" for i in range(rows)],
            "Churned": rng.choice(["no", "yes"], rows),
        }
    )
    frame.loc[::7, "Age (years)"] = np.nan
    frame.loc[::11, "City"] = None
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


@pytest.fixture
def params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(tmp_path)
    raw_csv(Path("data/raw/shop/train.csv"))
    raw_csv(Path("data/raw/shop/test.csv"), rows=120)
    schema = Path("conf/data/schema/shop.yaml")
    schema.parent.mkdir(parents=True)
    schema.write_text("# empty: run `make schema`\n")
    source = {"train": "data/raw/shop/train.csv", "test": "data/raw/shop/test.csv", "read": {}}
    section = {"name": "shop", "raw_dir": "data/raw/shop", "schema": str(schema)}
    return {"data": section | {"source": source, "target": "churned", "labels": ["no", "yes"]}}


def test_inferred_schema_validates_the_same_data(params: dict) -> None:
    path = write_schema(params)
    text = path.read_text()
    assert text.startswith("# Schema of the shop dataset, INFERRED by `make schema`")
    schema = yaml.safe_load(text)
    assert schema["types"] == {
        "age_years": "int",
        "income": "float",
        "city": "category",
        "note": "string",
    }
    assert schema["expect"]["city"]["categories"] == ["Oslo", "Paris", "Rome", "yes"]
    assert schema["expect"]["age_years"]["min"] >= 18 and schema["expect"]["age_years"]["max"] < 90
    assert 0 < schema["expect"]["age_years"]["max_null_frac"] < 0.16
    assert "max_null_frac" not in schema["expect"]["income"]
    assert "churned" not in schema["types"]

    cfg = load_data_config(params)  # the schema file parses as the pipeline reads it
    tables = {}
    for name in ("train", "test"):
        raw = pd.read_csv(getattr(cfg.source, name))
        tables[name] = normalize(raw, cfg)
    assert str(tables["train"]["age_years"].dtype) == "Int64"
    results = validate_tables(cfg, tables, min_rows=1, docs_dir=None)
    assert {name: r.failures for name, r in results.items()} == {"train": [], "test": []}

    # a value outside what was seen now fails: the schema checks something
    tables["test"].loc[0, "income"] = 10**9
    results = validate_tables(cfg, {"test": tables["test"]}, min_rows=1, docs_dir=None)
    assert any("income" in line for line in results["test"].failures)


def test_a_written_schema_is_kept_unless_forced(params: dict) -> None:
    path = Path(params["data"]["schema"])
    path.write_text("types: {age_years: float}\n")
    with pytest.raises(PipelineError, match=r"shop.yaml: already holds a schema.*FORCE=1"):
        write_schema(params)
    assert path.read_text() == "types: {age_years: float}\n"
    write_schema(params, force=True)
    assert yaml.safe_load(path.read_text())["types"]["age_years"] == "int"


def test_cli_reads_params_and_reports_missing_data(params: dict) -> None:
    Path("params.yaml").write_text(yaml.safe_dump(params))
    main(["--params", "params.yaml"])
    assert yaml.safe_load(Path(params["data"]["schema"]).read_text())["types"]
    params["data"]["source"]["train"] = "data/raw/shop/missing.csv"
    with pytest.raises(PipelineError, match=r"missing\.csv: .*not found"):
        read_raw(load_data_config(params))
