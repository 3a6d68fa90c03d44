from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.evaluation import metrics as m


def test_binary_metrics_match_sklearn_definitions() -> None:
    y = pd.Series(["no", "yes", "yes", "no"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = m.classification_metrics(y, proba, ["no", "yes"])
    assert out["accuracy"] == 0.5 and out["error_rate"] == 0.5
    assert out["roc_auc"] == 0.75
    assert out["per_class"]["yes"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert out["n_rows"] == 4


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_multiclass_metrics_and_missing_class_in_truth() -> None:
    classes = ["a", "b", "c"]
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    out = m.classification_metrics(pd.Series(["a", "b", "c", "b"]), proba, classes)
    assert out["accuracy"] == 0.75
    assert set(out["per_class"]) == set(classes)
    assert out["roc_auc"] == 1.0  # every class's positives outrank its negatives
    # Class c absent from the truth: macro AUC over a and b only, not null.
    absent = m.classification_metrics(pd.Series(["a", "b", "b", "a"]), proba, classes)
    assert absent["roc_auc"] == 0.875  # one-vs-rest: a 1.0, b 0.75
    assert absent["per_class"]["c"]["support"] == 0
    one = m.classification_metrics(pd.Series(["a", "a", "a", "a"]), proba, classes)
    assert one["roc_auc"] is None  # undefined with one class present, not a crash


def test_curve_classes() -> None:
    assert m.curve_classes(["<=50K", ">50K"], ">50K") == [">50K"]
    assert m.curve_classes(["0", "1"], None) == ["1"]
    assert m.curve_classes(["a", "b", "c"], None) == ["a", "b", "c"]
    with pytest.raises(PipelineError, match="positive_label"):
        m.curve_classes(["a", "b"], "c")


def test_slug_is_unique_and_file_safe() -> None:
    taken: set[str] = set()
    assert m.slug(">50K", taken) == "gt50K"
    assert m.slug("<=50K", taken) == "le50K"
    assert m.slug("a/b", taken) == "a_b"
    assert m.slug("a b", taken) == "a_b_2"


def test_curve_points_have_expected_columns() -> None:
    y = pd.Series(["n", "y"] * 20)
    rng = np.random.default_rng(0)
    p = rng.random(40)
    proba = np.column_stack([1 - p, p])
    roc = m.roc_points(y, proba, ["n", "y"], "y")
    assert list(roc.columns) == ["fpr", "tpr"] and roc["fpr"].iloc[0] == 0
    assert list(m.pr_points(y, proba, ["n", "y"], "y").columns) == ["recall", "precision"]
    cal = m.calibration_points(y, proba, ["n", "y"], "y", bins=4)
    assert list(cal.columns) == ["predicted", "observed"] and len(cal) <= 4
    assert len(m.confusion_rows(y, proba, ["n", "y"])) == 40


def test_long_curves_are_thinned_keeping_both_ends() -> None:
    curve = pd.DataFrame({"fpr": np.linspace(0, 1, 25_001), "tpr": np.linspace(0, 1, 25_001)})
    thin = m.thin(curve, points=1_000)
    assert len(thin) == 1_000
    assert thin.iloc[0].tolist() == [0.0, 0.0] and thin.iloc[-1].tolist() == [1.0, 1.0]
    assert thin["fpr"].is_monotonic_increasing
    short = curve.head(500)
    assert m.thin(short, points=1_000) is short  # below the cap: untouched (Adult's curves)
