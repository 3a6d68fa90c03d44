"""LightGBM, XGBoost and CatBoost against HGB on Adult: test error, ROC AUC, fit time and
the served fast path's latency, all in one run.

Same data path as the pipeline (ingest's normalize, the official test file,
split's train/valid with the pipeline's seed and sizes, the configured
featurizer, each model as `-S model=<name>` composes it, early stopping on the
validation split), in one process, one thread (as the service runs), so the
numbers match `dvc exp run -S model=<name>`. Latency is the service's own
path (FastPredictor: compiled featurizer + the model's predict_proba) on one
JSON row and on a 1,000-row batch.

    .venv/bin/python bench/gbdt.py                      # hgb lightgbm xgboost catboost
    .venv/bin/python bench/gbdt.py --models hgb lightgbm --latency-calls 500
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tabular_pipeline import compose
from tabular_pipeline.config import (
    FeaturizeConfig,
    SplitConfig,
    load_data_config,
    parse_section,
)
from tabular_pipeline.data.ingest import normalize, read_table
from tabular_pipeline.data.split import make_splits
from tabular_pipeline.evaluation.metrics import score
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import build_estimator, fit_pipeline, task_model_cfg

ROOT = Path(__file__).resolve().parents[1]


def params_for(model: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = compose.compose_params(
            ROOT, compose.HydraSettings(), ["data=adult", f"model={model}"], Path(tmp) / "p"
        )
        params: dict[str, Any] = yaml.safe_load(out.read_text())
    params["data"]["schema"] = str(ROOT / params["data"]["schema"])
    return params


def typed(frame: Any) -> Any:
    """As the split stage writes it (Parquet), so as the featurize stage reads it."""
    import io

    import pandas as pd

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return pd.read_parquet(buffer)


def trees(model: Any) -> str:
    """How many boosting rounds early stopping kept."""
    for attr in ("n_iter_", "best_iteration_", "tree_count_"):
        if getattr(model, attr, None):
            return str(int(getattr(model, attr)))
    if hasattr(model, "get_booster"):
        return str(model.get_booster().num_boosted_rounds())
    return "-"


def latency(pipeline: Any, data: Any, test: Any, calls: int) -> tuple[float, float, float]:
    """Single-row p50/p99 and 1000-row batch p50 (ms) through the service's predictor."""
    from tabular_pipeline.serving.fast import FastPredictor
    from tabular_pipeline.serving.schema import build_field_specs, frame_to_rows

    specs = build_field_specs(pipeline.steps[0][1], data)
    fast = FastPredictor(pipeline, specs)
    rows = frame_to_rows(test.drop(columns=[data.target]), specs)
    single = []
    for i in range(calls):
        start = time.perf_counter()
        fast.predict_proba([rows[i % len(rows)]])
        single.append(time.perf_counter() - start)
    batch = []
    for i in range(max(5, calls // 100)):
        chunk = rows[(i * 1000) % len(rows) :][:1000]
        start = time.perf_counter()
        fast.predict_proba(chunk)
        batch.append(time.perf_counter() - start)
    p50, p99 = np.percentile(single, [50, 99]) * 1000
    return float(p50), float(p99), float(np.median(batch) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hgb", "lightgbm", "xgboost", "catboost"])
    parser.add_argument("--latency-calls", type=int, default=2000, help="single-row calls")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from threadpoolctl import threadpool_limits

    params = params_for(args.models[0])
    data = load_data_config(params)
    split = parse_section(params, "split", SplitConfig)
    read = data.source.read
    frame = normalize(read_table(ROOT / data.source.train, read), data)
    official = normalize(read_table(ROOT / str(data.source.test), read), data)
    splits = make_splits(
        frame,
        official,
        data.target,
        split.valid_size,
        split.test_size,
        split.stratify,
        params["seed"],
    )
    train, valid, test = (typed(splits[k]) for k in ("train", "valid", "test"))
    print(
        f"adult: train {len(train)}, valid {len(valid)}, test {len(test)} rows; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread"
    )
    print(
        "| model | test error | ROC AUC | fit s | rounds | 1 row p50 ms | 1 row p99 ms "
        "| 1000 rows ms |\n|---|---|---|---|---|---|---|---|"
    )
    for name in args.models:
        p = params_for(name)
        numeric, categorical = feature_columns(train, data.target)
        featurizer = build_featurizer(
            numeric, categorical, parse_section(p, "featurize", FeaturizeConfig)
        )
        featurizer.fit(train.drop(columns=[data.target]))
        cfg = task_model_cfg(p["model"], "binary")
        with threadpool_limits(1):
            start = time.perf_counter()
            pipeline = fit_pipeline(
                featurizer, build_estimator(cfg, "binary"), train, data.target, valid=valid
            )
            took = time.perf_counter() - start
            got = score(pipeline, test, data.target)
            p50, p99, batch = latency(pipeline, data, test, args.latency_calls)
        label = f"{name} ({cfg['_target_'].rsplit('.', 1)[-1]})"
        print(
            f"| {label} | {got['error_rate'] * 100:.2f} % | {got['roc_auc']:.4f} | {took:.1f} "
            f"| {trees(pipeline[-1])} | {p50:.2f} | {p99:.2f} | {batch:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
