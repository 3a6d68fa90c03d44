"""How many warm stage servers a day's work leaves, and how much memory each holds.

Runs, in one sampled copy of the project (the tests' Adult fixture) with the
warm runner on (``TABULAR_WARM`` and ``CI`` unset) and a private runtime
folder, the sequence a user would:

1. ``make repro`` (make's variables, ``.venv/bin`` put first on PATH again);
2. ``dvc repro`` of one stage from an "activated shell" (``VIRTUAL_ENV``,
   ``PS1``, another ``SHLVL``, ``TERM``, ``COLUMNS``);
3. ``dvc exp run -S ...`` from a second terminal (tmux and ssh variables);
4. a queued sweep of two experiments run with ``dvc queue start -j 2``.

After each step it lists the live servers (``python -m tabular_pipeline.warm
--status``). The acceptance of issue 27: one server for the whole sequence.
Baseline in the same run: the number of servers the key of the previous
release (every variable but DVC's and the shell's PWD/OLDPWD/SHLVL/_ counted)
would have started for the same four environments.

    python bench/warm_servers.py        # about 3-6 minutes on 2 cores

The servers it started are stopped at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tabular_pipeline import warm  # noqa: E402
from tests.conftest import make_project  # noqa: E402

log = logging.getLogger("warm_servers")
VENV = Path(sys.prefix)


def old_key(env: dict[str, str]) -> str:
    """The environment part of the previous release's key."""
    kept = {
        k: v
        for k, v in env.items()
        if k not in ("PWD", "OLDPWD", "SHLVL", "_", "PYTHONHASHSEED") and not k.startswith("DVC_")
    }
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def servers(env: dict[str, str]) -> list[tuple[str, int]]:
    out = subprocess.run(
        [sys.executable, "-m", "tabular_pipeline.warm", "--status"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.splitlines()
    return [(line.split(":")[0], int(line.split(": pid ")[1].split()[0])) for line in lines]


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident and proportional set size of one process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields["Rss"] / 1024, fields["Pss"] / 1024


def step(name: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: {' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def wait_for_queue(project: Path, env: dict[str, str], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["dvc", "queue", "status"], cwd=project, env=env, capture_output=True, text=True
        ).stdout
        if not any(word in out for word in ("Running", "Queued")):
            if "Failed" in out:
                raise SystemExit(f"a queued experiment failed:\n{out}")
            return
        time.sleep(5)
    raise SystemExit("the queued sweep did not finish in time")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = {k: v for k, v in os.environ.items() if k not in ("TABULAR_WARM", "CI")}
    base["PATH"] = f"/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin"
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Path(tmp) / "run"
        runtime.mkdir(mode=0o700)
        base |= {"XDG_RUNTIME_DIR": str(runtime), "TABULAR_WARM_IDLE": "1200", "SHLVL": "1"}
        project = make_project(Path(tmp))
        bin_path = f"{VENV}/bin{os.pathsep}{base['PATH']}"
        activated = base | {
            "PATH": bin_path,
            "VIRTUAL_ENV": str(VENV),
            "VIRTUAL_ENV_PROMPT": "(.venv) ",
            "PS1": "(.venv) $ ",
            "SHLVL": "2",
            "TERM": "xterm-256color",
            "COLUMNS": "132",
            "LINES": "40",
        }
        terminal = {k: v for k, v in activated.items() if k not in ("COLUMNS", "LINES")} | {
            "TERM": "tmux-256color",
            "TMUX": "/tmp/tmux-0/default,42,0",
            "TMUX_PANE": "%3",
            "SSH_CONNECTION": "127.0.0.1 50000 127.0.0.1 22",
            "SSH_TTY": "/dev/pts/3",
            "OLDPWD": "/",
        }
        # make adds its variables and .venv/bin again (an activated shell had it).
        under_make = activated | {
            "PATH": f"{VENV}/bin{os.pathsep}{bin_path}",
            "MAKEFLAGS": "",
            "MAKELEVEL": "1",
            "MFLAGS": "",
            "DVC_NO_ANALYTICS": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "BENTOML_DO_NOT_TRACK": "true",
            "DO_NOT_TRACK": "true",
        }
        steps = [
            ("make repro", ["make", "repro", f"VENV={VENV}"], activated),
            ("dvc repro -f -s evaluate", ["dvc", "repro", "-f", "-s", "evaluate"], activated),
            (
                "dvc exp run -S evaluate.calibration_bins=7",
                ["dvc", "exp", "run", "-S", "evaluate.calibration_bins=7"],
                terminal,
            ),
            (
                "dvc exp run --queue (2) + dvc queue start -j 2",
                ["dvc", "exp", "run", "--queue", "-S", "evaluate.calibration_bins=8,9"],
                terminal,
            ),
        ]
        seen: set[str] = set()
        rows = []
        try:
            for name, cmd, env in steps:
                seconds = step(name, cmd, project, env)
                if name.startswith("dvc exp run --queue"):
                    start = time.perf_counter()
                    # Not through pipes: `queue start` returns only when every
                    # process holding its output (the workers) has exited.
                    subprocess.run(
                        ["dvc", "queue", "start", "-j", "2"],
                        cwd=project,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        check=True,
                    )
                    wait_for_queue(project, env)
                    seconds += time.perf_counter() - start
                live = servers(base)
                seen.update(key for key, _ in live)
                rows.append((name, seconds, len(live), len(seen)))
            envs = [under_make, activated, terminal]
            before = len({old_key(e) for e in envs})
            after = len({warm.server_key(sys.executable, [], e) for e in envs})
            print("| step | s | live servers | distinct servers so far |")
            print("|---|---|---|---|")
            for name, seconds, live_n, seen_n in rows:
                print(f"| {name} | {seconds:.0f} | {live_n} | {seen_n} |")
            for key, pid in servers(base):
                rss, pss = memory_mib(pid)
                print(f"server {key}: pid {pid}, RSS {rss:.0f} MiB, PSS {pss:.0f} MiB")
            print(f"keys for make / activated shell / other terminal: before {before}, now {after}")
        finally:
            dvc = str(VENV / "bin" / "dvc")
            subprocess.run([dvc, "queue", "stop"], cwd=project, env=base, capture_output=True)
            subprocess.run(
                [sys.executable, "-m", "tabular_pipeline.warm", "--stop", "--all"],
                env=base,
                capture_output=True,
            )


if __name__ == "__main__":
    main()
