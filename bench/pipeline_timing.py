"""Time the pipeline: cold `dvc repro`, each stage on its own, and a no-op repro.

Run from the project root with the project's environment (``make env``):

    .venv/bin/python bench/pipeline_timing.py [--repeats 3]

It forces stages to run, so it rewrites the pipeline outputs (deterministically:
the same inputs give the same files). Results are printed, not asserted; record
them in bench/README.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def dvc(*args: str) -> float:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    subprocess.run(["dvc", *args], check=True, env=env, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stages = list(yaml.safe_load(Path("dvc.yaml").read_text())["stages"])
    cpu = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {cpu}, Python {platform.python_version()}")

    forced = [dvc("repro", "--force") for _ in range(args.repeats)]
    print(f"full rebuild (dvc repro --force): median {statistics.median(forced):.1f}s")

    restored = []
    for _ in range(args.repeats):
        for path in ("data/ingested", "data/split", "models", "reports/validate/data_docs"):
            shutil.rmtree(path, ignore_errors=True)
        restored.append(dvc("repro"))
    median = statistics.median(restored)
    print(f"outputs deleted, restored from DVC run cache: median {median:.1f}s")

    print("per stage (dvc repro -s STAGE -f), median of repeats:")
    for stage in stages:
        times = [dvc("repro", "-s", "-f", stage) for _ in range(args.repeats)]
        print(f"  {stage:10s} {statistics.median(times):6.2f}s")

    noop = [dvc("repro") for _ in range(max(args.repeats, 5))]
    print(f"no-op dvc repro: median {statistics.median(noop):.2f}s  max {max(noop):.2f}s")


if __name__ == "__main__":
    main()
