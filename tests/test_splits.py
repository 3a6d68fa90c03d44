"""Split strategies, the leakage gate, CV folds and their interval, source files that disagree."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tabular_pipeline.config import DataConfig
from tabular_pipeline.data import leakage
from tabular_pipeline.data.ingest import check_same_columns, normalize, read_table
from tabular_pipeline.data.split import Roles, TimeCuts, make_splits, resolve_strategy, summary
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.evaluation import cv
from tabular_pipeline.models.features import feature_columns
from tabular_pipeline.reporting import model_card
from tests.conftest import FIXTURE, GAPMINDER

CHECKS = {
    "max_duplicate_share": 0.05,
    "max_single_feature_score": 0.95,
    "sample_rows": 200_000,
    "seed": 0,
}


@pytest.fixture
def panel() -> pd.DataFrame:
    """30 customers x 10 months: a grouped, time-ordered regression table."""
    rng = np.random.default_rng(0)
    rows = [(f"c{c:02d}", m) for c in range(30) for m in range(1, 11)]
    frame = pd.DataFrame(rows, columns=["customer", "month"])
    frame["x"] = rng.normal(size=len(frame))
    frame["segment"] = pd.Categorical(rng.choice(["a", "b"], size=len(frame)))
    frame["y"] = frame["x"] * 2 + frame["month"] * 0.1 + rng.normal(size=len(frame))
    return frame


def groups_of(frame: pd.DataFrame) -> set[str]:
    return set(frame["customer"])


def test_group_split_keeps_each_group_on_one_side_and_counts_groups(panel: pd.DataFrame) -> None:
    roles = Roles(group_column="customer")
    a = make_splits(panel, None, "y", 0.2, 0.2, True, seed=3, strategy="group", roles=roles)
    b = make_splits(panel, None, "y", 0.2, 0.2, True, seed=3, strategy="group", roles=roles)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert not groups_of(a["train"]) & groups_of(a["valid"])
    assert not groups_of(a["train"]) & groups_of(a["test"])
    assert not groups_of(a["valid"]) & groups_of(a["test"])
    # Sizes count groups: 20 % of 30 customers, then 20 % of the 24 left.
    assert len(groups_of(a["test"])) == 6 and len(groups_of(a["valid"])) == 5
    assert sum(len(f) for f in a.values()) == len(panel)
    c = make_splits(panel, None, "y", 0.2, 0.2, True, seed=4, strategy="group", roles=roles)
    assert groups_of(c["test"]) != groups_of(a["test"])


def test_time_split_orders_with_a_gap_and_never_shuffles(panel: pd.DataFrame) -> None:
    roles = Roles(time_column="month")
    shuffled = panel.sample(frac=1, random_state=1)
    out = make_splits(
        shuffled,
        None,
        "y",
        0.2,
        0.2,
        True,
        seed=0,
        strategy="time",
        roles=roles,
        cuts=TimeCuts(test_start=9, valid_start=7, gap=1),
    )
    assert set(out["test"]["month"]) == {9, 10}
    assert set(out["valid"]["month"]) == {7}  # 8 is inside the gap before test
    assert set(out["train"]["month"]) == {1, 2, 3, 4, 5}  # 6 is inside the gap before valid
    for part in out.values():
        assert part["month"].is_monotonic_increasing
    # Ties keep the input's order (a stable sort, no shuffle): the seed changes nothing.
    again = make_splits(
        shuffled, None, "y", 0.2, 0.2, True, seed=99, strategy="time", roles=roles,
        cuts=TimeCuts(test_start=9, valid_start=7, gap=1),
    )  # fmt: skip
    for name in out:
        pd.testing.assert_frame_equal(out[name], again[name])


def test_time_split_fractions_of_the_range_and_dates() -> None:
    days = pd.date_range("2024-01-01", periods=100, freq="D")
    frame = pd.DataFrame({"day": days.astype(str), "x": np.arange(100.0), "y": np.arange(100.0)})
    roles = Roles(time_column="day")
    out = make_splits(frame, None, "y", 0.25, 0.2, False, seed=0, strategy="time", roles=roles)
    # Test: last 20 % of the 99-day range; valid: last 25 % of what is before it.
    assert out["test"]["x"].min() == math.ceil(99 * 0.8)
    assert out["train"]["x"].max() < out["valid"]["x"].min() < out["test"]["x"].min()
    dated = make_splits(
        frame, None, "y", 0.25, 0.2, False, seed=0, strategy="time", roles=roles,
        cuts=TimeCuts(test_start="2024-03-01", valid_start="2024-02-01", gap="7D"),
    )  # fmt: skip
    assert dated["test"]["day"].min() == "2024-03-01"
    assert dated["valid"]["day"].max() < "2024-02-23"  # a week's embargo before test
    assert dated["train"]["day"].max() < "2024-01-25"


def test_group_time_split_has_unseen_groups_in_the_future(panel: pd.DataFrame) -> None:
    roles = Roles(time_column="month", group_column="customer")
    out = make_splits(panel, None, "y", 0.2, 0.2, True, seed=0, strategy="auto", roles=roles)
    assert not groups_of(out["train"]) & groups_of(out["test"])
    assert not groups_of(out["train"]) & groups_of(out["valid"])
    assert out["train"]["month"].max() < out["valid"]["month"].min()
    assert out["valid"]["month"].max() < out["test"]["month"].min()
    info = summary(out, "group_time", roles, given_test=False)
    assert info["splits"]["test"]["groups"] == 6
    assert info["splits"]["train"]["time_max"] < info["splits"]["test"]["time_min"]


def test_a_shipped_test_file_is_kept_by_every_strategy(panel: pd.DataFrame) -> None:
    test = panel[panel["customer"] == "c00"]
    rest = panel[panel["customer"] != "c00"]
    for strategy, roles in [
        ("group", Roles(group_column="customer")),
        ("time", Roles(time_column="month")),
        ("group_time", Roles(time_column="month", group_column="customer")),
    ]:
        out = make_splits(rest, test, "y", 0.2, 0.2, True, seed=0, strategy=strategy, roles=roles)
        pd.testing.assert_frame_equal(out["test"], test.reset_index(drop=True))
        assert "c00" not in groups_of(out["train"])


def test_strategy_resolution_and_missing_columns(panel: pd.DataFrame) -> None:
    assert resolve_strategy("auto", Roles(), stratify=True) == "stratified"
    assert resolve_strategy("auto", Roles(), stratify=False) == "random"
    assert resolve_strategy("auto", Roles(group_column="g"), True) == "group"
    assert resolve_strategy("auto", Roles(time_column="t"), True) == "time"
    with pytest.raises(PipelineError, match=r"split\.strategy=time needs data\.time_column"):
        resolve_strategy("time", Roles(), True)
    with pytest.raises(PipelineError, match="'nope' is not in the data"):
        make_splits(panel, None, "y", 0.2, 0.2, True, 0, roles=Roles(group_column="nope"))
    holes = panel.assign(month=panel["month"].where(panel.index % 7 != 0))
    with pytest.raises(PipelineError, match="43 row\\(s\\) have no time"):
        make_splits(holes, None, "y", 0.2, 0.2, True, 0, roles=Roles(time_column="month"))


def gate(splits: dict[str, pd.DataFrame], target: str, roles: Roles, strategy: str, gap=0):
    findings, _ = leakage.check_splits(
        splits,
        target=target,
        roles=roles,
        strategy=strategy,
        given_test=False,
        gap=gap,
        **CHECKS,  # type: ignore[arg-type]
    )
    return {f.check: f for f in findings}


def random_splits(frame: pd.DataFrame, target: str) -> dict[str, pd.DataFrame]:
    return make_splits(frame, None, target, 0.2, 0.2, False, seed=0, strategy="random")


def test_leakage_gate_names_each_planted_leak(panel: pd.DataFrame) -> None:
    rng = np.random.default_rng(1)
    clean = gate(random_splits(panel, "y"), "y", Roles(), "random")
    assert all(f.passed for f in clean.values()), clean

    copy = panel.assign(y_later=panel["y"] + rng.normal(scale=0.05, size=len(panel)))
    found = gate(random_splits(copy, "y"), "y", Roles(), "random")["single_feature"]
    assert not found.passed and "feature 'y_later' alone scores R^2 0.99" in found.message
    assert "max_single_feature_score=0.95" in found.message and "data.drop" in found.message

    ids = panel.assign(row_id=np.arange(len(panel)), code=[f"r{i}" for i in range(len(panel))])
    found = gate(random_splits(ids, "y"), "y", Roles(), "random")["id_columns"]
    assert not found.passed and found.value == ["row_id", "code"]
    assert "data.id_columns" in found.message
    declared = gate(random_splits(ids, "y"), "y", Roles(id_columns=("row_id", "code")), "random")
    assert declared["id_columns"].passed

    twice = pd.concat([panel, panel], ignore_index=True)
    found = gate(random_splits(twice, "y"), "y", Roles(), "random")["duplicate_rows"]
    assert not found.passed and "test rows" in found.message and found.value > 0.5

    roles = Roles(group_column="customer")
    found = gate(random_splits(panel, "y"), "y", roles, "random")["shared_groups"]
    assert not found.passed and "'customer'" in found.message and "strategy=group" in found.message

    warn = gate(random_splits(panel, "y"), "y", Roles(), "random")["date_with_random_split"]
    assert warn.passed and warn.severity == "warn" and warn.value == ["month"]
    assert "split.strategy=time" in warn.message
    stamped = panel.drop(columns="month").assign(
        ordered=pd.Timestamp("2024-01-01") + pd.to_timedelta(panel["month"], "D")
    )
    warn = gate(random_splits(stamped, "y"), "y", Roles(), "random")["date_with_random_split"]
    assert warn.value == ["ordered"]  # a datetime column, whatever its name
    roles = Roles(group_column="customer")
    grouped = make_splits(panel, None, "y", 0.2, 0.2, True, 0, strategy="group", roles=roles)
    assert "date_with_random_split" not in gate(grouped, "y", roles, "group")


def test_time_order_check_fails_on_overlap(panel: pd.DataFrame) -> None:
    roles = Roles(time_column="month")
    ok = make_splits(panel, None, "y", 0.2, 0.2, True, 0, strategy="time", roles=roles)
    assert gate(ok, "y", roles, "time", gap=0)["time_order"].passed
    found = gate(ok, "y", roles, "time", gap=5)["time_order"]
    assert not found.passed and "(+ gap 5)" in found.message


def test_single_feature_check_on_a_leaked_class_column() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    label = rng.choice(["no", "yes"], size=n)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "refund_issued": np.where(rng.random(n) < 0.99, label, "no"),
            "label": label,
        }
    )
    findings = gate(random_splits(frame, "label"), "label", Roles(), "random")
    assert not findings["single_feature"].passed
    assert "'refund_issued' alone scores ROC AUC" in findings["single_feature"].message


def gapminder_frame() -> pd.DataFrame:
    raw = read_table(GAPMINDER / "data/raw/gapminder/gapminder.csv.gz")
    cfg = DataConfig(target="lifeexp", task="regression", drop=["iso_alpha", "iso_num"])
    return normalize(raw, cfg)


def test_no_false_alarm_on_adult_and_gapminder(adult_cfg: DataConfig) -> None:
    frame = gapminder_frame()
    roles = Roles(group_column="country")
    splits = make_splits(frame, None, "lifeexp", 0.2, 0.2, True, 42, roles=roles)
    findings = gate(splits, "lifeexp", roles, "group")
    assert all(f.passed for f in findings.values()), findings
    assert not groups_of(splits["train"].rename(columns={"country": "customer"})) & set(
        splits["test"]["country"]
    )
    tables = {
        name: normalize(read_table(FIXTURE / f"data/raw/adult/adult.{name}.csv.gz",
                                   adult_cfg.source.read), adult_cfg)
        for name in ("data", "test")
    }  # fmt: skip
    adult = make_splits(tables["data"], tables["test"], "income", 0.2, 0.2, True, 42)
    findings, _ = leakage.check_splits(
        adult, target="income", roles=Roles(), strategy="stratified", given_test=True, gap=0,
        **CHECKS,  # type: ignore[arg-type]
    )  # fmt: skip
    assert all(f.passed for f in findings), [f.message for f in findings if not f.passed]


def test_group_and_id_columns_are_never_features(panel: pd.DataFrame) -> None:
    numeric, categorical = feature_columns(panel.assign(row=1), "y", ["customer", "row"])
    assert numeric == ["month", "x"] and categorical == ["segment"]


def test_source_files_must_have_the_same_columns() -> None:
    check_same_columns({"a.csv": ["x", "y"], "b.csv": ["x", "y"]})
    with pytest.raises(PipelineError) as err:
        check_same_columns({"train.csv": ["x", "audit_score", "y"], "test.csv": ["x", "y"]})
    message = str(err.value)
    assert "\n" not in message
    assert "column 'audit_score' is in train.csv but not in test.csv" in message
    with pytest.raises(PipelineError, match=r"'z' is in extra\.csv but not in train\.csv"):
        check_same_columns({"train.csv": ["x"], "extra.csv": ["x", "z"]})


def test_cv_folds_follow_the_strategy(panel: pd.DataFrame) -> None:
    group = cv.folds(panel, "y", "group", Roles(group_column="customer"), 5, seed=0)
    assert len(group) == 5
    for train, test in group:
        assert not groups_of(panel.iloc[train]) & groups_of(panel.iloc[test])
    covered = np.sort(np.concatenate([t for _, t in group]))
    assert (covered == np.arange(len(panel))).all()

    timed = cv.folds(panel, "y", "time", Roles(time_column="month"), 4, seed=0, gap=1)
    assert len(timed) == 4
    windows = [sorted(set(panel.iloc[t]["month"])) for _, t in timed]
    assert windows == [[3, 4], [5, 6], [7, 8], [9, 10]]  # expanding, never shuffled
    for train, test in timed:
        assert panel.iloc[train]["month"].max() + 1 < panel.iloc[test]["month"].min()

    both = cv.folds(panel, "y", "group_time", Roles("month", "customer"), 4, 0)
    for train, test in both:
        assert not groups_of(panel.iloc[train]) & groups_of(panel.iloc[test])

    strat = cv.folds(panel, "y", "stratified", Roles(), 5, seed=0)
    assert all(len(t) == 60 for _, t in strat)
    assert cv.decide("auto", 1704, 20000) == (
        True,
        "auto: 1704 train+valid rows <= cv.max_rows 20000",
    )
    assert cv.decide("auto", 32561, 20000)[0] is False
    assert cv.decide(True, 10**7, 1)[0] is True


def test_corrected_interval_matches_a_hand_computed_case() -> None:
    scores = [0.80, 0.82, 0.78, 0.81, 0.79]
    # mean 0.80, sample variance 0.00025; Nadeau-Bengio: x (1/5 + 200/800) = x 0.45.
    out = cv.corrected_interval(scores, n_train=800, n_test=200, confidence=0.95)
    half = stats.t.ppf(0.975, 4) * math.sqrt(0.00025 * 0.45)
    assert out["mean"] == pytest.approx(0.80)
    assert out["ci_low"] == pytest.approx(0.80 - half, abs=1e-6)
    assert out["ci_high"] == pytest.approx(0.80 + half, abs=1e-6)
    assert half == pytest.approx(0.029441, abs=1e-5)  # naive 1/5 would give 0.01963


def test_model_card_states_strategy_and_cv() -> None:
    card = {
        "split": model_card.split_section(
            {
                "strategy": "group",
                "test_source": "split",
                "group_column": "country",
                "time_column": None,
                "splits": {"train": {"rows": 10, "groups": 2}, "test": {"rows": 5, "groups": 1}},
                "leakage": {"passed": True},
            }
        ),
        "cross_validation": {
            "enabled": True, "folds": 5, "strategy": "group", "confidence": 0.95,
            "interval": "Nadeau-Bengio corrected t",
            "rmse": {"mean": 5.7, "std": 0.9, "ci_low": 3.9, "ci_high": 7.6},
        },
    }  # fmt: skip
    lines = "\n".join(model_card._cv_lines(card) + model_card._split_lines(card))
    assert "no value of `country` is in two splits" in lines
    assert "| rmse | 5.7000 | 3.9000 to 7.6000 | 0.9000 |" in lines
    assert "| train | 10 | 2 |" in lines
    off = model_card._cv_lines({"cross_validation": {"enabled": False, "reason": "auto: big"}})
    assert off == ["Cross-validation: off (auto: big).", ""]


def test_gapminder_fixture_has_countries_for_the_group_split() -> None:
    with gzip.open(GAPMINDER / "data/raw/gapminder/gapminder.csv.gz", "rt") as fh:
        assert "country" in fh.readline()


def test_make_schema_proposes_time_group_and_id_columns() -> None:
    raw = read_table(GAPMINDER / "data/raw/gapminder/gapminder.csv.gz")
    frame = normalize(raw, DataConfig(target="lifeexp", task="regression"))
    found = leakage.propose_roles(frame, "lifeexp")
    assert found["time_column"] == ["year"] and "country" in found["group_column"]
    assert "continent" not in found["group_column"] and found["id_columns"] == []
    orders = pd.DataFrame(
        {
            "order_date": [f"2024-01-{i % 28 + 1:02d}" for i in range(100)],
            "customer_id": [i % 10 for i in range(100)],
            "order_id": range(100),
            "amount": np.linspace(1, 2, 100),
        }
    )
    assert leakage.propose_roles(orders, "amount") == {
        "time_column": ["order_date"],
        "group_column": ["customer_id"],
        "id_columns": ["order_id"],
    }
