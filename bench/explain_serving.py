"""/explain latency next to /predict, on the built Bento (same server, same rows).

Run from the project root after `make repro` (needs models/service.bento):

    .venv/bin/python bench/explain_serving.py [--requests 1000]

One Bento server on 127.0.0.1 (serve.workers workers, OMP_NUM_THREADS=1 as in
bench/serving.py). An aiohttp client sends single-row requests to /predict
and to /explain at 1 and 8 concurrent clients (rows from the test split),
then times a 100-row /explain_batch. Prints a table for bench/README.md.
Target: /explain p50 <= 10 ms for one row with the default model (hgb).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import (  # noqa: E402
    KEY,
    batch_time,
    free_port,
    load,
    pct,
    request_rows,
    start,
    stop,
    wait_ready,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--batch-repeats", type=int, default=5)
    args = parser.parse_args()

    params, _, rows = request_rows()

    tmp = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    port = free_port()
    env = {
        "OMP_NUM_THREADS": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(tmp / "bentoml"),
        "TABULAR_API_KEY": KEY,
    }
    cmd = [sys.executable, "-m", "tabular_pipeline.serving.cli", "--port", str(port)]
    began = time.perf_counter()
    proc = start(cmd, env, tmp / "bento.log")
    url = f"http://127.0.0.1:{port}"
    results: dict[tuple[str, int], tuple[float, float, float]] = {}
    try:
        asyncio.run(wait_ready(url, "/readyz", proc, tmp / "bento.log"))
        ready_s = time.perf_counter() - began
        for path in ("/predict", "/explain"):
            for clients in (1, 8):
                rps, lat = asyncio.run(load(url, rows, clients, args.requests, path))
                results[(path, clients)] = (rps, pct(lat, 0.5), pct(lat, 0.99))
        batch = 1000 * asyncio.run(
            batch_time(url, rows[:100], args.batch_repeats, "/explain_batch")
        )
    finally:
        stop(proc)

    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"model {params['model']['_target_'].rsplit('.', 1)[-1]}, "
        f"{params['serve']['workers']} worker(s), load average {os.getloadavg()[0]:.1f}; "
        f"server ready in {ready_s:.1f} s (explainer built at start-up)"
    )
    print("| endpoint | clients | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for (path, clients), (rps, p50, p99) in results.items():
        print(f"| {path} | {clients} | {rps:.0f} | {p50:.2f} | {p99:.2f} |")
    print()
    print(f"/explain_batch, 100 rows: {batch:.1f} ms (median)")
    print(f"target: /explain p50 at 1 client = {results[('/explain', 1)][1]:.2f} ms (<= 10)")


if __name__ == "__main__":
    main()
