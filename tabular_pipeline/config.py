"""Typed views of the composed ``params.yaml``.

Each stage parses only the sections it declares as DVC params, through
OmegaConf structured configs, so a typo or a wrong type fails at the start of
the stage with the offending key instead of deep inside pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tabular_pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
T = TypeVar("T")


@dataclass
class SourceConfig:
    train: str = "???"
    test: str | None = None
    read: dict[str, Any] = field(default_factory=dict)


@dataclass
class ColumnExpect:
    """Validation bounds of one column; unset keys are not checked."""

    min: float | None = None
    max: float | None = None
    categories: list[Any] | None = None
    max_null_frac: float | None = None


@dataclass
class SchemaConfig:
    """What valid data looks like. Every key is optional: what is left out is inferred."""

    types: dict[str, str] = field(default_factory=dict)
    expect: dict[str, ColumnExpect] = field(default_factory=dict)
    max_null_frac: float = 0.5


SCHEMA_KEYS = ("types", "expect", "max_null_frac")
COLUMN_TYPES = ("int", "float", "category", "bool", "string")


@dataclass
class CardText:
    """Free text for the model card, written by whoever owns the dataset."""

    description: str = ""
    intended_use: str = ""
    limitations: str = ""
    citation: str = ""


@dataclass
class DataConfig:
    """The ``data`` params section, plus the schema fields ``load_data_config`` fills.

    The schema (types, bounds, allowed categories) lives in its own file,
    ``data.schema``: it describes the data rather than tuning anything, and in
    params.yaml it would put a column per category into ``dvc exp show``.
    """

    name: str = "???"
    raw_dir: str = "???"
    schema: str = "???"
    source: SourceConfig = field(default_factory=SourceConfig)
    target: str = "???"
    task: str | None = None  # binary | multiclass | regression; None: inferred by ingest
    rename: dict[str, str] = field(default_factory=dict)
    label_map: dict[Any, Any] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    labels: list[Any] = field(default_factory=list)
    positive_label: Any = None
    expect: dict[str, ColumnExpect] = field(default_factory=dict)
    max_null_frac: float = 0.5
    min_metrics: dict[str, float] = field(default_factory=dict)
    max_metrics: dict[str, float] = field(default_factory=dict)
    sensitive: list[str] = field(default_factory=list)
    card: CardText = field(default_factory=CardText)


@dataclass
class IngestConfig:
    out_dir: str = "data/ingested"


@dataclass
class ValidateConfig:
    report_dir: str = "reports/validate"
    min_rows: int = 1


@dataclass
class SplitConfig:
    out_dir: str = "data/split"
    valid_size: float = 0.2
    test_size: float = 0.2
    stratify: bool = True


@dataclass
class NumericFeatures:
    impute: str = "median"
    scale: bool = True


@dataclass
class CategoricalFeatures:
    impute: str = "most_frequent"
    min_frequency: int | None = 10
    max_categories: int | None = 50


@dataclass
class FeaturizeConfig:
    out: str = "models/featurizer.joblib"
    features_out: str = "reports/featurize/features.json"
    numeric: NumericFeatures = field(default_factory=NumericFeatures)
    categorical: CategoricalFeatures = field(default_factory=CategoricalFeatures)


@dataclass
class DistributedConfig:
    """torchrun layout of the torch model's training; results depend on it."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str = ""  # host:port of node 0; empty = single node, free port
    rdzv_id: str = "tabular-pipeline"


@dataclass
class TrainConfig:
    model_out: str = "models/model.joblib"
    metrics_out: str = "metrics/train.json"
    curve_out: str = "reports/train/curve.csv"
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


@dataclass
class TuneConfig:
    """Optuna study over ``search_space[<estimator class>]``; off unless ``enabled``."""

    enabled: bool = False
    n_trials: int = 20
    metric: str = "log_loss"  # minimised on the validation split; or "error"
    regression_metric: str = "rmse"  # the same for data.task regression; or "mae"
    out: str = "reports/tune/best_params.yaml"
    trials_out: str = "reports/tune/trials.csv"
    metrics_out: str = "metrics/tune.json"
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ImportanceConfig:
    n_repeats: int = 5
    max_rows: int = 4000


@dataclass
class BootstrapConfig:
    n_resamples: int = 1000
    confidence: float = 0.95
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "roc_auc"])
    regression_metrics: list[str] = field(default_factory=lambda: ["rmse", "mae", "r2"])


@dataclass
class FairnessConfig:
    min_group_size: int = 30


@dataclass
class EvaluateConfig:
    metrics_out: str = "metrics/evaluate.json"
    per_class_out: str = "reports/evaluate/per_class.json"
    predictions_out: str = "data/predictions/test.parquet"
    plots_dir: str = "plots"
    fairness_out: str = "reports/evaluate/fairness.json"
    calibration_bins: int = 10
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)


@dataclass
class TrackingConfig:
    experiment: str = "tabular-pipeline"


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the composed params file (never Hydra directly: DVC issue #10186)."""
    try:
        with path.open(encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except FileNotFoundError as exc:
        raise PipelineError(f"{path}: not found; run `make params` to compose it") from exc
    if not isinstance(params, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    return params


def parse_section(params: dict[str, Any], name: str, schema: type[T]) -> T:
    """Validate ``params[name]`` against ``schema`` and return the typed object."""
    if name not in params:
        raise PipelineError(f"params.yaml: missing section '{name}'")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), params[name])
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise PipelineError(f"params.yaml: section '{name}': {exc}") from exc
    assert isinstance(obj, schema)
    return obj


def load_schema(path: Path) -> SchemaConfig:
    """Read and type-check a dataset schema file (an empty file means: infer everything)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PipelineError(
            f"{path}: schema file not found (data.schema); create it, empty if every type "
            "may be inferred (see README, Bring your own data)"
        ) from exc
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from exc
    raw = raw or {}
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping with keys {list(SCHEMA_KEYS)}")
    unknown = sorted(set(raw) - set(SCHEMA_KEYS))
    if unknown:
        raise PipelineError(f"{path}: unknown key(s) {unknown}; allowed: {list(SCHEMA_KEYS)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SchemaConfig), raw)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise PipelineError(f"{path}: {exc}") from exc
    assert isinstance(obj, SchemaConfig)
    for column, kind in obj.types.items():
        if kind not in COLUMN_TYPES:
            raise PipelineError(
                f"{path}: types.{column}: unknown type {kind!r} (expected one of "
                f"{list(COLUMN_TYPES)})"
            )
    return obj


def load_data_config(params: dict[str, Any]) -> DataConfig:
    """The dataset's params section plus its schema file.

    Only stages that declare ``${data.schema}`` as a DVC dependency may call
    this; the others parse the ``data`` section alone.
    """
    section = params.get("data")
    if isinstance(section, dict):
        misplaced = [k for k in SCHEMA_KEYS if k in section]
        if misplaced:
            raise PipelineError(
                f"params.yaml: data.{misplaced[0]} belongs in the schema file named by "
                f"data.schema ({section.get('schema')}), not in conf/data/"
            )
    cfg = parse_section(params, "data", DataConfig)
    schema = load_schema(Path(cfg.schema))
    cfg.types, cfg.expect, cfg.max_null_frac = schema.types, schema.expect, schema.max_null_frac
    return cfg


@dataclass
class DriftGateConfig:
    max_drift_share: float = 0.5
    critical_columns: list[str] = field(default_factory=list)
    prediction: bool = False
    enforce_in_experiments: bool = False


@dataclass
class DriftConfig:
    current: str = "data/split/test.parquet"
    report_html: str = "reports/drift/report.html"
    summary_out: str = "reports/drift/summary.json"
    metrics_out: str = "metrics/drift.json"
    max_rows: int = 50000
    gate: DriftGateConfig = field(default_factory=DriftGateConfig)


@dataclass
class RegisterConfig:
    model_name: str = "???"
    alias: str = "champion"
    decision_out: str = "metrics/register.json"
    registry_out: str = "models/registry.json"
    card_dir: str = "reports/model_card"
    floors: dict[str, float] = field(default_factory=dict)
    ceilings: dict[str, float] = field(default_factory=dict)
    max_regression: dict[str, float] = field(default_factory=dict)
    require_drift_pass: bool = True
    max_fairness_gap: float | None = None
    promote_in_experiments: bool = False
