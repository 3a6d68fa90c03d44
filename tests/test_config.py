"""Every config composes, parses into the typed sections and builds its model."""

from __future__ import annotations

import copy
import dataclasses
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import yaml
from sklearn.base import is_regressor

from tabular_pipeline import compose, sections
from tabular_pipeline.config import (
    SCHEMA_KEYS,
    DataConfig,
    IngestConfig,
    SplitConfig,
    TrainConfig,
    load_data_config,
    parse_section,
)
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.models.modeling import build_estimator, task_model_cfg
from tests.conftest import FIXTURE, GAPMINDER, composed_params

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = compose.HydraSettings()
SECTIONS = sections.SECTIONS


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


def test_hydra_settings_match_dvc_config() -> None:
    assert compose.hydra_settings(ROOT) == SETTINGS


@pytest.mark.parametrize(("data", "model"), list(product(options("data"), options("model"))))
def test_every_combination_composes(data: str, model: str, tmp_path: Path) -> None:
    out = compose.compose_params(
        ROOT, SETTINGS, [f"data={data}", f"model={model}"], tmp_path / "p.yaml"
    )
    params = yaml.safe_load(out.read_text())
    sections.check_all(params)
    assert isinstance(params["seed"], int)
    # One model file builds the classifier and the regressor; the dataset's
    # declared task (classification when inferred) picks which one trains.
    for task in ("binary", "regression"):
        estimator = build_estimator(task_model_cfg(params["model"], task), task)
        assert estimator.get_params()["random_state"] == params["seed"]
        assert is_regressor(estimator) == (task == "regression")
    if params["data"]["task"] is not None:
        assert params["data"]["task"] in ("binary", "multiclass", "regression")


def test_committed_params_are_the_composed_defaults(tmp_path: Path) -> None:
    if not (ROOT / "params.yaml").exists():
        pytest.skip("params.yaml not composed yet (a new project): run `make params`")
    fresh = compose.compose_params(ROOT, SETTINGS, [], tmp_path / "params.yaml")
    assert fresh.read_text() == (ROOT / "params.yaml").read_text(), "run `make params` and commit"


def test_group_options_exist() -> None:
    models = ["catboost", "hgb", "lightgbm", "linear", "logreg", "mlp", "random_forest"]
    assert options("model") == [*models, "xgboost"]
    defaults = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]
    chosen = {k: v for d in defaults if isinstance(d, dict) for k, v in d.items()}
    assert chosen["data"] in options("data") and chosen["model"] in options("model")


def test_fixture_data_config_is_the_example_one() -> None:
    """The tests' Adult config must not drift from the example's (template repo only)."""
    if not (ROOT / "conf" / "data" / "adult.yaml").exists():
        pytest.skip("no Adult example here (a project started from the template)")
    for rel in ("conf/data/adult.yaml", "conf/data/schema/adult.yaml"):
        assert (FIXTURE / rel).read_text() == (ROOT / rel).read_text(), rel
    for rel in (
        "conf/data/gapminder.yaml",
        "conf/data/schema/gapminder.yaml",
        "data/raw/gapminder/gapminder.csv.gz",
    ):
        assert (GAPMINDER / rel).read_bytes() == (ROOT / rel).read_bytes(), rel


def test_parse_section_reports_the_bad_key() -> None:
    with pytest.raises(PipelineError, match=r"(?s)section 'split'.*valid_size"):
        parse_section({"split": {"valid_size": "a lot"}}, "split", SplitConfig)
    with pytest.raises(PipelineError, match="missing section 'train'"):
        parse_section({}, "train", TrainConfig)
    with pytest.raises(PipelineError, match=r"(?s)section 'ingest'.*nope"):
        parse_section({"ingest": {"nope": 1}}, "ingest", IngestConfig)


def test_model_without_target_or_predict_proba_is_rejected() -> None:
    with pytest.raises(PipelineError, match="_target_"):
        build_estimator({"C": 1.0})
    with pytest.raises(PipelineError, match="no predict_proba"):
        build_estimator({"_target_": "sklearn.linear_model.LinearRegression"}, "binary")
    with pytest.raises(PipelineError, match="not a regressor"):
        build_estimator({"_target_": "sklearn.linear_model.LogisticRegression"}, "regression")
    assert build_estimator({"_target_": "sklearn.linear_model.LinearRegression"}, "regression")
    with pytest.raises(PipelineError, match="cannot build"):
        build_estimator({"_target_": "sklearn.linear_model.LogisticRegression", "bogus": 1})


def test_every_dataset_has_a_schema_file_that_parses(tmp_path: Path) -> None:
    for data in options("data"):
        out = compose.compose_params(ROOT, SETTINGS, [f"data={data}"], tmp_path / "p.yaml")
        params = yaml.safe_load(out.read_text())
        params["data"]["schema"] = str(ROOT / params["data"]["schema"])
        cfg = load_data_config(params)
        assert cfg.types, f"{data}: schema declares no types (run `make schema`)"


def test_params_hold_no_schema_keys(tmp_path: Path) -> None:
    """The schema stays out of params.yaml, so `dvc exp show` stays narrow."""
    params = yaml.safe_load(compose.compose_params(ROOT, SETTINGS, [], tmp_path / "p").read_text())
    assert not set(params["data"]) & {"types", "expect", "max_null_frac"}


def _data_params(schema: Path, **extra: object) -> dict:
    section = {"name": "t", "raw_dir": "r", "schema": str(schema), "target": "y"}
    section["source"] = {"train": "r/t.csv"}
    return {"data": section | extra}


def test_schema_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    schema = tmp_path / "t.yaml"
    with pytest.raises(PipelineError, match=r"t.yaml: schema file not found"):
        load_data_config(_data_params(schema))
    schema.write_text("types: {age: decimal}\n")
    with pytest.raises(PipelineError, match=r"t.yaml: types.age: unknown type 'decimal'"):
        load_data_config(_data_params(schema))
    schema.write_text("typos: {age: int}\n")
    with pytest.raises(PipelineError, match=r"t.yaml: unknown key\(s\) \['typos'\]"):
        load_data_config(_data_params(schema))
    schema.write_text("expect: {age: {min: low}}\n")
    with pytest.raises(PipelineError, match=r"(?s)t.yaml:.*min"):
        load_data_config(_data_params(schema))
    schema.write_text("types: [age]\n")
    with pytest.raises(PipelineError, match=r"t.yaml"):
        load_data_config(_data_params(schema))


def test_empty_schema_infers_everything_and_schema_keys_in_params_are_refused(
    tmp_path: Path,
) -> None:
    schema = tmp_path / "t.yaml"
    for nothing in ("{}\n", "# every type inferred\n"):
        schema.write_text(nothing)
        cfg = load_data_config(_data_params(schema))
        assert cfg.types == {} and cfg.expect == {} and cfg.max_null_frac == 0.5
    # 0 bytes: DVC would print "WARNING: '...' is empty." for each stage that depends on it.
    schema.write_text("")
    with pytest.raises(PipelineError, match=r"t\.yaml: the schema file is empty .* write `\{\}`"):
        load_data_config(_data_params(schema))
    schema.write_text("types: {age: int}\nexpect: {age: {min: 0}}\nmax_null_frac: 0.1\n")
    cfg = load_data_config(_data_params(schema))
    assert cfg.types == {"age": "int"} and cfg.expect["age"].min == 0
    with pytest.raises(PipelineError, match=r"data.types belongs in the schema file"):
        load_data_config(_data_params(schema, types={"age": "int"}))


def _defaults(schema: type) -> dict[str, Any]:
    """Field -> default (dataclasses.MISSING when the field has none), nested flattened."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = dataclasses.MISSING
        if isinstance(f.type, type) and dataclasses.is_dataclass(f.type):
            out |= {f"{f.name}.{k}": v for k, v in _defaults(f.type).items()}
    return out


@pytest.mark.parametrize("name", [n for n in SECTIONS if n != "data"])
def test_stage_sections_have_no_second_home_for_defaults(name: str) -> None:
    """conf/ is the only home of a stage's values: its dataclass declares no defaults."""
    import typing

    def walk(schema: type, prefix: str) -> list[str]:
        found = []
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                found.append(prefix + f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                found += walk(hints[f.name], f"{prefix}{f.name}.")
        return found

    assert walk(SECTIONS[name], f"{name}.") == []


def test_data_defaults_are_conf_base_data() -> None:
    """DataConfig keeps defaults (tests build toy datasets), but only conf/base's values."""
    import typing

    base = yaml.safe_load((ROOT / "conf/base/data.yaml").read_text())
    hints = typing.get_type_hints(DataConfig)
    schema_filled = set(SCHEMA_KEYS)  # from the schema file, not params
    assert set(base) == {f.name for f in dataclasses.fields(DataConfig)} - schema_filled
    for f in dataclasses.fields(DataConfig):
        if f.name in schema_filled:
            continue
        want = base[f.name]
        nested = hints[f.name]
        if dataclasses.is_dataclass(nested):
            have = _defaults(nested)
            assert set(have) == set(want), f"data.{f.name}: keys differ from conf/base"
            pairs = [(f"{f.name}.{k}", have[k], want[k]) for k in want]
        else:
            pairs = [(f.name, _defaults(DataConfig)[f.name], want)]
        for key, have_value, want_value in pairs:
            if want_value == "???" or (isinstance(want_value, str) and "${" in want_value):
                assert have_value == "???", f"data.{key}: conf supplies it, default must be MISSING"
            else:
                assert have_value == want_value, f"data.{key}: {have_value!r} != conf/base"


def test_every_shipped_section_parses() -> None:
    sections.check_all(composed_params())


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("serve", "auth", "apikey", r"section 'serve': auth: 'apikey' is not one of"),
        ("package", "challenger", {"rev": None, "share": 1.5}, r"challenger.share: 1.5"),
        ("tune", "metric", "f1", r"section 'tune': metric: 'f1' is not one of"),
        ("split", "valid_size", 0.0, r"section 'split': valid_size: 0.0 must be in"),
        ("featurize", "steps", {"dates": {}}, r"featurize.steps: 'dates' is not one of"),
        ("featurize", "steps", {"numeric": {"scale": "yes"}}, r"steps.numeric.scale: expected"),
        ("drift", "gate", {"max_drift_share": 2}, r"gate.max_drift_share: 2"),
        ("drift", "gate", {"min_importance": 0}, r"gate.min_importance: 0"),
        ("monitor", "tests", {"alpha": 1.5}, r"tests.alpha: 1.5"),
    ],
)
def test_a_bad_value_fails_when_params_are_parsed(
    section: str, key: str, value: Any, message: str
) -> None:
    """Allowed values are checked by compose for every section, before any work."""
    params = copy.deepcopy(composed_params())
    if isinstance(value, dict) and isinstance(params[section][key], dict):
        params[section][key] |= value
    else:
        params[section][key] = value
    with pytest.raises(PipelineError, match=message):
        sections.check_all(params)


def test_a_missing_key_is_named() -> None:
    params = copy.deepcopy(composed_params())
    del params["train"]["distributed"]["nnodes"]
    with pytest.raises(PipelineError, match=r"section 'train'.*nnodes"):
        parse_section(params, "train", TrainConfig)
