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


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    import pytest

    from tabular_pipeline import stage

    target = tmp_path / "out" / "m.json"
    stage.write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        stage.write_json(target, {"a": object()})  # fails mid-write
    assert target.read_text() == '{\n  "a": 1\n}\n'  # the old file, whole
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]


def test_write_errors_become_one_line(tmp_path: Path) -> None:
    code = (
        "import errno\nfrom tabular_pipeline import stage\n"
        "def main():\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', 'models/.model.joblib.7.tmp')\n"
        "stage.run(main)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot write models/model.joblib: No space left on device" in proc.stderr


def test_damaged_pickle_is_a_pipeline_error(tmp_path: Path) -> None:
    import pytest

    from tabular_pipeline import stage
    from tabular_pipeline.errors import PipelineError

    path = tmp_path / "model.joblib"
    stage.save_object({"weights": list(range(1000))}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(PipelineError, match=r"model.joblib: cannot load .*dvc checkout"):
        stage.load_object(path)
