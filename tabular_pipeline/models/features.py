"""The scikit-learn ColumnTransformer shared by every model, built from config.

Each feature column has a kind (``numeric``, ``categorical``,
``high_cardinality``, ``datetime``, ``text``): declared in the schema file's
``kinds``, else read from its ingested dtype. Each kind has an ordered list of
steps in ``featurize.steps``, each a ``_target_`` class path with its
arguments (scikit-learn, skrub or the user's own package), instantiated by
Hydra. ``data.id_columns`` are never features.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from tabular_pipeline.config import COLUMN_KINDS, DataConfig, FeaturizeConfig
from tabular_pipeline.errors import PipelineError

# ColumnTransformer block per kind: the prefix of every output feature name
# (``num__age``, ``cat__sex_Male``, ``date__signup_month``).
BLOCK_NAMES = {
    "numeric": "num",
    "categorical": "cat",
    "high_cardinality": "high",
    "datetime": "date",
    "text": "text",
}


def default_kind(series: pd.Series) -> str:
    """The kind a column gets when the schema does not declare one (today's behaviour)."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return "numeric"
    return "categorical"


def column_kinds(
    frame: pd.DataFrame,
    target: str,
    declared: dict[str, str] | None = None,
    id_columns: list[str] | tuple[str, ...] = (),
    schema: str = "the schema file",
) -> dict[str, str]:
    """Feature column -> kind, in the frame's column order; ids and the target left out."""
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(frame.columns))
    if unknown:
        raise PipelineError(
            f"{schema}: kinds names column(s) {unknown} that the split data does not have; "
            "fix the name or remove the entry"
        )
    excluded = {target, *id_columns}
    kinds = {
        str(c): declared.get(str(c)) or default_kind(frame[c])
        for c in frame.columns
        if c not in excluded
    }
    if not kinds:
        raise PipelineError(f"featurize: no feature columns besides the target {target!r}")
    return kinds


def not_features(data: DataConfig) -> list[str]:
    """Columns kept in the data but never features: ``data.group_column`` and
    ``data.id_columns`` (an entity's name or a row id lets a model memorise rows)."""
    return [c for c in [data.group_column, *data.id_columns] if c]


def feature_kinds(frame: pd.DataFrame, data: DataConfig) -> dict[str, str]:
    """Feature column -> kind as featurize and cv both fit them."""
    return column_kinds(frame, data.target, data.kinds, not_features(data), data.schema)


def feature_columns(
    frame: pd.DataFrame, target: str, exclude: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """Numeric and categorical columns by dtype (kinds undeclared, no dates); ``exclude``
    as :func:`not_features`."""
    kinds = column_kinds(frame, target, id_columns=exclude or ())
    return (
        [c for c, k in kinds.items() if k == "numeric"],
        [c for c, k in kinds.items() if k != "numeric"],
    )


def build_step(spec: dict[str, Any], where: str) -> Any:
    """One configured step; a skrub single-column transformer is applied to each column."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        # _convert_ all: plain lists/dicts, or ListConfig is pickled into the model
        # and omegaconf becomes a serving dependency.
        step = instantiate(spec, _convert_="all")
    except InstantiationException as exc:
        raise PipelineError(f"{where}: cannot build {spec.get('_target_')}: {exc}") from exc
    if type(step).__module__.startswith("skrub.") and _single_column(step):
        from skrub import ApplyToCols

        return ApplyToCols(step)
    return step


def _single_column(step: Any) -> bool:
    from skrub._single_column_transformer import SingleColumnTransformer

    return isinstance(step, SingleColumnTransformer)


def build_featurizer(
    numeric: list[str], categorical: list[str], cfg: FeaturizeConfig
) -> ColumnTransformer:
    """The featurizer of numeric and categorical columns (see :func:`featurizer_for`)."""
    kinds = dict.fromkeys(numeric, "numeric") | dict.fromkeys(categorical, "categorical")
    return featurizer_for(kinds, cfg)


def featurizer_for(kinds: dict[str, str], cfg: FeaturizeConfig) -> ColumnTransformer:
    """One block per kind present: its configured steps, in order, on its columns."""
    transformers = []
    for kind in COLUMN_KINDS:
        columns = [c for c, k in kinds.items() if k == kind]
        if not columns:
            continue
        specs = {n: s for n, s in (cfg.steps.get(kind) or {}).items() if s is not None}
        if not specs:
            raise PipelineError(
                f"featurize.steps.{kind}: no steps for the {kind} column(s) {columns}; "
                "configure steps for this kind or declare the columns as another kind"
            )
        steps = [(n, build_step(s, f"featurize.steps.{kind}.{n}")) for n, s in specs.items()]
        transformers.append((BLOCK_NAMES[kind], Pipeline(steps), columns))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


def output_names(featurizer: ColumnTransformer) -> list[str]:
    """The fitted featurizer's output feature names (``<block>__<feature>``)."""
    return [str(n) for n in featurizer.get_feature_names_out()]
