"""Per-group metrics, disparity gaps and the vectorised bootstrap on tiny frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.evaluation import fairness as fair


@pytest.fixture
def toy() -> tuple[np.ndarray, np.ndarray, pd.Series]:
    # group a: 4 rows, y = 1 1 0 0, pred = 1 0 1 0 -> sel .5, tpr .5, fpr .5, acc .5
    # group b: 4 rows, y = 1 0 0 0, pred = 1 1 1 1 -> sel 1, tpr 1, fpr 1, acc .25
    y = np.array(["y", "y", "n", "n", "y", "n", "n", "n"])
    pred = np.array(["y", "n", "y", "n", "y", "y", "y", "y"])
    groups = pd.Series(["a"] * 4 + ["b"] * 4)
    return y, pred, groups


def test_group_table_rates(toy) -> None:
    y, pred, groups = toy
    table = fair.group_table(y, pred, groups, "y").set_index("group")
    assert table.loc["a"].to_dict() == {
        "size": 4,
        "base_rate": 0.5,
        "selection_rate": 0.5,
        "accuracy": 0.5,
        "tpr": 0.5,
        "fpr": 0.5,
    }
    assert table.loc["b", "base_rate"] == 0.25
    assert table.loc["b", "selection_rate"] == 1.0
    assert table.loc["b", "accuracy"] == 0.25
    assert (table.loc["b", "tpr"], table.loc["b", "fpr"]) == (1.0, 1.0)


def test_disparities_and_small_groups(toy) -> None:
    y, pred, groups = toy
    gaps = fair.disparities(fair.group_table(y, pred, groups, "y"), min_group_size=1)
    assert gaps == {"dpd": 0.5, "dpr": 0.5, "eod": 0.5, "groups_compared": 2}
    # Groups under the minimum stay out of the gaps.
    none = fair.disparities(fair.group_table(y, pred, groups, "y"), min_group_size=5)
    assert none["dpd"] is None and none["groups_compared"] == 0


def test_missing_sensitive_value_is_its_own_group(toy) -> None:
    y, pred, groups = toy
    groups = groups.astype(object)
    groups.iloc[0] = None
    table = fair.group_table(y, pred, groups, "y")
    assert fair.MISSING in set(table["group"])
    assert table["size"].sum() == len(y)


def test_unknown_sensitive_column_is_a_clear_error(toy) -> None:
    y, pred, groups = toy
    frame = pd.DataFrame({"t": y, "g": groups})
    with pytest.raises(PipelineError, match=r"data.sensitive.*\['gender'\]"):
        fair.fairness_report(frame, pred, "t", "y", ["gender"], 1)


def test_group_bars_has_one_row_per_column_and_group(toy) -> None:
    y, pred, groups = toy
    table = fair.group_table(y, pred, groups, "y")
    bars = fair.group_bars({"g": table, "h": table})
    assert list(bars["group"]) == ["g=a", "g=b", "h=a", "h=b"]
    assert list(bars.columns) == ["group", "selection_rate", "tpr", "size"]


def test_bootstrap_sample_is_seeded_sorted_and_bounded() -> None:
    rows = fair.sample_rows(1_000_000, 5_000, seed=3)
    assert len(rows) == 5_000 and len(np.unique(rows)) == 5_000
    assert (np.diff(rows) > 0).all() and rows.max() < 1_000_000
    assert (rows == fair.sample_rows(1_000_000, 5_000, seed=3)).all()
    assert (fair.sample_rows(10, 5_000, seed=3) == np.arange(10)).all()  # small: every row


def test_model_card_states_the_sample_sizes() -> None:
    from tabular_pipeline.reporting.model_card import sampling_note

    sampling = {
        "test_rows": 1_628_100,
        "bootstrap_rows": 100_000,
        "bootstrap_resamples": 1000,
        "importance_rows": 4000,
        "importance_repeats": 5,
    }
    note = sampling_note(1_628_100, sampling)
    assert "a seeded sample of 100,000 of them" in note and "1,628,100 test rows" in note
    assert "wider" in note and "4,000 rows x 5 repeats" in note
    whole = sampling_note(16_281, sampling | {"test_rows": 16_281, "bootstrap_rows": 16_281})
    assert "of all test rows" in whole and "wider" not in whole
