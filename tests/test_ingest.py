from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pandas as pd
import pytest

from tabular_pipeline.config import DataConfig
from tabular_pipeline.data.ingest import check_inside, normalize, normalize_name, read_table
from tabular_pipeline.errors import PipelineError


def cfg(**kwargs: object) -> DataConfig:
    base = {"name": "t", "raw_dir": "data/raw/t", "target": "label"}
    return DataConfig(**(base | kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("education-num", "education_num"),
        (" Hours Per Week ", "hours_per_week"),
        ("Y", "y"),
        ("%%", "column"),
    ],
)
def test_normalize_name(raw: str, clean: str) -> None:
    assert normalize_name(raw) == clean


def test_normalize_maps_labels_casts_types_and_drops_missing_targets() -> None:
    raw = pd.DataFrame(
        {
            "Age": ["39", "50", "38", None],
            "Work Class": [" Private", "State-gov ", None, "Private"],
            "Y": ["<=50K.", ">50K", None, ">50K."],
        }
    )
    out = normalize(
        raw,
        cfg(
            rename={"Y": "label"},
            label_map={"<=50K.": "<=50K", ">50K.": ">50K"},
            types={"age": "int"},
        ),
    )
    assert list(out.columns) == ["age", "work_class", "label"]
    assert out["label"].tolist() == ["<=50K", ">50K", ">50K"]  # the row without a target is gone
    assert str(out["age"].dtype) == "Int64"  # nullable int: one age is missing
    assert str(out["work_class"].dtype) == "category"
    assert out["work_class"].tolist()[:2] == ["Private", "State-gov"]


def test_non_numeric_value_is_left_as_text_for_validate(caplog: pytest.LogCaptureFixture) -> None:
    raw = pd.DataFrame({"age": ["39", "forty", "20"], "label": ["a", "b", "a"]})
    with caplog.at_level(logging.WARNING):
        out = normalize(raw, cfg(types={"age": "int"}))
    assert out["age"].dtype == object
    assert "forty" in caplog.text


def test_fractions_in_int_column_stay_float() -> None:
    out = normalize(pd.DataFrame({"n": [1.5, 2.0], "label": ["a", "b"]}), cfg(types={"n": "int"}))
    assert out["n"].dtype == "float64"


def test_unknown_declared_type_is_an_error() -> None:
    with pytest.raises(PipelineError, match=r"types.n: unknown type 'decimal'"):
        normalize(pd.DataFrame({"n": [1], "label": ["a"]}), cfg(types={"n": "decimal"}))


def test_read_table_formats(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_csv(tmp_path / "t.csv.gz", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.csv.gz"), frame)
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.parquet"), frame)
    with gzip.open(tmp_path / "empty.csv.gz", "wb"):
        pass
    with pytest.raises(PipelineError, match="has no content"):  # more in test_reader.py
        read_table(tmp_path / "empty.csv.gz")
    with pytest.raises(PipelineError, match="not found"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(PipelineError, match="unknown format"):
        read_table(tmp_path / "t.xlsx")


def test_source_must_live_in_raw_dir(tmp_path: Path) -> None:
    check_inside(tmp_path / "raw" / "a.csv", tmp_path / "raw", "data.source.train")
    with pytest.raises(PipelineError, match=r"outside data\.raw_dir"):
        check_inside(tmp_path / "elsewhere.csv", tmp_path / "raw", "data.source.train")


def test_numeric_target_with_missing_values_keeps_integer_labels() -> None:
    raw = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, None, 1]})
    out = normalize(raw, cfg())
    assert out["label"].tolist() == ["0", "1", "1"]


def test_label_map_accepts_non_string_keys() -> None:
    from tabular_pipeline.config import parse_section

    data = parse_section(
        {
            "data": {
                "name": "t",
                "raw_dir": "r",
                "schema": "r/schema.yaml",
                "source": {"train": "r/t.csv"},
                "target": "label",
                "label_map": {0: "no", 1: "yes"},
            }
        },
        "data",
        DataConfig,
    )
    out = normalize(pd.DataFrame({"x": [1, 2], "label": [0, 1]}), data)
    assert out["label"].tolist() == ["no", "yes"]


def test_bools_become_numeric_zero_one() -> None:
    raw = pd.DataFrame(
        {
            "flag": [True, False, True],
            "declared": ["yes", "no", None],
            "label": ["a", "b", "a"],
        }
    )
    out = normalize(raw, cfg(types={"declared": "bool"}))
    assert out["flag"].tolist() == [1.0, 0.0, 1.0]
    assert out["declared"].tolist()[:2] == [1.0, 0.0]
    assert out["declared"].isna().iloc[2]


def test_parquet_string_columns_become_categories(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"city": pd.array([" Rome", None, "Oslo"], dtype="string"), "label": ["a", "b", "a"]}
    )
    frame.to_parquet(tmp_path / "t.parquet")
    out = normalize(read_table(tmp_path / "t.parquet"), cfg())
    assert str(out["city"].dtype) == "category"
    assert out["city"].tolist()[0] == "Rome"
    assert pd.isna(out["city"].iloc[1])
