"""Drift summary, gate and HTML normalisation; one small real Evidently run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline.config import DataConfig, DriftConfig
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.monitoring import drift
from tests.conftest import shipped

GATE = shipped("drift", DriftConfig).gate


def col(name: str, drifted: bool, score: float = 0.2) -> dict:
    return {
        "column": name,
        "method": "Jensen-Shannon distance",
        "threshold": 0.1,
        "score": score,
        "drifted": drifted,
    }


def test_html_ids_are_renumbered_in_order() -> None:
    a = "01a20908-661d-704f-939e-099054808190"
    b = "01a20908-5fa7-7167-ac09-b07e7bc42ebc"
    html = f"var metric_{'ab' * 16} = {{'{a}': 1, '{b}': 2, '{a}': 3}}; draw(metric_{'ab' * 16})"
    out = drift.normalise_html(html)
    assert a not in out and b not in out and "abab" not in out
    assert out.count("00000000-0000-0000-0000-000000000000") == 2
    assert out.count("00000000-0000-0000-0000-000000000001") == 1
    assert out.count(f"metric_{0:032d}") == 2


def test_gate_share_critical_and_prediction() -> None:
    columns = [col("a", True), col("b", False), col("sex", True), col("prediction", True)]
    gate = replace(GATE, max_drift_share=0.5, critical_columns=["sex"], prediction=True)
    summary = drift.summarise(columns, "prediction", gate)
    assert summary["n_columns"] == 3 and summary["n_drifted"] == 2
    assert summary["drift_share"] == pytest.approx(2 / 3, abs=1e-6)
    lines = summary["gate_failures"]
    assert len(lines) == 3
    assert "2 of 3 feature columns drifted" in lines[0] and "a, sex" in lines[0]
    assert "critical column 'sex' drifted: Jensen-Shannon distance 0.2000" in lines[1]
    assert "model predictions 'prediction' drifted" in lines[2]
    head = drift.headline(summary, gate)
    assert head["gate_passed"] is False and head["gate_failures"] == 3

    quiet = drift.summarise(
        [col("a", False), col("sex", False), col("prediction", True)],
        "prediction",
        replace(GATE, critical_columns=["sex"], prediction=False),
    )
    assert quiet["gate_failures"] == [] and quiet["prediction_drifted"] is True


def test_unknown_critical_column_is_reported() -> None:
    summary = drift.summarise([col("a", False)], None, replace(GATE, critical_columns=["x"]))
    assert summary["gate_failures"] == ["critical column 'x' is not in the data (drift.gate)"]


def test_parse_snapshot_uses_evidently_test_status() -> None:
    snap = {
        "metrics": [
            {"id": "m0", "config": {"type": "evidently:metric_v2:DriftedColumnsCount"}},
            {
                "id": "m1",
                "config": {
                    "type": "evidently:metric_v2:ValueDrift",
                    "column": "b",
                    "method": "K-S p_value",
                    "threshold": 0.05,
                },
                "value": 0.0123456789,
            },
            {
                "id": "m2",
                "config": {
                    "type": "evidently:metric_v2:ValueDrift",
                    "column": "a",
                    "method": "K-S p_value",
                    "threshold": 0.05,
                },
                "value": 0.5,
            },
        ],
        "tests": [
            {
                "metric_config": {
                    "metric_id": "m1",
                    "params": {"type": "evidently:metric_v2:ValueDrift"},
                },
                "status": "FAIL",
            },
            {
                "metric_config": {
                    "metric_id": "m2",
                    "params": {"type": "evidently:metric_v2:ValueDrift"},
                },
                "status": "SUCCESS",
            },
        ],
    }
    rows = drift.parse_snapshot(snap)
    assert [r["column"] for r in rows] == ["a", "b"]
    assert rows[1] == {
        "column": "b",
        "method": "K-S p_value",
        "threshold": 0.05,
        "score": 0.012346,
        "drifted": True,
    }
    assert rows[0]["drifted"] is False


class _Model:
    classes_ = np.array(["n", "y"])

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = (frame["x"].to_numpy() > 0).astype(float) * 0.8 + 0.1
        return np.column_stack([1 - p, p])


def test_prepare_types_prediction_and_missing_columns() -> None:
    data = DataConfig(name="t", target="t", types={"x": "float", "g": "category"})
    ref = pd.DataFrame({"x": [1.0, -1.0], "g": pd.Categorical(["a", "b"]), "t": ["y", "n"]})
    cur = pd.DataFrame({"x": [2.0], "g": ["a"], "extra": [1]})
    _, c, cols = drift.prepare(ref, cur, data, _Model(), max_rows=10, seed=0)
    assert cols.numerical == ["x", "prediction"] and cols.categorical == ["g"]
    assert list(c.columns) == ["x", "g", "prediction"] and c["prediction"].iloc[0] == 0.9
    with pytest.raises(PipelineError, match=r"missing feature column\(s\) \['g'\]"):
        drift.prepare(ref, cur.drop(columns=["g"]), data, _Model(), 10, 0)


def test_evidently_flags_a_shifted_column_and_not_a_stable_one() -> None:
    rng = np.random.default_rng(0)
    n = 1500
    ref = pd.DataFrame({"x": rng.normal(size=n), "g": rng.choice(["a", "b"], size=n, p=[0.5, 0.5])})
    cur = pd.DataFrame({"x": rng.normal(size=n), "g": rng.choice(["a", "b"], size=n, p=[0.9, 0.1])})
    result = drift.run_report(
        ref,
        cur,
        drift.Columns(numerical=["x"], categorical=["g"]),
        shipped("drift", DriftConfig).tests,
    )
    by = {c["column"]: c for c in result.columns}
    assert by["g"]["drifted"] and not by["x"]["drifted"]
    assert "metric_" + "0" * 32 in result.html
    summary = drift.summarise(
        result.columns, None, replace(GATE, max_drift_share=0.6, critical_columns=["g"])
    )
    assert summary["gate_failures"] == [
        f"critical column 'g' drifted: Jensen-Shannon distance {by['g']['score']:.4f} "
        "(threshold 0.1)"
    ]


def test_random_hash_seed_is_refused_and_dvc_pins_it() -> None:
    import yaml

    from tests.conftest import ROOT

    drift.check_hash_seed(hash_randomization=0)
    with pytest.raises(PipelineError, match=r"drift needs PYTHONHASHSEED=0"):
        drift.check_hash_seed(hash_randomization=1)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["drift"]["cmd"] == "PYTHONHASHSEED=0 python -m tabular_pipeline.warm stages.drift"


# --- per-column tests by batch size, rare categories, importance gate -------------------
TESTS = shipped("drift", DriftConfig).tests


def test_plan_switches_from_p_values_to_distances_by_batch_size() -> None:
    small = drift.plan(300, 15, TESTS)
    assert small.small and (small.num_method, small.cat_method) == ("ks", "chisquare")
    assert small.threshold == pytest.approx(TESTS.alpha / 15, rel=1e-5)
    large = drift.plan(TESTS.small_batch_rows + 1, 15, TESTS)
    assert not large.small and (large.num_method, large.cat_method) == (
        "wasserstein",
        "jensenshannon",
    )
    assert large.threshold is None  # Evidently's default effect size (0.1)
    # A reference under 10 times the batch: the chi-square would overstate drift.
    assert not drift.plan(300, 15, TESTS, reference_rows=2000).small
    assert drift.plan(300, 15, TESTS, reference_rows=3000).small


def test_rare_categories_missing_and_unseen_values_are_merged() -> None:
    ref = pd.Series(["a"] * 50 + ["b"] * 45 + ["c"] * 4 + [None])
    cur = pd.Series(["a", "b", "new", None, "c"])
    r, c, rare = drift.merge_rare(ref, cur, rows=100, min_expected=5)
    # a (50 expected) and b (45) stay; c (4), missing (1) and the unseen value merge.
    assert rare == ["(missing)", "c"]
    assert set(r) == {"a", "b", drift.OTHER} and r.value_counts()[drift.OTHER] == 5
    assert list(c) == ["a", "b", drift.OTHER, drift.OTHER, drift.OTHER]
    # At 10 rows b is expected 4.5 times: merged too.
    assert drift.merge_rare(ref, pd.Series(["a", "b"]), 10, 5)[2] == ["(missing)", "b", "c"]
    # The merged level needs the minimum too: z alone would be expected 0.1 times.
    tail = pd.Series(["x"] * 900 + ["y"] * 99 + ["z"])
    assert drift.merge_rare(tail, pd.Series(["x", "z"]), 100, 5)[2] == ["y", "z"]
    _, kept_c, nothing = drift.merge_rare(pd.Series(["a", "b"] * 50), pd.Series(["a"]), 20, 5)
    assert nothing == [] and list(kept_c) == ["a"]


def _population(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A numeric column and a 40-category one with a long tail (like native_country)."""
    weights = np.r_[0.9, np.full(39, 0.1 / 39)]
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "country": rng.choice([f"c{i}" for i in range(40)], size=n, p=weights),
        }
    )


def test_small_clean_batches_raise_nothing_and_a_shift_is_found() -> None:
    """The issue's false alarm on a 40-category column at 300 rows, fixed; power kept."""
    rng = np.random.default_rng(0)
    ref = _population(6000, rng)
    cols = drift.Columns(numerical=["x"], categorical=["country"])
    flagged = 0
    for _ in range(6):
        result = drift.run_report(ref, _population(300, rng), cols, TESTS, html=False)
        flagged += any(c["drifted"] for c in result.columns)
        assert result.tests["kind"].startswith("p-value")
        assert result.tests["merged_categories"] == {"country": 39}
    assert flagged == 0
    # The fixed distance threshold flags the long-tailed column on the same kind of batch.
    old = drift.run_report(
        ref, _population(300, rng), cols, replace(TESTS, small_batch_rows=0), html=False
    )
    assert {c["column"]: c["drifted"] for c in old.columns}["country"] is True
    shifted = _population(300, rng).assign(x=lambda f: f["x"] + 1.0)
    found = drift.run_report(ref, shifted, cols, TESTS, html=False)
    by = {c["column"]: c for c in found.columns}
    assert by["x"]["drifted"] and by["x"]["method"] == "K-S p_value"
    assert not by["country"]["drifted"]


def test_importance_gate_names_column_score_and_share(tmp_path: Path) -> None:
    path = tmp_path / "importance.csv"
    path.write_text("feature,mean_abs_shap\nage,3.0\nsex,0.9\neducation,0.1\n")
    importance = drift.read_importance(path)
    assert importance == {"age": 0.75, "sex": 0.225, "education": 0.025}
    columns = [
        col("education", True, 0.3),
        col("age", True, 1e-9) | {"method": "K-S p_value", "threshold": 0.0033},
        col("sex", False),
        col("prediction", True, 0.001) | {"method": "K-S p_value", "threshold": 0.0033},
    ]
    gate = replace(
        GATE, max_drift_share=1.0, critical_columns=["sex"], min_importance=0.05, prediction=True
    )
    summary = drift.summarise(columns, "prediction", gate, importance=importance)
    assert summary["drifted_columns"] == ["age", "education"]  # most important first
    assert summary["gate_failures"] == [
        "model predictions 'prediction' drifted: K-S p_value 0.0010 (threshold 0.0033)",
        "feature 'age' drifted: K-S p_value 1.00e-09 (threshold 0.0033), importance share "
        "0.750 >= drift.gate.min_importance 0.05",
    ]
    # education drifted but carries 2.5 % of the importance: reported, not gated.
    assert summary["n_drifted"] == 2
    with pytest.raises(PipelineError, match=r"run `dvc repro explain`"):
        drift.read_importance(tmp_path / "missing.csv")
