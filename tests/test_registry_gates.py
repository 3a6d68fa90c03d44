"""Promotion gates and the model card renderer, on hand-made numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.evaluation import resampling as rs
from tabular_pipeline.registry import gates, promotion
from tabular_pipeline.reporting import model_card

METRICS = {
    "accuracy": 0.85,
    "roc_auc": 0.90,
    "log_loss": 0.30,
    "fairness": {"sex": {"dpd": 0.18, "eod": 0.06}},
}


def test_floors_pass_and_fail_with_direction() -> None:
    result = gates.floor_gates(METRICS, {"accuracy": 0.8, "roc_auc": 0.95, "log_loss": 0.25})
    by = {g.name: g for g in result}
    assert by["floor.accuracy"].passed
    assert not by["floor.roc_auc"].passed
    assert "0.9000" in by["floor.roc_auc"].detail and "0.95" in by["floor.roc_auc"].detail
    assert not by["floor.log_loss"].passed  # lower is better: 0.30 > ceiling 0.25
    assert "ceiling" in by["floor.log_loss"].detail


def test_no_champion_means_floors_only() -> None:
    assert gates.compare_gates({}, {"roc_auc": 0.0}, "non_inferiority") == []
    decision = gates.decide(
        metrics=METRICS,
        differences=None,
        floors={"accuracy": 0.8},
        margins={"roc_auc": 0.0},
        drift=None,
        max_fairness_gap=None,
    )
    assert decision.passed and [g.name for g in decision.gates] == ["floor.accuracy"]


def planted(n: int = 4000, worse_rows: int = 0, seed: int = 0) -> tuple:
    """A champion and a candidate on the same rows: the candidate turns ``worse_rows``
    of the champion's right answers wrong (0: the same model with tiny score noise)."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.3, "pos", "neg")
    p = np.clip((y == "pos") * 0.45 + rng.random(n) * 0.55, 0.001, 0.999)
    old = np.column_stack([1 - p, p])
    new = np.clip(old + rng.normal(0, 1e-4, old.shape), 0.001, 0.999)
    right = np.flatnonzero((old[:, 1] > 0.5) == (y == "pos"))[:worse_rows]
    new[right] = new[right][:, ::-1]
    classes = ["neg", "pos"]
    return rs.classification(y, new, classes), rs.classification(y, old, classes)


def differences(new: rs.Scored, old: rs.Scored, metrics: list[str]) -> dict:
    return {k: d.as_dict() for k, d in rs.paired(new, old, metrics, 1000, 0.95, 0).items()}


def test_clearly_worse_model_is_refused_with_the_interval_in_the_line() -> None:
    new, old = planted(worse_rows=120)  # -0.03 accuracy
    diffs = differences(new, old, ["accuracy", "roc_auc"])
    margins = {"accuracy": 0.005, "roc_auc": 0.005}
    for mode in ("non_inferiority", "superiority"):
        by = {g.name: g for g in gates.compare_gates(diffs, margins, mode, "3")}
        acc = by["compare.accuracy"]
        assert not acc.passed and acc.direction == "higher"
        d = diffs["accuracy"]
        assert d["delta"] == pytest.approx(-0.03, abs=0.001) and d["high"] < -0.005
        assert acc.detail.startswith(
            f"accuracy: new \N{MINUS SIGN} champion v3 = \N{MINUS SIGN}{-d['delta']:.4f} "
            f"[\N{MINUS SIGN}{-d['low']:.4f}, \N{MINUS SIGN}{-d['high']:.4f}] "
            "(95 %, paired bootstrap, 1,000 draws) is below "
        )
        assert acc.as_dict()["mode"] == mode and acc.as_dict()["delta"] == d["delta"]
    ni = {g.name: g for g in gates.compare_gates(diffs, margins, "non_inferiority")}
    assert (
        "is below \N{MINUS SIGN}0.0050 (non_inferiority: the lower bound"
        in ni["compare.accuracy"].detail
    )
    assert ni["compare.accuracy"].threshold == -0.005 and ni["compare.accuracy"].value == d["low"]


def test_equal_within_noise_passes_non_inferiority_and_fails_superiority() -> None:
    new, old = planted(worse_rows=0)
    diffs = differences(new, old, ["accuracy", "roc_auc", "log_loss"])
    assert diffs["accuracy"]["low"] <= 0 <= diffs["accuracy"]["high"]
    margins = {"accuracy": 0.005, "roc_auc": 0.005, "log_loss": 0.01}
    assert all(g.passed for g in gates.compare_gates(diffs, margins, "non_inferiority"))
    sup = gates.compare_gates(diffs, margins, "superiority")
    assert not any(g.passed for g in sup)
    # log loss is lower-is-better: its upper bound is read, against +margin / 0.
    ll = {g.name: g for g in sup}["compare.log_loss"]
    assert ll.direction == "lower" and ll.value == diffs["log_loss"]["high"]
    assert "the upper bound must be below 0" in ll.detail
    # The champion compared with itself (Δ = 0 [0, 0]) passes in either mode.
    same = differences(old, old, ["accuracy"])
    assert same["accuracy"]["low"] == same["accuracy"]["high"] == 0.0
    (gate,) = gates.compare_gates(same, margins, "superiority", "4", same_model=True)
    assert gate.passed and "this version is the champion v4" in gate.detail


def test_error_control_is_stated_for_several_metrics() -> None:
    text = gates.error_control("non_inferiority", 0.95)
    assert "every compared metric must pass" in text and "at most 0.025" in text


def test_drift_and_fairness_gates() -> None:
    drift_ok = {"gate_passed": True, "drift_share": 0.1, "max_drift_share": 0.5}
    drift_bad = {"gate_passed": False, "drift_share": 0.6, "failure_lines": ["column 'sex'"]}
    assert gates.drift_gate(drift_ok)[0].passed
    bad = gates.drift_gate(drift_bad)[0]
    assert not bad.passed and "column 'sex'" in bad.detail
    assert gates.drift_gate(None) == []
    assert gates.fairness_gates(METRICS["fairness"], None) == []
    (fair,) = gates.fairness_gates(METRICS["fairness"], 0.1)
    assert not fair.passed and fair.name == "fairness.sex.dpd"
    assert gates.fairness_gates(METRICS["fairness"], 0.2)[0].passed
    decision = gates.decide(
        metrics=METRICS,
        differences=None,
        floors={},
        margins={},
        drift=drift_bad,
        max_fairness_gap=0.1,
    )
    assert [g.name for g in decision.failures] == ["drift", "fairness.sex.dpd"]


def test_missing_metric_is_a_config_error() -> None:
    with pytest.raises(PipelineError, match=r"register\.floors\.f2.*available"):
        gates.floor_gates(METRICS, {"f2": 0.5})


def test_model_card_markdown_is_deterministic_and_complete() -> None:
    card = model_card.build(
        model_name="toy",
        model_cfg={"_target_": "sklearn.linear_model.LogisticRegression", "C": 1.0},
        seed=1,
        registry={"model_name": "toy", "version": 2, "alias": "champion", "is_alias_target": True},
        data={"rows": {"train": 10, "test": 5}, "md5": {"train": "aa", "test": "bb"}},
        text={"intended_use": "demo only", "limitations": "tiny"},
        evaluation={"accuracy": 0.9, "n_rows": 5, "ci": {"accuracy": {"low": 0.8, "high": 1.0}}},
        fairness={
            "positive_label": "y",
            "min_group_size": 1,
            "columns": {
                "g": {
                    "dpd": 0.5,
                    "dpr": 0.5,
                    "eod": 0.5,
                    "groups": [
                        {
                            "group": "a",
                            "size": 4,
                            "base_rate": 0.5,
                            "selection_rate": 0.5,
                            "accuracy": 0.5,
                            "tpr": 0.5,
                            "fpr": 0.5,
                        }
                    ],
                }
            },
        },
        drift={"n_drifted": 0, "n_columns": 3, "drift_share": 0.0, "gate_passed": True},
        drift_top=[],
        decision={
            "decision": "promoted",
            "promoted": True,
            "gates": {"floor.accuracy": {"passed": True, "value": 0.9, "threshold": 0.8}},
        },
        lineage={"model_sha256": "ff", "input_md5": {"m.joblib": "cc"}},
        versions={"scikit-learn": "1.0"},
    )
    text = model_card.to_markdown(card)
    assert text == model_card.to_markdown(card)
    for heading in (
        "## Model details",
        "## Intended use",
        "## Limitations",
        "## Training data",
        "## Evaluation (test split)",
        "## Fairness",
        "## Drift",
        "## Registry decision",
        "## Lineage",
    ):
        assert heading in text
    assert "| accuracy | 0.9000 | 0.8000 to 1.0000 |" in text
    assert "| a | 4 | 0.5000 |" in text
    assert "demo only" in text and "version 2" in text
    logged = model_card.with_run_lineage(card, "run123", "abc")
    assert logged["lineage"]["mlflow_run_id"] == "run123"
    assert "mlflow_run_id" not in card["lineage"]


@pytest.mark.parametrize(
    ("passed", "in_experiment", "promote_in_experiments", "expected"),
    [
        (True, False, False, ("promoted", True)),
        (True, True, False, ("passed-not-promoted", False)),
        (True, True, True, ("promoted", True)),
        (False, False, False, ("rejected", False)),
        (False, True, True, ("rejected", False)),
    ],
)
def test_verdict_table(
    passed: bool, in_experiment: bool, promote_in_experiments: bool, expected: tuple
) -> None:
    assert promotion.verdict(passed, in_experiment, promote_in_experiments) == expected


def test_champion_metrics_are_ours_none_or_rescored() -> None:
    calls: list[int] = []

    def rescore(version: int) -> dict:
        calls.append(version)
        return {"accuracy": 0.5}

    assert promotion.champion_metrics(None, 3, METRICS, rescore) is None
    assert promotion.champion_metrics(3, 3, METRICS, rescore) is METRICS
    assert calls == []
    assert promotion.champion_metrics(2, 3, METRICS, rescore) == {"accuracy": 0.5}
    assert calls == [2]


def test_decision_records_split_headline_from_details() -> None:
    new, old = planted(worse_rows=120)
    diffs = differences(new, old, ["accuracy", "roc_auc"])
    decision = gates.decide(
        metrics=METRICS,
        differences=diffs,
        floors={"accuracy": 0.8},
        margins={"accuracy": 0.0, "roc_auc": 0.0},
        drift=None,
        max_fairness_gap=None,
        champion_version="2",
    )
    assert not decision.passed
    verdict, promote = promotion.verdict(decision.passed, False, False)
    headline, details = promotion.records(
        decision=decision,
        verdict=verdict,
        promote=promote,
        model_name="m",
        version=3,
        champion_before=2,
        champion={"accuracy": 0.9, "roc_auc": 0.95, "log_loss": 0.1},
        compared=["roc_auc", "accuracy"],
        comparison={"mode": "non_inferiority"},
    )
    assert headline == {"promoted": False, "version": 3}
    assert details["decision"] == "rejected" and details["champion_version"] == 2
    assert details["champion_rescored"] == {"accuracy": 0.9, "roc_auc": 0.95}
    assert set(details["gates"]) == {"floor.accuracy", "compare.accuracy", "compare.roc_auc"}
    assert details["failures"] and all("champion v2" in f for f in details["failures"])
    assert details["gates"]["compare.accuracy"]["delta"] == diffs["accuracy"]["delta"]
    assert details["compare"] == {"mode": "non_inferiority"}
    assert promotion.drift_evidence({"gate_passed": True}, {"gate_failures": []}, False) is None
    assert promotion.drift_evidence({"gate_passed": False}, {"gate_failures": ["x"]}, True) == {
        "gate_passed": False,
        "failure_lines": ["x"],
    }


def test_model_card_gives_delta_interval_mode_and_margin() -> None:
    new, old = planted(worse_rows=120)
    diffs = differences(new, old, ["accuracy"])
    (gate,) = gates.compare_gates(diffs, {"accuracy": 0.005}, "non_inferiority", "1")
    record = promotion.comparison_record(
        type(
            "Compare",
            (),
            {
                "mode": "non_inferiority",
                "margins": {"accuracy": 0.005},
                "confidence": 0.95,
                "n_resamples": 1000,
                "seed": 0,
            },
        )(),
        ["accuracy"],
        "rows",
        1,
    )
    lines = model_card._comparison({"compare": record, "gates": {gate.name: gate.as_dict()}})
    text = "\n".join(lines)
    assert "Compared with champion v1 on the same test rows (non_inferiority, 95 %" in text
    assert "intersection-union test" in text
    d = diffs["accuracy"]
    assert f"| accuracy | {d['new']:.4f} | {d['old']:.4f} | {d['delta']:.4f} |" in text
    assert "| 0.0050 | no |" in text


def test_group_column_resamples_whole_groups_when_the_test_split_has_it() -> None:
    import pandas as pd

    test = pd.DataFrame({"patient": ["a", "a", "b"], "x": [1, 2, 3]})
    assert promotion.resampling_units(test, None) == (None, "rows")
    groups, what = promotion.resampling_units(test, "patient")
    assert list(groups) == ["a", "a", "b"] and what == "whole groups of patient"
    groups, what = promotion.resampling_units(test, "country")
    assert groups is None and what.startswith("rows (data.group_column 'country' is not in")
