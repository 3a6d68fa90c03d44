"""Stage cv: k-fold metrics on train+valid (small data), following the split strategy."""

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from tabular_pipeline import stage
from tabular_pipeline.config import (
    CvConfig,
    FeaturizeConfig,
    SplitConfig,
    TuneConfig,
    load_data_config,
    load_params,
    parse_section,
)
from tabular_pipeline.data.split import (
    Roles,
    TimeCuts,
    as_gap,
    make_splits,
    resolve_strategy,
    time_values,
)
from tabular_pipeline.data.task import task_of_frame
from tabular_pipeline.evaluation import cv
from tabular_pipeline.evaluation.metrics import score, test_headline
from tabular_pipeline.models.features import feature_kinds, featurizer_for
from tabular_pipeline.models.modeling import (
    build_estimator,
    fit_pipeline,
    gbdt_library,
    task_model_cfg,
)
from tabular_pipeline.models.tune import apply_tuned

log = logging.getLogger("cv")

# The plot's bar: higher is better for classification (ROC AUC), lower for RMSE.
PRIMARY = {"regression": "rmse", "classification": "roc_auc"}


def main() -> None:
    params = load_params()
    seed = int(params["seed"])
    data = load_data_config(params)  # with the schema's column kinds
    split = parse_section(params, "split", SplitConfig)
    featurize = parse_section(params, "featurize", FeaturizeConfig)
    tune_cfg = parse_section(params, "tune", TuneConfig)
    cfg = parse_section(params, "cv", CvConfig)
    split_dir = Path(split.out_dir)
    frame = pd.concat(
        [stage.read_parquet(split_dir / f"{n}.parquet") for n in ("train", "valid")],
        ignore_index=True,
    )
    enabled, reason = cv.decide(cfg.enabled, len(frame), cfg.max_rows)
    columns = ["fold", "n_train", "n_test", "metric", "score"]
    if not enabled:
        log.info("cross-validation off (%s)", reason)
        stage.write_json(Path(cfg.metrics_out), {"enabled": False, "reason": reason})
        stage.write_csv(pd.DataFrame(columns=columns), Path(cfg.folds_out))
        return

    roles = Roles(data.time_column, data.group_column, tuple(data.id_columns))
    strategy = resolve_strategy(split.strategy, roles, split.stratify)
    gap: Any = 0
    if roles.time_column and strategy in ("time", "group_time"):
        gap = as_gap(split.gap, time_values(frame, roles.time_column))
    task = task_of_frame(frame, data.target)
    model_cfg = apply_tuned(task_model_cfg(dict(params["model"]), task), Path(tune_cfg.out))
    kinds = feature_kinds(frame, data)
    plan = cv.folds(frame, data.target, strategy, roles, cfg.folds, seed, gap)
    log.info("%d folds (%s) on %d train+valid rows: %s", len(plan), strategy, len(frame), reason)

    rows = []
    for i, (train_idx, test_idx) in enumerate(plan, start=1):
        train, test = frame.iloc[train_idx], frame.iloc[test_idx]
        estimator = build_estimator(model_cfg, task)
        valid = None
        if gbdt_library(estimator) is not None:
            # A model that early-stops needs a validation split, as in train: carved out
            # of the fold's train rows the way split carves valid (never the fold's test).
            parts = make_splits(
                train.reset_index(drop=True),
                test,
                data.target,
                split.valid_size,
                split.test_size,
                split.stratify,
                seed,
                strategy=strategy,
                roles=roles,
                cuts=TimeCuts(None, None, split.gap),
            )
            train, valid = parts["train"], parts["valid"]
        # Each fold fits its own featurizer: imputation and scaling learn from its train rows.
        featurizer = featurizer_for(kinds, featurize).fit(train[list(kinds)])
        pipeline = fit_pipeline(featurizer, estimator, train, data.target, valid=valid)
        metrics = score(pipeline, test, data.target)
        keys = [k for k in test_headline(metrics) if k != "n_rows"]
        rows.append(
            {"fold": i, "n_train": len(train), "n_test": len(test_idx)}
            | {k: metrics[k] for k in keys}
        )
        log.info("fold %d: %d train, %d test rows: %s", i, len(train_idx), len(test_idx), rows[-1])
    table = pd.DataFrame(rows)
    keys = [c for c in table.columns if c not in ("fold", "n_train", "n_test")]
    n_train, n_test = float(table["n_train"].mean()), float(table["n_test"].mean())
    primary = PRIMARY["regression" if task == "regression" else "classification"]
    if primary not in keys or table[primary].isna().any():
        primary = "accuracy"
    # One metric's interval only: every metric here is a column in `dvc exp show`.
    # The per-fold values of all of them are in cv.folds_out.
    summary = {
        primary: cv.corrected_interval(
            table[primary].astype(float).tolist(), n_train, n_test, cfg.confidence
        )
    }
    table.insert(3, "metric", primary)
    table.insert(4, "score", table[primary])
    stage.write_csv(table, Path(cfg.folds_out))
    stage.write_json(
        Path(cfg.metrics_out),
        {
            "enabled": True,
            "reason": reason,
            "strategy": strategy,
            "folds": len(plan),
            "rows": len(frame),
            "confidence": cfg.confidence,
            "interval": "Nadeau-Bengio corrected t",
        }
        | summary,
    )
    for k, s in summary.items():
        log.info(
            "%s: mean %.4f, %.0f %% CI %.4f to %.4f",
            k,
            s["mean"],
            cfg.confidence * 100,
            s["ci_low"],
            s["ci_high"],
        )


if __name__ == "__main__":
    stage.run(main)
