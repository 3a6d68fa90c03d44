"""The scikit-learn ColumnTransformer shared by every model."""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tabular_pipeline.config import FeaturizeConfig
from tabular_pipeline.errors import PipelineError


def feature_columns(
    frame: pd.DataFrame, target: str, exclude: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """Split input columns into numeric and categorical by their (validated) dtype.

    ``exclude``: columns kept in the data but never features (``data.group_column``,
    ``data.id_columns``): an entity's name or a row id lets a model memorise rows.
    """
    features = frame.drop(columns=[target, *[c for c in exclude or [] if c in frame.columns]])
    numeric = features.select_dtypes(include=["number"]).columns.tolist()
    categorical = [c for c in features.columns if c not in numeric]
    if not numeric and not categorical:
        raise PipelineError(f"featurize: no feature columns besides the target {target!r}")
    return numeric, categorical


def build_featurizer(
    numeric: list[str], categorical: list[str], cfg: FeaturizeConfig
) -> ColumnTransformer:
    """Impute, scale and one-hot encode; unknown categories at predict time are tolerated."""
    num_steps: list[tuple[str, object]] = [("impute", SimpleImputer(strategy=cfg.numeric.impute))]
    if cfg.numeric.scale:
        num_steps.append(("scale", StandardScaler()))
    cat_impute = (
        SimpleImputer(strategy="constant", fill_value="__missing__")
        if cfg.categorical.impute == "constant"
        else SimpleImputer(strategy=cfg.categorical.impute)
    )
    cat_steps = [
        ("impute", cat_impute),
        (
            "onehot",
            OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                min_frequency=cfg.categorical.min_frequency,
                max_categories=cfg.categorical.max_categories,
                sparse_output=False,
                dtype="float32",
            ),
        ),
    ]
    transformers = []
    if numeric:
        transformers.append(("num", Pipeline(num_steps), numeric))
    if categorical:
        transformers.append(("cat", Pipeline(cat_steps), categorical))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)
