"""What DVC's one-process-per-stage costs in the experiment loop (issue 17).

Run from the project root with the project's environment (``make env``):

    .venv/bin/python bench/loop_timing.py [--repeats 3] [--keep]

One invocation, on a scratch clone of the committed project (the root's
outputs are never touched), prints three ratios:

(a) cold ``dvc repro -f`` of the whole chain vs the same stages run one after
    the other in one Python process (imports paid once);
(b) a one-parameter ``dvc exp run -S model.learning_rate=0.1`` vs the stages
    it re-ran, again in one process;
(c) a no-op ``dvc repro`` vs ``dvc status`` (median of ``--repeats``).

Targets: (a) and (b) at most 1.5x, (c) at most 1.3x. The in-process baseline
runs each stage's ``__main__`` with ``runpy``, with ``PYTHONHASHSEED=0`` as
``drift`` requires, so the difference is process start-up, imports and DVC's
own work (hashing, locking, writing dvc.lock). Results are printed, not
asserted; on a shared machine they are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SWEEP_PARAM = "model.learning_rate"

# Runs the named stages in this one process, as `python -m stages.<name>` would.
IN_PROCESS = """
import runpy, sys, time
sys.path.insert(0, ".")
for name in sys.argv[1:]:
    start = time.perf_counter()
    sys.argv[:] = [f"stages/{name}.py"]
    runpy.run_module(f"stages.{name}", run_name="__main__", alter_sys=True)
    print(f"{name} {time.perf_counter() - start:.2f}", file=sys.stderr, flush=True)
"""


def env(**extra: str) -> dict[str, str]:
    return os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"} | extra


def timed(cmd: list[str], cwd: Path, **extra: str) -> tuple[float, str]:
    shown = (
        " ".join(cmd) if cmd[0] != sys.executable else "stages in one process: " + " ".join(cmd[3:])
    )
    print(f"  running {shown}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr}")
    return elapsed, proc.stdout + proc.stderr


def in_process(project: Path, stages: list[str], **extra: str) -> float:
    cmd = [sys.executable, "-c", IN_PROCESS, *stages]
    return timed(cmd, project, PYTHONHASHSEED="0", **extra)[0]


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def ratio(name: str, dvc_time: float, base: float, target: float) -> None:
    verdict = "ok" if dvc_time / base <= target else "over target"
    print(
        f"{name}: {dvc_time:6.1f} s vs {base:6.1f} s  ratio {dvc_time / base:.2f}x "
        f"(target <= {target}x: {verdict})"
    )


@contextmanager
def scratch_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A temporary folder for scratch clones, removed afterwards unless ``keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def scratch_clone(workdir: Path) -> Path:
    """``workdir/project``: a clone of HEAD's committed files, DVC analytics off."""
    project = workdir / "project"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(project)], check=True)
    subprocess.run(["git", "checkout", "-q", head], cwd=project, check=True)
    subprocess.run(
        [str(BIN / "dvc"), "config", "--local", "core.analytics", "false"], cwd=project, check=True
    )
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="no-op repro and status runs")
    parser.add_argument("--keep", action="store_true", help="keep the scratch clone")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {load:.1f} at start"
    )
    with scratch_dir("loop-timing-", args.keep) as workdir:
        project = scratch_clone(workdir)
        print(f"scratch clone of {ROOT} (HEAD, committed files only): {project}")
        stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
        # A private runtime folder: the warm run starts its own server from nothing,
        # so (a) warm includes the warm-up, as the first repro of a day would.
        runtime = workdir / "run"
        runtime.mkdir(mode=0o700)
        warm = {"TABULAR_WARM": "1", "XDG_RUNTIME_DIR": str(runtime)}
        cold = {"TABULAR_WARM": "0"}
        try:
            # (a) Same stages, same inputs; the in-process run goes first so that
            # every run sees warm OS file caches for the libraries.
            base_cold = in_process(project, stages)
            results = {}
            for mode, extra in (("cold", cold), ("warm", warm)):
                elapsed, out = timed(["dvc", "repro", "-f"], project, **extra)
                assert ran(out) == stages, ran(out)
                results[mode] = elapsed
            for mode in ("warm", "cold"):
                ratio(f"(a) dvc repro -f, {mode:4} vs one process", results[mode], base_cold, 1.5)

            # (c) Nothing to do: repro must cost about what status costs.
            status = [timed(["dvc", "status"], project)[0] for _ in range(args.repeats)]
            noop = []
            for _ in range(args.repeats):
                elapsed, out = timed(["dvc", "repro"], project, **warm)
                assert not ran(out), f"not a no-op: {ran(out)}"
                noop.append(elapsed)

            # (b) One parameter: DVC re-runs only what depends on it. A second
            # value for the cold run, so that DVC's run cache cannot skip it.
            exp = {}
            reruns = {}
            for mode, extra, value in (("warm", warm, "0.1"), ("cold", cold, "0.11")):
                sweep = f"{SWEEP_PARAM}={value}"
                exp[mode], out = timed(["dvc", "exp", "run", "-S", sweep], project, **extra)
                reruns[mode] = ran(out)
            assert reruns["warm"] == reruns["cold"], reruns
            base_exp = in_process(project, reruns["warm"], DVC_EXP_NAME="loop-timing")
            for mode in ("warm", "cold"):
                ratio(
                    f"(b) dvc exp run -S {SWEEP_PARAM}, {mode:4} vs one process",
                    exp[mode],
                    base_exp,
                    1.5,
                )
            print(f"    re-ran: {', '.join(reruns['warm'])}")
            ratio(
                f"(c) no-op dvc repro vs dvc status (median of {args.repeats})",
                statistics.median(noop),
                statistics.median(status),
                1.3,
            )
        finally:
            subprocess.run(
                [sys.executable, "-m", "tabular_pipeline.warm", "--stop"],
                cwd=project,
                env=env(**warm),
                capture_output=True,
            )
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
