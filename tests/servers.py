"""Start the project's built Bento (as `make serve` does) for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import BIN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def bento_server(project: Path, tmp: Path, api_key: str, timeout: float = 180) -> Iterator[str]:
    """Serve ``project``'s ``models/service.bento`` on a free loopback port; yield its URL."""
    port = free_port()
    env = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "BENTOML_HOME": str(tmp / "bentoml"),
        "TABULAR_API_KEY": api_key,
    }
    log = tmp / "server.log"
    logfile = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tabular_pipeline.serving.cli", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            assert proc.poll() is None, log.read_text()[-4000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        logfile.close()


def logged_lines(path: Path, ids: set[str], offset: int = 0, timeout: float = 15) -> list[str]:
    """The prediction log's lines from byte ``offset`` once every id in ``ids`` is there.

    The service writes a request's records just after sending its response
    (``after_response`` in tabular_pipeline/serving/service.py), so a client
    that reads the log right away waits for them, as this does.
    """
    deadline = time.time() + timeout
    while True:
        lines: list[str] = []
        if path.exists():
            with path.open("rb") as fh:
                fh.seek(offset)
                lines = fh.read().decode().splitlines()
        found = {json.loads(line)["prediction_id"] for line in lines if line.startswith("{")}
        if ids <= found or time.time() > deadline:
            assert ids <= found, f"{len(ids - found)} prediction ids never logged in {path}"
            return lines
        time.sleep(0.05)
