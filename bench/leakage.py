"""Cost of the split stage's leakage gate on Adult and on Adult x100 (4.9 M rows).

Baseline in the same run: `make_splits` itself (the split the gate guards).
The gate reads seeded samples of at most `split.leakage.sample_rows` rows per
split for everything except the duplicate-row check, which hashes every
training row.

    .venv/bin/python bench/leakage.py            # x1 and x100
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from tabular_pipeline import compose
from tabular_pipeline.config import SplitConfig, load_data_config, load_params, parse_section
from tabular_pipeline.data import leakage
from tabular_pipeline.data.ingest import normalize, read_table
from tabular_pipeline.data.split import Roles, make_splits

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.leakage")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        out = compose.compose_params(ROOT, compose.HydraSettings(), [], Path(tmp) / "p.yaml")
        params = load_params(out)
    data = load_data_config(params)
    cfg = parse_section(params, "split", SplitConfig)
    raw = {
        n: normalize(read_table(ROOT / p, data.source.read), data)
        for n, p in (("train", data.source.train), ("test", data.source.test))
    }
    for scale in args.scales:
        train = pd.concat([raw["train"]] * scale, ignore_index=True)
        test = pd.concat([raw["test"]] * scale, ignore_index=True)
        start = time.perf_counter()
        splits = make_splits(train, test, data.target, cfg.valid_size, cfg.test_size, True, 42)
        split_s = time.perf_counter() - start
        start = time.perf_counter()
        leakage.check_splits(
            splits,
            target=data.target,
            roles=Roles(),
            strategy="stratified",
            given_test=True,
            gap=0,
            max_duplicate_share=cfg.leakage.max_duplicate_share,
            max_single_feature_score=cfg.leakage.max_single_feature_score,
            sample_rows=cfg.leakage.sample_rows,
            seed=42,
        )
        gate_s = time.perf_counter() - start
        rows = len(train) + len(test)
        log.info(
            "x%d (%d rows): make_splits %.1f s (baseline), leakage gate %.1f s", scale, rows,
            split_s, gate_s,
        )  # fmt: skip


if __name__ == "__main__":
    main()
