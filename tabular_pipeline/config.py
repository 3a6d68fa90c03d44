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
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tabular_pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
T = TypeVar("T")


def _one_of(field_name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{field_name}: {value!r} is not one of {list(allowed)}")


def _fraction(field_name: str, value: float, closed_high: bool = False) -> None:
    if not (0 < value < 1 or (closed_high and value == 1)):
        raise ValueError(f"{field_name}: {value!r} must be in (0, 1{']' if closed_high else ')'}")


# Stage sections carry no defaults: conf/ is the one home of every value, and
# ``parse_section`` fails on a key conf forgot instead of filling in a copy
# that can drift. Checks of allowed values run in ``__post_init__``, which
# ``OmegaConf.to_object`` calls, so a typo fails when the params are parsed
# (in ``compose`` for every section at once), not after a Bento is built.


@dataclass
class SourceConfig:
    """Part of ``data``: defaults are conf/base/data.yaml's (see DataConfig)."""

    train: str = MISSING
    test: str | None = None
    # More training rows: paths or globs inside raw_dir (e.g. labelled batches
    # exported by `make monitor`), appended to `train` in sorted order.
    extra_train: list[str] = field(default_factory=list)
    read: dict[str, Any] = field(default_factory=dict)


@dataclass
class ColumnExpect:
    """Validation bounds of one column; unset keys are not checked."""

    min: float | None = None
    max: float | None = None
    categories: list[Any] | None = None
    max_null_frac: float | None = None


DEFAULT_MAX_NULL_FRAC = 0.5  # what an empty schema file means


@dataclass
class SchemaConfig:
    """What valid data looks like. Every key is optional: what is left out is inferred.

    The only dataclass here with defaults: the schema file is not composed by
    Hydra, and an empty file is documented to mean "infer everything".
    """

    types: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    expect: dict[str, ColumnExpect] = field(default_factory=dict)
    max_null_frac: float = DEFAULT_MAX_NULL_FRAC


SCHEMA_KEYS = ("types", "kinds", "expect", "max_null_frac")
COLUMN_TYPES = ("int", "float", "category", "bool", "string", "datetime")
# How featurize treats a column (schema ``kinds``; undeclared: from its dtype,
# see tabular_pipeline.models.features.column_kinds). Each kind has its own
# ordered steps in ``featurize.steps``.
COLUMN_KINDS = ("numeric", "categorical", "high_cardinality", "datetime", "text")


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

    Unlike the stage sections this one keeps defaults: unit tests build small
    datasets by hand. They are conf/base/data.yaml's values, which
    tests/test_config.py holds them to.
    """

    name: str = MISSING
    raw_dir: str = MISSING
    schema: str = MISSING
    source: SourceConfig = MISSING
    target: str = MISSING
    task: str | None = None  # binary | multiclass | regression; None: inferred by ingest
    rename: dict[str, str] = field(default_factory=dict)
    label_map: dict[Any, Any] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)
    time_column: str | None = None  # orders the rows: the split's time axis
    group_column: str | None = None  # entity: never on two sides of a split
    id_columns: list[str] = field(default_factory=list)  # identifiers: never features
    types: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # from the schema file
    labels: list[Any] = field(default_factory=list)
    positive_label: Any = None
    expect: dict[str, ColumnExpect] = field(default_factory=dict)
    max_null_frac: float = DEFAULT_MAX_NULL_FRAC
    min_metrics: dict[str, float] = field(default_factory=dict)
    max_metrics: dict[str, float] = field(default_factory=dict)
    sensitive: list[str] = field(default_factory=list)
    card: CardText = field(default_factory=CardText)


@dataclass
class IngestConfig:
    out_dir: str


@dataclass
class ValidateConfig:
    report_dir: str
    min_rows: int


@dataclass
class LeakageConfig:
    """Thresholds of the leakage gate run by ``split`` (see tabular_pipeline/data/leakage.py)."""

    enforce: bool  # false: failures are logged as warnings (to reproduce a leaky baseline)
    max_duplicate_share: float
    max_single_feature_score: float
    sample_rows: int

    def __post_init__(self) -> None:
        _fraction("leakage.max_duplicate_share", self.max_duplicate_share, closed_high=True)
        _fraction("leakage.max_single_feature_score", self.max_single_feature_score, True)


@dataclass
class SplitConfig:
    out_dir: str
    valid_size: float
    test_size: float
    stratify: bool
    strategy: str
    test_start: Any
    valid_start: Any
    gap: Any
    summary_out: str
    leakage: LeakageConfig

    def __post_init__(self) -> None:
        _fraction("valid_size", self.valid_size)
        _fraction("test_size", self.test_size)
        _one_of(
            "split.strategy",
            self.strategy,
            ("auto", "random", "stratified", "group", "time", "group_time"),
        )


@dataclass
class CvConfig:
    """The ``cv`` section: k-fold evaluation on train+valid, following the split strategy."""

    enabled: Any  # true | false | auto (on when train+valid has at most max_rows rows)
    max_rows: int
    folds: int
    confidence: float
    metrics_out: str
    folds_out: str

    def __post_init__(self) -> None:
        _one_of("cv.enabled", self.enabled, (True, False, "auto"))
        if self.folds < 2:
            raise ValueError(f"cv.folds: {self.folds} must be at least 2")
        _fraction("cv.confidence", self.confidence)


@dataclass
class FeaturizeConfig:
    """``steps``: column kind -> {step name: {_target_, arguments} or null (step off)}."""

    out: str
    features_out: str
    steps: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        for kind, steps in self.steps.items():
            _one_of("featurize.steps", kind, COLUMN_KINDS)
            for name, spec in (steps or {}).items():
                if spec is not None and not (isinstance(spec, dict) and "_target_" in spec):
                    raise ValueError(
                        f"featurize.steps.{kind}.{name}: expected a mapping with _target_ "
                        f"(a class path and its arguments) or null, got {spec!r}"
                    )


@dataclass
class DistributedConfig:
    """torchrun layout of the torch model's training; results depend on it."""

    nproc_per_node: int
    nnodes: int
    rdzv_endpoint: str  # host:port of node 0; empty = single node, free port
    rdzv_id: str


@dataclass
class TrainConfig:
    model_out: str
    metrics_out: str
    curve_out: str
    distributed: DistributedConfig


TUNE_METRICS = ("log_loss", "error")  # minimised on the validation split
TUNE_REGRESSION_METRICS = ("rmse", "mae")  # the same, for data.task regression


@dataclass
class TuneConfig:
    """Optuna study over ``search_space[<estimator class>]``; off unless ``enabled``."""

    enabled: bool
    n_trials: int
    metric: str
    regression_metric: str
    out: str
    trials_out: str
    metrics_out: str
    search_space: dict[str, dict[str, Any]]
    # Several processes or machines share one study only through a database.
    storage: str | None
    study_name: str | None
    n_workers: int

    def __post_init__(self) -> None:
        _one_of("metric", self.metric, TUNE_METRICS)
        _one_of("regression_metric", self.regression_metric, TUNE_REGRESSION_METRICS)
        if self.n_workers < 1:
            raise ValueError(f"n_workers: {self.n_workers!r} must be >= 1")
        if self.n_workers > 1 and not self.storage:
            raise ValueError(
                f"n_workers: {self.n_workers} needs tune.storage (an Optuna database URL such "
                "as sqlite:///tune.db): an in-memory study cannot be shared across processes"
            )


@dataclass
class ImportanceConfig:
    n_repeats: int
    max_rows: int


BOOTSTRAP_METRICS = ("accuracy", "roc_auc", "balanced_accuracy")
REGRESSION_BOOTSTRAP_METRICS = ("rmse", "mae", "r2")


@dataclass
class BootstrapConfig:
    n_resamples: int
    confidence: float
    metrics: list[str]
    regression_metrics: list[str]
    max_rows: int

    def __post_init__(self) -> None:
        _fraction("bootstrap.confidence", self.confidence)
        if self.max_rows < 1:
            raise ValueError(f"bootstrap.max_rows: {self.max_rows!r} must be at least 1")
        for name in self.metrics:
            _one_of("bootstrap.metrics", name, BOOTSTRAP_METRICS)
        for name in self.regression_metrics:
            _one_of("bootstrap.regression_metrics", name, REGRESSION_BOOTSTRAP_METRICS)


@dataclass
class FairnessConfig:
    min_group_size: int


@dataclass
class EvaluateConfig:
    metrics_out: str
    per_class_out: str
    predictions_out: str
    plots_dir: str
    fairness_out: str
    calibration_bins: int
    importance: ImportanceConfig
    bootstrap: BootstrapConfig
    fairness: FairnessConfig


@dataclass
class TrackingConfig:
    experiment: str


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
    except (OmegaConfBaseException, ValueError) as exc:  # ValueError: __post_init__ checks
        raise PipelineError(f"params.yaml: section '{name}': {exc}") from exc
    assert isinstance(obj, schema)
    return obj


def load_schema(path: Path) -> SchemaConfig:
    """Read and type-check a dataset schema file (``{}`` means: infer everything).

    A 0-byte file is refused: it is a DVC dependency, and DVC prints
    ``WARNING: '<file>' is empty.`` for it every time a stage that depends on
    it runs (five stages here). ``{}`` or a comment says the same, quietly.
    """
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except FileNotFoundError as exc:
        raise PipelineError(
            f"{path}: schema file not found (data.schema); create it, with just `{{}}` if "
            "every type may be inferred (see docs/your-data.md)"
        ) from exc
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from exc
    if not text:
        raise PipelineError(
            f"{path}: the schema file is empty (0 bytes), which DVC warns about on every run; "
            "write `{}` in it to infer every type"
        )
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
    for column, kind in obj.kinds.items():
        if kind not in COLUMN_KINDS:
            raise PipelineError(
                f"{path}: kinds.{column}: unknown kind {kind!r} (expected one of "
                f"{list(COLUMN_KINDS)})"
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
    cfg.kinds = schema.kinds
    return cfg


@dataclass
class DriftGateConfig:
    max_drift_share: float
    critical_columns: list[str]
    # A drifted feature fails the gate when its share of the model's mean
    # |SHAP| (explain.importance_out) is at least this.
    min_importance: float
    prediction: bool
    enforce_in_experiments: bool

    def __post_init__(self) -> None:
        _fraction("gate.max_drift_share", self.max_drift_share, closed_high=True)
        _fraction("gate.min_importance", self.min_importance, closed_high=True)


@dataclass
class DriftTestsConfig:
    """Which per-column test Evidently runs, by batch size (see monitoring.drift.plan)."""

    small_batch_rows: int  # batches up to this many rows: p-value tests
    alpha: float  # family-wise false-alarm rate per small batch (Bonferroni over columns)
    min_expected: float  # categories expected fewer times in a small batch are merged

    def __post_init__(self) -> None:
        _fraction("tests.alpha", self.alpha)
        if self.small_batch_rows < 0 or self.min_expected <= 0:
            raise ValueError(
                f"tests: small_batch_rows {self.small_batch_rows!r} must be >= 0 and "
                f"min_expected {self.min_expected!r} > 0"
            )


@dataclass
class DriftConfig:
    current: str
    report_html: str
    summary_out: str
    metrics_out: str
    max_rows: int
    tests: DriftTestsConfig
    gate: DriftGateConfig


# `make monitor` (tabular_pipeline/monitoring/monitor.py): not a stage, but a
# params section like one, parsed by compose with the others.
@dataclass
class QualityConfig:
    metrics: list[str]  # classification models
    regression_metrics: list[str]  # regression models (data.task regression)
    n_resamples: int
    confidence: float
    min_labels: int  # fewer matched labels: reported, not gated
    # metric -> allowed worsening from the promoted value, in the metric's
    # direction (a fall of accuracy/r2, a rise of rmse/mae/log_loss); both
    # tasks' metrics may be listed, only the served model's task's apply
    max_drop: dict[str, float]


@dataclass
class MonitorConfig:
    logs: str  # default for --logs
    out_dir: str
    max_rows: int
    min_rows: int  # fewer served rows: fail (drift on a handful of rows is noise)
    tests: DriftTestsConfig
    gate: DriftGateConfig
    quality: QualityConfig

    def __post_init__(self) -> None:
        listed = set(self.quality.metrics) | set(self.quality.regression_metrics)
        unknown = sorted(set(self.quality.max_drop) - listed)
        if unknown:
            raise ValueError(
                f"quality.max_drop: {unknown} not in quality.metrics {self.quality.metrics} "
                f"or quality.regression_metrics {self.quality.regression_metrics}"
            )
        negative = sorted(k for k, v in self.quality.max_drop.items() if v < 0)
        if negative:
            raise ValueError(
                f"quality.max_drop: {negative} negative; a drop is a worsening in the "
                "metric's direction (a rise for rmse/mae), so the tolerance is >= 0"
            )
        if not 0 < self.quality.confidence < 1:
            raise ValueError(f"quality.confidence: {self.quality.confidence!r} must be in (0, 1)")


COMPARE_MODES = ("non_inferiority", "superiority")


@dataclass
class CompareConfig:
    """``register.compare``: the paired comparison with the champion (docs/comparing-models.md)."""

    mode: str  # non_inferiority: Δ's bound within -margin; superiority: beyond 0
    margins: dict[str, float]  # allowed worsening per metric, in its direction (>= 0)
    confidence: float  # two-sided level of Δ's interval
    n_resamples: int
    seed: int

    def __post_init__(self) -> None:
        _one_of("register.compare.mode", self.mode, COMPARE_MODES)
        _fraction("register.compare.confidence", self.confidence)
        if self.n_resamples < 1:
            raise ValueError(f"register.compare.n_resamples: {self.n_resamples!r} must be >= 1")
        negative = sorted(k for k, v in self.margins.items() if v < 0)
        if negative:
            raise ValueError(
                f"register.compare.margins: {negative} negative; a margin is the allowed "
                "worsening in the metric's direction, so >= 0"
            )


@dataclass
class RegisterConfig:
    model_name: str
    alias: str
    decision_out: str  # headline (promoted, version): a DVC metric
    details_out: str  # gates, verdict, champion comparison: not a metric
    registry_out: str
    card_dir: str
    floors: dict[str, float]
    ceilings: dict[str, float]
    compare: CompareConfig
    require_drift_pass: bool
    max_fairness_gap: float | None
    promote_in_experiments: bool
