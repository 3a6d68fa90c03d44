"""Gapminder regression: test RMSE/R² per model vs the training-mean baseline, and the
served fast path's single-row latency.

Same data path as the pipeline (ingest's normalize, split with the pipeline's seed
and sizes, the configured featurizer, each model as `-S model=<name>` composes it),
but in one process, so the numbers match `dvc exp run -S data=gapminder -S model=<name>`.

    .venv/bin/python bench/regression.py                 # hgb linear mlp
    .venv/bin/python bench/regression.py --models hgb --latency-rows 2000
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

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
from tabular_pipeline.evaluation.metrics import regression_metrics
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import build_estimator, fit_pipeline, task_model_cfg

ROOT = Path(__file__).resolve().parents[1]


def params_for(model: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = compose.compose_params(
            ROOT, compose.HydraSettings(), ["data=gapminder", f"model={model}"], Path(tmp) / "p"
        )
        params = yaml.safe_load(out.read_text())
    params["data"]["schema"] = str(ROOT / params["data"]["schema"])
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["hgb", "linear", "mlp"])
    parser.add_argument("--latency-rows", type=int, default=2000, help="single-row requests")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = params_for(args.models[0])
    data = load_data_config(params)
    split = parse_section(params, "split", SplitConfig)
    frame = normalize(read_table(ROOT / data.source.train), data)
    splits = make_splits(
        frame, None, data.target, split.valid_size, split.test_size, split.stratify, params["seed"]
    )
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    y_test = test[data.target].to_numpy()
    print(f"gapminder: train {len(train)}, valid {len(valid)}, test {len(test)} rows")
    base = regression_metrics(y_test, np.full(len(test), train[data.target].mean()))
    print("| model | test RMSE | test MAE | test R² | fit s |\n|---|---|---|---|---|")
    print(f"| training mean | {base['rmse']:.3f} | {base['mae']:.3f} | {base['r2']:.3f} | - |")
    pipelines = {}
    for name in args.models:
        p = params_for(name)
        numeric, categorical = feature_columns(train, data.target)
        featurizer = build_featurizer(
            numeric, categorical, parse_section(p, "featurize", FeaturizeConfig)
        )
        featurizer.fit(train.drop(columns=[data.target]))
        cfg = task_model_cfg(p["model"], "regression")
        if "verbose" in cfg:
            cfg["verbose"] = False
        start = time.perf_counter()
        pipeline = fit_pipeline(
            featurizer, build_estimator(cfg, "regression"), train, data.target, valid=valid
        )
        took = time.perf_counter() - start
        got = regression_metrics(y_test, pipeline.predict(test.drop(columns=[data.target])))
        name_cls = f"{name} ({cfg['_target_'].rsplit('.', 1)[-1]})"
        print(
            f"| {name_cls} | {got['rmse']:.3f} | {got['mae']:.3f} | {got['r2']:.3f} | {took:.1f} |"
        )
        pipelines[name] = pipeline

    if "hgb" in pipelines and args.latency_rows:
        from threadpoolctl import threadpool_limits

        from tabular_pipeline.serving.fast import FastPredictor
        from tabular_pipeline.serving.schema import build_field_specs, frame_to_rows

        pipeline = pipelines["hgb"]
        specs = build_field_specs(pipeline.steps[0][1], data)
        fast = FastPredictor(pipeline, specs)
        rows = frame_to_rows(test.drop(columns=[data.target]), specs)
        times = []
        with threadpool_limits(1):  # as the service runs
            for i in range(args.latency_rows):
                row = [rows[i % len(rows)]]
                start = time.perf_counter()
                fast.predict(row)
                times.append(time.perf_counter() - start)
            slow = []
            for i in range(min(300, args.latency_rows)):
                frame = test.drop(columns=[data.target]).iloc[[i % len(test)]]
                start = time.perf_counter()
                pipeline.predict(frame)
                slow.append(time.perf_counter() - start)
        p50, p99 = np.percentile(times, [50, 99]) * 1000
        print(
            f"hgb fast path (compiled {fast.compiled_estimator}), one row: p50 {p50:.3f} ms, "
            f"p99 {p99:.3f} ms over {len(times)} calls; pipeline.predict one row: "
            f"p50 {np.percentile(slow, 50) * 1000:.3f} ms"
        )


if __name__ == "__main__":
    main()
