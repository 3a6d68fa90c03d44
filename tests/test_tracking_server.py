"""A dead or hung tracking server fails a stage fast, in one line naming the URI."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tabular_pipeline import tracking
from tabular_pipeline.errors import PipelineError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def hung_server() -> Iterator[str]:
    """Accepts connections and never answers: the worst case, a timeout, not a refusal."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_refused_server_fails_at_once_naming_the_uri() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with pytest.raises(
        PipelineError, match=rf"MLflow tracking server {uri} is unreachable: .*refused"
    ):
        tracking.check_server(uri)
    assert time.perf_counter() - start < 2


def test_hung_server_fails_within_the_timeout(
    hung_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    start = time.perf_counter()
    with pytest.raises(PipelineError, match=r"unreachable: .*timed out \(timeout 2 s\)"):
        tracking.check_server(hung_server)
    assert 1.5 < time.perf_counter() - start < 4


def test_local_stores_are_not_probed() -> None:
    tracking.check_server("sqlite:///nowhere/mlflow.db")
    tracking.check_server("file:///nowhere")


def test_stage_against_a_hung_server_exits_within_10s_with_one_line(hung_server: str) -> None:
    """The whole stage process, as `dvc repro` runs it, with MLflow's env defaults."""
    code = (
        "from pathlib import Path\n"
        "from tabular_pipeline import stage, tracking\n"
        "stage.run(tracking.preflight)\n"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"MLFLOW_TRACKING_URI": hung_server, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 1
    assert elapsed < 10, f"took {elapsed:.1f} s"
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and hung_server in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_parallel_first_runs_on_a_brand_new_sqlite_store_do_not_corrupt_it(
    tmp_path: Path,
) -> None:
    """Queued experiments starting together: concurrent schema creation must be serialised."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import mlflow\n"
        "from tabular_pipeline import tracking\n"
        "root = Path(sys.argv[1])\n"
        "while time.time() < float(sys.argv[2]):\n"
        "    time.sleep(0.01)\n"
        "with tracking.store_lock(root, tracking.tracking_uri(root)):\n"
        "    exp = tracking.configure(root, 'race')\n"
        "    with mlflow.start_run(experiment_id=exp):\n"
        "        mlflow.log_metric('m', 1.0)\n"
    )
    start_at = time.time() + 8  # after every process has imported mlflow
    env = {"DVC_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), str(start_at)],
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    import sqlite3

    with sqlite3.connect(tmp_path / tracking.STORE_FILE) as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 3
        assert db.execute("select count(*) from alembic_version").fetchone()[0] == 1
