"""Time `make test` on a fresh clone, phase by phase, as CI runs it.

    python bench/suite_timing.py             # env, lint, chromium, pytest (2 workers)
    python bench/suite_timing.py --serial    # ... then pytest -n 0 as the baseline

The clone is of HEAD (commit your work first). Phases run as `make test`
would run them; `--serial` adds the same suite in one process afterwards, so
the parallel run and its serial baseline are timed on the same machine in the
same session. Prints one line per phase, pytest's summary and slowest tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(label: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{label}: {' '.join(cmd)} exited {proc.returncode}")
    return elapsed, proc.stdout


def pytest_summary(output: str, slowest: int) -> list[str]:
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "slowest" in line), len(lines))
    durations = [line for line in lines[start + 1 :] if line[:1].isdigit()][:slowest]
    return durations + [line for line in lines if " passed" in line or " failed" in line][-1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", action="store_true", help="also time pytest -n 0")
    parser.add_argument("--slowest", type=int, default=12, help="slowest tests to print")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="suite-timing-"))
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    ).stdout.strip()
    env = dict(os.environ, CI="true")
    env.pop("VIRTUAL_ENV", None)
    load = os.getloadavg()[0]
    print(f"# commit {commit}, {os.cpu_count()} cores, load average {load:.2f} at start")

    phases: list[tuple[str, float]] = []
    durations = f"--durations={args.slowest}"
    for label, cmd in (
        ("env (make env)", ["make", "env"]),
        ("lint (ruff, mypy)", ["make", "lint"]),
        ("chromium", ["make", "chromium"]),
        ("pytest (xdist, -n auto)", [".venv/bin/pytest", "-q", durations]),
    ):
        elapsed, out = timed(label, cmd, clone, env)
        phases.append((label, elapsed))
        print(f"{label:28s} {elapsed:8.1f} s", flush=True)
        if label.startswith("pytest"):
            print("\n".join(pytest_summary(out, args.slowest)), flush=True)
    total = sum(t for _, t in phases)
    print(f"{'make test total':28s} {total:8.1f} s ({total / 60:.1f} min)")

    if args.serial:
        elapsed, out = timed("serial", [".venv/bin/pytest", "-q", "-n", "0", durations], clone, env)
        print(f"{'baseline: pytest -n 0':28s} {elapsed:8.1f} s")
        print("\n".join(pytest_summary(out, args.slowest)))
        parallel = phases[-1][1]
        print(f"speed-up of pytest: {elapsed / parallel:.2f}x")
    print(f"# load average {os.getloadavg()[0]:.2f} at end")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
