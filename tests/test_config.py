"""Every config composes, parses into the typed sections and builds its model."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import pytest
import yaml

from tabular_pipeline import compose
from tabular_pipeline.config import (
    DataConfig,
    EvaluateConfig,
    FeaturizeConfig,
    IngestConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
    ValidateConfig,
    parse_section,
)
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.models.modeling import build_estimator

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = compose.HydraSettings()
SECTIONS = {
    "data": DataConfig,
    "ingest": IngestConfig,
    "validate": ValidateConfig,
    "split": SplitConfig,
    "featurize": FeaturizeConfig,
    "train": TrainConfig,
    "tune": TuneConfig,
    "evaluate": EvaluateConfig,
    "tracking": TrackingConfig,
}


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
    for name, schema in SECTIONS.items():
        parse_section(params, name, schema)
    assert isinstance(params["seed"], int)
    estimator = build_estimator(params["model"])
    assert estimator.get_params()["random_state"] == params["seed"]


def test_committed_params_are_the_composed_defaults(tmp_path: Path) -> None:
    fresh = compose.compose_params(ROOT, SETTINGS, [], tmp_path / "params.yaml")
    assert fresh.read_text() == (ROOT / "params.yaml").read_text(), "run `make params` and commit"


def test_group_options_exist() -> None:
    assert options("model") == ["hgb", "logreg", "mlp", "random_forest"]
    assert "adult" in options("data")


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
        build_estimator({"_target_": "sklearn.linear_model.LinearRegression"})
    with pytest.raises(PipelineError, match="cannot build"):
        build_estimator({"_target_": "sklearn.linear_model.LogisticRegression", "bogus": 1})
