"""The GX suite: good data passes, each kind of bad data fails with a precise line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tabular_pipeline.config import ColumnExpect, DataConfig
from tabular_pipeline.data import docs
from tabular_pipeline.data.ingest import normalize
from tabular_pipeline.data.validation import summary, validate_tables
from tests.browser import dump_dom, ink, needs_chromium, screenshot

RAW = pd.DataFrame(
    {
        "age": ["25", "38", "52", "41"] * 5,
        "city": ["Rome", "Paris", "Rome", None] * 5,
        "y": ["no", "yes", "no", "yes"] * 5,
    }
)


@pytest.fixture
def cfg() -> DataConfig:
    return DataConfig(
        name="toy",
        raw_dir="data/raw/toy",
        target="y",
        types={"age": "int", "city": "category"},
        labels=["no", "yes"],
        max_null_frac=0.0,
        expect={
            "age": ColumnExpect(min=18, max=99),
            "city": ColumnExpect(categories=["Rome", "Paris"], max_null_frac=0.3),
        },
    )


def check(cfg: DataConfig, raw: pd.DataFrame, docs: Path | None = None) -> list[str]:
    results = validate_tables(cfg, {"train": normalize(raw, cfg)}, min_rows=1, docs_dir=docs)
    return results["train"].failures


def test_good_table_passes_and_builds_docs(cfg: DataConfig, tmp_path: Path) -> None:
    results = validate_tables(cfg, {"train": normalize(RAW, cfg)}, 1, tmp_path / "docs")
    assert results["train"].success and results["train"].failures == []
    assert (tmp_path / "docs" / "index.html").exists()
    report = summary(results)
    assert report["success"] is True
    assert report["tables"]["train"]["statistics"]["unsuccessful_expectations"] == 0


def test_result_is_deterministic(cfg: DataConfig) -> None:
    a = summary(validate_tables(cfg, {"train": normalize(RAW, cfg)}, 1, None))
    b = summary(validate_tables(cfg, {"train": normalize(RAW, cfg)}, 1, None))
    assert a == b


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda df: df.drop(columns=["age"]),
            "train: column 'age': expect_column_to_exist(): column is missing",
        ),
        (
            lambda df: df.assign(age=df["age"].where(df.index != 2, "forty")),
            "train: column 'age': expect_column_values_to_be_in_type_list("
            "type_list=['int', 'int64', 'Int64Dtype']): dtype object, e.g. ['forty']",
        ),
        (
            lambda df: df.assign(age=df["age"].astype(float) + 0.5),
            "column 'age': expect_column_values_to_be_in_type_list",
        ),
        (
            lambda df: df.assign(y=df["y"].where(df.index != 0, "maybe")),
            "column 'y': expect_column_values_to_be_in_set",
        ),
        (
            lambda df: df.assign(age="150"),
            "column 'age': expect_column_values_to_be_between(min_value=18",
        ),
        (lambda df: df.assign(city="Oslo"), "fail, e.g. ['Oslo'"),
        (
            lambda df: df.assign(city=None),
            "column 'city': expect_column_values_to_not_be_null(mostly=0.7",
        ),
        (
            lambda df: df.iloc[:0],
            "column '<table>': expect_table_row_count_to_be_between(min_value=1",
        ),
    ],
    ids=[
        "missing_column",
        "non_numeric",
        "wrong_type",
        "unknown_label",
        "out_of_range",
        "unknown_category",
        "too_many_nulls",
        "empty",
    ],
)
def test_bad_table_fails_with_one_precise_line(cfg: DataConfig, mutate, expected: str) -> None:
    failures = check(cfg, mutate(RAW.copy()))
    assert failures, "validation should fail"
    assert any(expected in line for line in failures), failures


def test_empty_file_with_no_columns_reports_missing_columns(cfg: DataConfig) -> None:
    failures = check(cfg, pd.DataFrame())
    assert any("expect_table_row_count_to_be_between" in f for f in failures)
    assert any("column 'y': expect_column_to_exist" in f for f in failures)


def test_test_labels_must_be_seen_in_train_when_labels_unset(cfg: DataConfig) -> None:
    cfg.labels = []
    train = normalize(RAW, cfg)
    test = normalize(RAW.assign(y=["no", "yes", "maybe", "no"] * 5), cfg)
    results = validate_tables(cfg, {"train": train, "test": test}, 1, None)
    assert results["train"].success
    assert any(
        "test: column 'y': expect_column_values_to_be_in_set" in f for f in results["test"].failures
    )


def test_positive_label_outside_labels_is_a_config_error(cfg: DataConfig) -> None:
    from tabular_pipeline.errors import PipelineError

    cfg.positive_label = "maybe"
    with pytest.raises(PipelineError, match=r"data\.positive_label: 'maybe' is not one of"):
        validate_tables(cfg, {"train": normalize(RAW, cfg)}, 1, None)


def test_declared_bool_must_be_zero_or_one(cfg: DataConfig) -> None:
    cfg.types = {**cfg.types, "flag": "bool"}
    ok = RAW.assign(flag=["true", "false"] * 10)
    assert check(cfg, ok) == []
    bad = RAW.assign(flag=["true", "maybe"] * 10)
    assert any("column 'flag'" in f for f in check(cfg, bad))
    numeric = RAW.assign(flag=[1.0, 2.5] * 10)
    assert any("column 'flag': expect_column_values_to_be_in_set" in f for f in check(cfg, numeric))


def _docs_tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*.html"))}


def test_data_docs_are_byte_identical_across_runs(cfg: DataConfig, tmp_path: Path) -> None:
    """Fresh clones must not dirty dvc.lock: run time and random ids are normalised."""
    trees = []
    for run in ("a", "b"):
        docs_dir = tmp_path / run
        validate_tables(cfg, {"train": normalize(RAW, cfg)}, 1, docs_dir)
        assert docs.normalise_data_docs(docs_dir) >= 3
        trees.append(_docs_tree(docs_dir))
    assert trees[0] == trees[1]
    page = next(v for k, v in trees[0].items() if k.startswith("validations/")).decode()
    assert docs.FIXED_TIME in page and not docs.GX_TIME.search(page.replace(docs.FIXED_TIME, ""))


def test_normalise_html_keeps_links_within_a_page() -> None:
    a, b = "0b4c6a7e-1f7c-4d2a-9a54-0c3f3d6f2d11", "9e1e8a5e-0d1c-4b8e-8f0e-2b7a0f2f4c22"
    out = docs.normalise_html(
        f'<a href="#x-{a}"></a><div id=x-{a}></div>{b} 20261123T152735.640610Z'
    )
    assert out.count("00000000-0000-4000-8000-000000000000") == 2
    assert "00000000-0000-4000-8000-000000000001" in out and "19700101T000000" in out


def test_summary_names_failures_first(cfg: DataConfig) -> None:
    bad = RAW.assign(age=["7", "38", "52", "41"] * 5)
    report = summary(validate_tables(cfg, {"train": normalize(bad, cfg)}, 1, None))
    md = docs.summary_markdown(report, "toy")
    assert md.startswith("# Validation of `toy`: FAILED")
    first = next(line for line in md.splitlines() if line.startswith("| "))
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].startswith("| **FAIL** | `age` | expect_column_values_to_be_between"), first
    assert "5 of 20 rows unexpected (25.00 %)" in rows[1]
    page = docs.summary_html(report, "toy")
    assert "<script" not in page and "http" not in page


@needs_chromium
def test_summary_page_is_readable_offline(cfg: DataConfig, tmp_path: Path) -> None:
    report = summary(validate_tables(cfg, {"train": normalize(RAW, cfg)}, 1, None))
    path = tmp_path / "summary.html"
    path.write_text(docs.summary_html(report, "toy"))
    dom = dump_dom(path.as_uri())
    assert dom.count("<tr") == 1 + len(report["tables"]["train"]["result"]["results"])
    assert ink(screenshot(path.as_uri(), tmp_path / "s.png", 1000, 700)) > 0.02
