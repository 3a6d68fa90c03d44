"""Column kinds: inferred by `make schema`, declared in the schema, featurized by the
configured steps, attributed by SHAP grouping and typed in the request schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline.config import DataConfig, FeaturizeConfig, load_params, parse_section
from tabular_pipeline.data.ingest import normalize
from tabular_pipeline.data.schema_infer import infer_schema
from tabular_pipeline.data.validation import validate_tables
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.explain.shap_values import feature_groups
from tabular_pipeline.models.features import column_kinds, featurizer_for
from tabular_pipeline.serving.schema import build_field_specs, frame_to_rows, rows_to_frame
from tests.conftest import ROOT


def planted(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Raw text as a CSV gives it: every kind the inference must tell apart."""
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D")
    return pd.DataFrame(
        {
            "iso_day": days.strftime("%Y-%m-%d"),
            "slash_day": days.strftime("%Y/%m/%d"),
            "customer_id": [f"C{i:07d}" for i in rng.permutation(n)],
            "account_no": rng.permutation(n) + 10_000,
            "merchant": [f"shop-{v}" for v in rng.integers(0, 5000, n)],
            "review": [f"arrived late, item {i} fine" for i in range(n)],
            "year": rng.integers(1990, 2020, n),
            "colour": rng.choice(["red", "blue"], n),
            "amount": rng.gamma(2.0, 30.0, n).round(2),
            "label": rng.choice(["a", "b"], n),
        }
    )


def test_make_schema_proposes_kinds_and_ids() -> None:
    schema = infer_schema([planted()], "label")
    assert schema["types"]["iso_day"] == schema["types"]["slash_day"] == "datetime"
    assert schema["kinds"] == {
        "iso_day": "datetime",
        "slash_day": "datetime",
        "customer_id": "high_cardinality",
        "account_no": "numeric",
        "merchant": "high_cardinality",
        "review": "text",
        "year": "numeric",  # a number, not a date, though every value is a year
        "colour": "categorical",
        "amount": "numeric",
    }
    assert schema["ids"] == ["customer_id", "account_no"]  # unique: proposed, not decided


def test_a_date_that_does_not_parse_is_a_named_validation_failure() -> None:
    cfg = DataConfig(
        name="t", raw_dir="r", schema="s.yaml", target="label", types={"day": "datetime"}
    )
    raw = pd.DataFrame({"day": ["2021/01/31", "2021/02/30", None], "label": ["a", "b", "a"]})
    frame = normalize(raw, cfg)
    assert frame["day"].dtype == object  # left as text for validate to name
    failures = validate_tables(cfg, {"train": frame}, 1, None)["train"].failures
    assert len(failures) == 1 and "column 'day'" in failures[0]
    assert "1 value(s) are not dates" in failures[0] and "2021/02/30" in failures[0]
    good = normalize(raw.assign(day=["2021/01/31", "2021/02/28", None]), cfg)
    assert str(good["day"].dtype).startswith("datetime64")
    assert validate_tables(cfg, {"train": good}, 1, None)["train"].success


def featurize_cfg(model: str, tmp_path) -> FeaturizeConfig:
    from tabular_pipeline import compose

    path = compose.compose_params(
        ROOT, compose.HydraSettings(), [f"model={model}"], tmp_path / "params.yaml"
    )
    return parse_section(load_params(path), "featurize", FeaturizeConfig)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """As ingest leaves it with the inferred schema's types."""
    types = infer_schema([frame], "label")["types"]
    cfg = DataConfig(name="t", raw_dir="r", schema="s.yaml", target="label", types=types)
    return normalize(frame, cfg)


@pytest.mark.parametrize("model", ["hgb", "logreg"])
def test_default_steps_per_kind_give_readable_attributable_features(model, tmp_path) -> None:
    frame = typed(planted(400))
    frame.loc[::9, "slash_day"] = pd.NaT
    declared = {"merchant": "high_cardinality", "review": "text"}
    kinds = column_kinds(frame, "label", declared, id_columns=["customer_id", "account_no"])
    assert "customer_id" not in kinds and "account_no" not in kinds  # ids: never features
    assert kinds["iso_day"] == "datetime"  # from the dtype
    cfg = featurize_cfg(model, tmp_path)
    featurizer = featurizer_for(kinds, cfg).fit(frame.drop(columns=["label"]))
    names = list(featurizer.get_feature_names_out())
    assert {"date__slash_day_month", "date__iso_day_total_seconds"} <= set(names)
    assert "high__merchant_00" in names and "text__review_29" in names
    assert "num__amount" in names and "cat__colour_red" in names
    X = featurizer.transform(frame.drop(columns=["label"]))
    if model == "logreg":  # scaled preset: imputed, standardised
        assert np.isfinite(X).all()
        assert abs(X[:, names.index("num__amount")].std() - 1) < 1e-6
    else:  # trees preset: not scaled, missing dates stay missing for the trees
        assert np.isnan(X[:, names.index("date__slash_day_month")]).sum() == len(frame[::9])
        amount = X[:, names.index("num__amount")]
        np.testing.assert_allclose(amount, frame["amount"].to_numpy())
    columns, groups = feature_groups(featurizer)
    assert sorted(columns) == sorted(kinds) and sum(len(g) for g in groups) == len(names)
    date_block = [names[i] for i in groups[columns.index("slash_day")]]
    assert date_block and all(n.startswith("date__slash_day_") for n in date_block)
    # the same fit twice: seeded encoders give the same bits
    again = featurizer_for(kinds, cfg).fit(frame.drop(columns=["label"]))
    np.testing.assert_array_equal(X, again.transform(frame.drop(columns=["label"])))


def test_request_schema_takes_dates_and_text_as_strings(tmp_path) -> None:
    frame = typed(planted(300))
    kinds = column_kinds(frame, "label", {"merchant": "high_cardinality"}, ["customer_id"])
    featurizer = featurizer_for(kinds, featurize_cfg("hgb", tmp_path))
    X = frame.drop(columns=["label"])
    featurizer.fit(X)
    cfg = DataConfig(name="t", raw_dir="r", schema="s.yaml", target="label")
    specs = build_field_specs(featurizer, cfg)
    by_name = {s.name: s.kind for s in specs}
    assert by_name["iso_day"] == "datetime" and by_name["merchant"] == "text"
    rows = frame_to_rows(X.head(20), specs)
    assert isinstance(rows[0]["iso_day"], str)
    served = featurizer.transform(rows_to_frame(rows, specs))
    np.testing.assert_array_equal(served, featurizer.transform(X.head(20)))


def test_misconfigured_kinds_and_steps_are_named(tmp_path) -> None:
    frame = typed(planted(100))
    with pytest.raises(PipelineError, match=r"kinds names column\(s\) \['nope'\]"):
        column_kinds(frame, "label", {"nope": "text"})
    cfg = featurize_cfg("hgb", tmp_path)
    cfg.steps["text"] = {"encode": None}
    with pytest.raises(PipelineError, match=r"featurize.steps.text: no steps for .*'review'"):
        featurizer_for({"review": "text"}, cfg)
    cfg.steps["text"] = {"encode": {"_target_": "no.such.Encoder"}}
    with pytest.raises(PipelineError, match=r"featurize.steps.text.encode: cannot build"):
        featurizer_for({"review": "text"}, cfg)


def test_drift_compares_dates_as_moments_in_time() -> None:
    from tabular_pipeline.monitoring.drift import prepare

    class Fixed:
        classes_ = np.array(["a", "b"])

        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            return np.tile([0.4, 0.6], (len(X), 1))

    rng = np.random.default_rng(0)
    day = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 900, 60), unit="D")
    frame = pd.DataFrame({"day": day, "x": rng.normal(size=60), "label": "a"})
    current = frame.copy()
    current.loc[3, "day"] = pd.NaT
    cfg = DataConfig(name="t", raw_dir="r", schema="s", target="label", types={"day": "datetime"})
    ref, cur, columns = prepare(frame, current, cfg, Fixed(), 1000, 0)
    assert "day" in columns.numerical
    assert ref["day"].iloc[0] == (day[0] - pd.Timestamp(0)).total_seconds()
    assert cur["day"].isna().sum() == 1
