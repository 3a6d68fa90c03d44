"""Stage featurize: fit the ColumnTransformer on the train split only."""

import logging
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import (
    FeaturizeConfig,
    SplitConfig,
    load_data_config,
    load_params,
    parse_section,
)
from tabular_pipeline.models.features import (
    feature_kinds,
    featurizer_for,
    not_features,
    output_names,
)

log = logging.getLogger("featurize")


def main() -> None:
    params = load_params()
    data = load_data_config(params)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    cfg = parse_section(params, "featurize", FeaturizeConfig)
    train = stage.read_parquet(split_dir / "train.parquet")
    kinds = feature_kinds(train, data)
    excluded = not_features(data)
    if excluded:
        log.info("not features (data.group_column / data.id_columns): %s", excluded)
    featurizer = featurizer_for(kinds, cfg)
    # Fitted on the feature columns only: a request never needs the others.
    featurizer.fit(train[list(kinds)])
    names = output_names(featurizer)
    stage.save_object(featurizer, Path(cfg.out))
    by_kind = {k: [c for c, v in kinds.items() if v == k] for k in dict.fromkeys(kinds.values())}
    stage.write_json(
        Path(cfg.features_out),
        {
            "numeric": by_kind.get("numeric", []),
            "categorical": [c for c, k in kinds.items() if k != "numeric"],
            "kinds": kinds,
            "ids": [c for c in excluded if c in train.columns],
            "n_features_out": len(names),
            "features_out": names,
        },
    )
    log.info(
        "%s -> %d features",
        ", ".join(f"{len(cols)} {kind}" for kind, cols in by_kind.items()),
        len(names),
    )


if __name__ == "__main__":
    stage.run(main)
