"""Torch MLP on the workspace's split: seconds per epoch, fit time and test error.

Run after `make repro` (it reads data/split and the fitted featurizer):

    .venv/bin/python bench/torch_mlp.py                       # mlp-plr, mlp-plain, hgb baseline
    .venv/bin/python bench/torch_mlp.py --tuned reports/tune/best_params.yaml

Each model is composed from conf/ exactly as `dvc exp run -S model=<name>`
would, so the numbers are those of the default configs.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tabular_pipeline import compose, stage
from tabular_pipeline.config import FeaturizeConfig, SplitConfig, load_data_config, parse_section
from tabular_pipeline.evaluation.metrics import classification_metrics
from tabular_pipeline.models.modeling import build_estimator, fit_pipeline, predict_proba
from tabular_pipeline.models.tune import apply_tuned

ROOT = Path(__file__).resolve().parents[1]


def composed(overrides: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = compose.compose_params(
            ROOT, compose.HydraSettings(), overrides, Path(tmp) / "params.yaml"
        )
        return dict(yaml.safe_load(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuned", type=Path, help="best-params file from the tune stage")
    parser.add_argument("--skip", nargs="*", default=[], help="variants to skip")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = composed(["model=mlp"])
    data = load_data_config(params)
    split_dir = ROOT / parse_section(params, "split", SplitConfig).out_dir
    featurizer = stage.load_object(ROOT / parse_section(params, "featurize", FeaturizeConfig).out)
    frames = {n: stage.read_parquet(split_dir / f"{n}.parquet") for n in ("train", "valid", "test")}
    mlp = dict(params["model"]) | {"verbose": False}
    variants = {
        "mlp (PLR embeddings, default)": mlp,
        "mlp, no embeddings": mlp | {"numeric_embedding": None},
        "hgb (baseline, default model)": dict(composed(["model=hgb"])["model"]),
    }
    if args.tuned:
        variants["mlp, tuned"] = apply_tuned(mlp, args.tuned)
    print(
        f"rows: train {len(frames['train'])}, valid {len(frames['valid'])}, test "
        f"{len(frames['test'])}"
    )
    print("| model | test error | ROC AUC | log loss | epochs (best) | s/epoch | fit time |")
    print("|---|---|---|---|---|---|---|")
    for name, cfg in variants.items():
        if any(s in name for s in args.skip):
            continue
        estimator = build_estimator(cfg)
        start = time.perf_counter()
        pipeline = fit_pipeline(
            featurizer, estimator, frames["train"], data.target, frames["valid"]
        )
        fit = time.perf_counter() - start
        proba, classes = predict_proba(pipeline, frames["test"], data.target)
        m = classification_metrics(frames["test"][data.target], proba, classes)
        history = getattr(estimator, "history_", None)
        epochs = f"{len(history)} ({estimator.best_epoch_})" if history else "-"
        per_epoch = f"{fit / len(history):.2f} s" if history else "-"
        print(
            f"| {name} | {100 * m['error']:.2f} % | {m['roc_auc']:.4f} | {m['log_loss']:.4f} "
            f"| {epochs} | {per_epoch} | {fit:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
