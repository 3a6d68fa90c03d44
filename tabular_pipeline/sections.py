"""Every params section that has a typed config, so all of them can be checked at once.

``compose`` parses each section right after writing ``params.yaml`` (and
under ``dvc exp run``, the file DVC wrote), so a typo such as
``serve.auth: apikey`` fails the first stage, naming the key, instead of the
stage that happens to read it, after an hour of training. A new section adds
its dataclass here.
"""

from __future__ import annotations

from typing import Any

from tabular_pipeline.config import (
    CvConfig,
    DataConfig,
    DriftConfig,
    EvaluateConfig,
    FeaturizeConfig,
    IngestConfig,
    MonitorConfig,
    RegisterConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
    ValidateConfig,
    parse_section,
)
from tabular_pipeline.explain.settings import ExplainConfig
from tabular_pipeline.serving.settings import DeployConfig, PackageConfig, ServeConfig

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "ingest": IngestConfig,
    "validate": ValidateConfig,
    "split": SplitConfig,
    "featurize": FeaturizeConfig,
    "cv": CvConfig,
    "tune": TuneConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "explain": ExplainConfig,
    "tracking": TrackingConfig,
    "drift": DriftConfig,
    "register": RegisterConfig,
    "package": PackageConfig,
    "serve": ServeConfig,
    "deploy": DeployConfig,
    "monitor": MonitorConfig,
}


def check_all(params: dict[str, Any]) -> None:
    """Parse every section (raises ``PipelineError`` naming the first bad key)."""
    for name, schema in SECTIONS.items():
        parse_section(params, name, schema)
