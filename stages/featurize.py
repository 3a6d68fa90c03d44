"""Stage featurize: fit the ColumnTransformer on the train split only."""

import logging
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import (
    DataConfig,
    FeaturizeConfig,
    SplitConfig,
    load_params,
    parse_section,
)
from tabular_pipeline.models.features import build_featurizer, feature_columns

log = logging.getLogger("featurize")


def main() -> None:
    params = load_params()
    data = parse_section(params, "data", DataConfig)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    cfg = parse_section(params, "featurize", FeaturizeConfig)
    train = stage.read_parquet(split_dir / "train.parquet")
    exclude = [c for c in [data.group_column, *data.id_columns] if c]
    numeric, categorical = feature_columns(train, data.target, exclude)
    if exclude:
        log.info("not features (data.group_column / data.id_columns): %s", exclude)
    featurizer = build_featurizer(numeric, categorical, cfg)
    # Fitted on the feature columns only: a request never needs the others.
    featurizer.fit(train[numeric + categorical])
    names = [str(n) for n in featurizer.get_feature_names_out()]
    stage.save_object(featurizer, Path(cfg.out))
    stage.write_json(
        Path(cfg.features_out),
        {
            "numeric": numeric,
            "categorical": categorical,
            "n_features_out": len(names),
            "features_out": names,
        },
    )
    log.info(
        "%d numeric + %d categorical columns -> %d features",
        len(numeric),
        len(categorical),
        len(names),
    )


if __name__ == "__main__":
    stage.run(main)
