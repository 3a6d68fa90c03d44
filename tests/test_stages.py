"""Stage scripts run under the wrong interpreter explain themselves."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stage_under_a_bare_python_names_the_interpreter_and_the_fix(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(bare)
    python = bare / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "stages.ingest"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bare / 'bin'}:/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert "ModuleNotFoundError" not in proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("ERROR stage: the interpreter ")
    assert str(python) in line and "cannot import pandas" in line
    assert "source .venv/bin/activate" in line or "make repro" in line


def test_project_interpreter_passes_the_check() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import stages"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
