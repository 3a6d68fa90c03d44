from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline.config import FeaturizeConfig
from tabular_pipeline.data.split import make_splits
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tests.conftest import shipped


def test_given_test_split_is_honoured(toy_frame: pd.DataFrame) -> None:
    test = toy_frame.iloc[:30]
    out = make_splits(toy_frame.iloc[30:], test, "label", 0.25, 0.2, True, seed=1)
    pd.testing.assert_frame_equal(out["test"], test.reset_index(drop=True))
    assert len(out["train"]) + len(out["valid"]) == 90
    assert len(out["valid"]) == 23


def test_random_split_is_stratified_and_deterministic(toy_frame: pd.DataFrame) -> None:
    a = make_splits(toy_frame, None, "label", 0.25, 0.25, True, seed=7)
    b = make_splits(toy_frame, None, "label", 0.25, 0.25, True, seed=7)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert a["test"]["label"].value_counts().tolist() == [10, 10, 10]
    c = make_splits(toy_frame, None, "label", 0.25, 0.25, True, seed=8)
    assert not a["test"].equals(c["test"])


def test_split_rejects_bad_sizes_and_unstratifiable_classes(toy_frame: pd.DataFrame) -> None:
    with pytest.raises(PipelineError, match="valid_size"):
        make_splits(toy_frame, None, "label", 1.5, 0.2, True, seed=0)
    rare = pd.concat([toy_frame, toy_frame.iloc[[0]].assign(label="z")])
    with pytest.raises(PipelineError, match=r"class\(es\)/bin\(s\) \['z'\]"):
        make_splits(rare, None, "label", 0.2, 0.2, True, seed=0)


def test_featurizer_imputes_scales_and_tolerates_unknown_categories(
    toy_frame: pd.DataFrame,
) -> None:
    numeric, categorical = feature_columns(toy_frame, "label")
    assert numeric == ["num", "count"]
    assert categorical == ["colour"]
    featurizer = build_featurizer(numeric, categorical, shipped("featurize", FeaturizeConfig))
    featurizer.fit(toy_frame.drop(columns=["label"]))
    unseen = pd.DataFrame({"num": [np.nan], "count": [3], "colour": pd.Categorical(["purple"])})
    out = featurizer.transform(unseen)
    assert out.shape == (1, len(featurizer.get_feature_names_out()))
    assert np.isfinite(out).all()


def test_featurizer_constant_imputation_keeps_missing_as_a_category(
    toy_frame: pd.DataFrame,
) -> None:
    frame = toy_frame.copy()
    frame["colour"] = frame["colour"].cat.add_categories([]).astype(object)
    frame.loc[::4, "colour"] = np.nan
    cfg = shipped("featurize", FeaturizeConfig)
    cfg.steps["categorical"]["impute"] |= {"strategy": "constant", "fill_value": "__missing__"}
    cfg.steps["categorical"]["onehot"]["min_frequency"] = None
    featurizer = build_featurizer(["num"], ["colour"], cfg).fit(frame.drop(columns=["label"]))
    assert "cat__colour___missing__" in featurizer.get_feature_names_out()
