"""How the chain scales with the rows: N-times Adult as a bring-your-own dataset (issue 17).

Run from the project root with the project's environment (``make env``):

    .venv/bin/python bench/scale.py --factor 100 [--factor 10] [--keep]

For each factor, and for 1x first as the baseline of the same invocation, it
clones the committed project into a scratch folder (the root is never
touched), writes ``data/raw/adult_x<N>/{train,test}.parquet`` (N jittered
copies of Adult's train and test files: copy 0 is the original, the others
move age, fnlwgt and hours-per-week a little, seeded, within the observed
range), adds ``conf/data/adult_x<N>.yaml`` and its schema the way a user
brings a dataset, selects it in ``conf/config.yaml`` and runs every stage
with ``dvc repro --single-item <stage>`` in ``dvc.yaml`` order. Per stage it
prints the wall time and the peak RSS of the stage's process tree (``wait4``
on ``dvc``, which includes the stage command DVC runs), then each factor's
growth against 1x. The data is written by a child process, so the parent
stays small: a forked child's peak RSS starts at its parent's. Targets at
100x (issue 17): whole chain <= 30 min, no stage above 6 GiB.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from bench.loop_timing import scratch_clone, scratch_dir  # noqa: E402

MiB = 1024 * 1024
# Raw Adult column -> largest move of a jittered copy (integers, clipped to the observed range).
JITTER = {"age": 2, "hours-per-week": 3}
FNLWGT_SPREAD = 0.05  # multiplicative, fnlwgt is a sampling weight


def read_adult(path: Path) -> pd.DataFrame:
    import pandas as pd

    frame = pd.read_csv(path, sep=",", skipinitialspace=True, na_values=["?"])
    for col in frame.columns:
        if frame[col].dtype == object:
            frame[col] = frame[col].astype("category")  # N copies share the categories
    return frame


def jittered(frame: pd.DataFrame, factor: int, seed: int) -> pd.DataFrame:
    """``factor`` copies of ``frame``: copy 0 as is, the others moved a little (seeded)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    copies = [frame]
    for _ in range(1, factor):
        copy = frame.copy()
        for col, spread in JITTER.items():
            moved = copy[col].to_numpy() + rng.integers(-spread, spread + 1, len(copy))
            copy[col] = np.clip(moved, frame[col].min(), frame[col].max())
        weight = copy["fnlwgt"].to_numpy() * rng.lognormal(0.0, FNLWGT_SPREAD, len(copy))
        copy["fnlwgt"] = np.clip(weight.round(), frame["fnlwgt"].min(), frame["fnlwgt"].max())
        copy["fnlwgt"] = copy["fnlwgt"].astype(frame["fnlwgt"].dtype)
        copies.append(copy)
    return pd.concat(copies, ignore_index=True)


def write_data(project: Path, factor: int) -> None:
    """The N-times Adult's raw files (run in a child process: see the module docstring)."""
    raw = project / "data" / "raw" / f"adult_x{factor}"
    raw.mkdir(parents=True)
    for part, source in (("train", "adult.data.csv.gz"), ("test", "adult.test.csv.gz")):
        table = jittered(read_adult(project / "data/raw/adult" / source), factor, seed=factor)
        table.to_parquet(raw / f"{part}.parquet", index=False)


def bring_dataset(project: Path, factor: int) -> tuple[str, int]:
    """Write the N-times Adult and its config as a user would; return its name and rows."""
    name = f"adult_x{factor}"
    script = Path(__file__).resolve()
    cmd = [sys.executable, str(script), "--write-data", str(project), "--factor", str(factor)]
    subprocess.run(cmd, check=True)
    rows = factor * 48_842  # Adult's train + test rows
    conf = yaml.safe_load((project / "conf/data/adult.yaml").read_text())
    conf["name"] = name
    conf["source"] = {part: f"data/raw/{name}/{part}.parquet" for part in ("train", "test")}
    (project / f"conf/data/{name}.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    shutil.copy(project / "conf/data/schema/adult.yaml", project / f"conf/data/schema/{name}.yaml")
    config = project / "conf/config.yaml"
    config.write_text(config.read_text().replace("  - data: adult\n", f"  - data: {name}\n", 1))
    return name, rows


def run_stage(project: Path, stage: str) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of ``dvc repro --single-item stage`` and its children."""
    # Cold stages: a stage forked by the warm runner's server is not a child of
    # dvc, so wait4 would not see its memory (tabular_pipeline/warm.py).
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TABULAR_WARM": "0"}
    log = project / "scale-bench.log"
    start = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.Popen(
            ["dvc", "repro", "--single-item", stage], cwd=project, env=env, stdout=out, stderr=out
        )
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{stage} failed ({proc.returncode}); log: {log}\n{log.read_text()[-4000:]}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports KiB


def run_chain(workdir: Path, factor: int) -> tuple[int, dict[str, tuple[float, int]]]:
    project = scratch_clone(workdir / f"x{factor}")
    start = time.perf_counter()
    name, rows = bring_dataset(project, factor)
    print(f"\n{factor}x: {rows:,} rows ({name}) written in {time.perf_counter() - start:.1f} s")
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    results: dict[str, tuple[float, int]] = {}
    for stage in stages:
        results[stage] = run_stage(project, stage)
        wall, rss = results[stage]
        print(f"  {stage:<10} {wall:8.1f} s  {rss / MiB:8,.0f} MiB", flush=True)
    total = sum(wall for wall, _ in results.values())
    print(f"  {'chain':<10} {total:8.1f} s  {max(r for _, r in results.values()) / MiB:8,.0f} MiB")
    return rows, results


def table(runs: dict[int, tuple[int, dict[str, tuple[float, int]]]]) -> None:
    factors = sorted(runs)
    base_rows, base = runs[factors[0]]
    head = " | ".join(f"{f}x ({runs[f][0]:,} rows)" for f in factors)
    print(f"\n| stage | {head} | growth at {factors[-1]}x: time, RSS |")
    print("|---|" + "---|" * len(factors) + "---|")
    last = runs[factors[-1]][1]
    for stage in base:
        cells = " | ".join(
            f"{runs[f][1][stage][0]:.1f} s, {runs[f][1][stage][1] / MiB:,.0f} MiB" for f in factors
        )
        grow = f"{last[stage][0] / base[stage][0]:.1f}x, {last[stage][1] / base[stage][1]:.1f}x"
        print(f"| {stage} | {cells} | {grow} |")
    totals = {f: sum(w for w, _ in runs[f][1].values()) for f in factors}
    peaks = {f: max(r for _, r in runs[f][1].values()) for f in factors}
    cells = " | ".join(f"**{totals[f]:.0f} s**, max {peaks[f] / MiB:,.0f} MiB" for f in factors)
    last_factor = factors[-1]
    print(
        f"| whole chain | {cells} | {totals[last_factor] / totals[factors[0]]:.1f}x, "
        f"{peaks[last_factor] / peaks[factors[0]]:.1f}x |"
    )
    rows_growth = runs[last_factor][0] / base_rows
    slowest = max(last, key=lambda s: last[s][0])
    minutes, gib = totals[last_factor] / 60, peaks[last_factor] / MiB / 1024
    print(
        f"\nrows grew {rows_growth:.0f}x. At {last_factor}x: chain {minutes:.1f} min (target "
        f"<= 30 min at 100x), largest stage RSS {gib:.2f} GiB (target <= 6 GiB), slowest "
        f"stage {slowest}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--factor", type=int, action="append", required=True, help="row multiple (repeatable)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch projects")
    parser.add_argument("--write-data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_data:
        write_data(args.write_data, args.factor[0])
        return
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start"
    )
    runs: dict[int, tuple[int, dict[str, tuple[float, int]]]] = {}
    with scratch_dir("scale-bench-", args.keep) as workdir:
        for factor in sorted({1, *args.factor}):
            runs[factor] = run_chain(workdir, factor)
            if not args.keep:  # 100x outputs and their DVC cache take several GB
                shutil.rmtree(workdir / f"x{factor}", ignore_errors=True)
        table(runs)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
