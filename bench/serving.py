"""Serving speed: the Bento service vs the naive FastAPI baseline, same model, same workers.

Run from the project root after `make repro` (needs models/service.bento):

    .venv/bin/python bench/serving.py [--requests 2000] [--batch-repeats 40]

Both servers run on 127.0.0.1 with one worker and one OpenMP thread each
(OMP_NUM_THREADS=1: otherwise HistGradientBoosting's per-tree thread fan-out
dominates either server on 2 shared cores). An aiohttp asyncio client sends a
fixed number of single-row requests at 1, 8 and 32 concurrent clients (rows
drawn from the test split), then times 1000-row batch requests (body encoded
once, back to back) alternating with the model's own predict on the same rows
(in-process, one thread: the floor of a batch request), so that both medians
see the same load. Prints a table; record it in bench/README.md with the
machine noted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=os.environ | env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def rss_mb(proc: subprocess.Popen[bytes]) -> float:
    """Resident memory of the server and all its children (BentoML forks workers)."""
    parent = psutil.Process(proc.pid)
    procs = [parent, *parent.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


async def wait_ready(url: str, path: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + 240
    async with aiohttp.ClientSession() as session:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
            try:
                async with session.get(url + path) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit(f"server not ready:\n{log.read_text()[-3000:]}")


async def load(
    url: str, rows: list[dict[str, Any]], clients: int, total: int, path: str = "/predict"
) -> tuple[float, list[float]]:
    """``total`` single-row requests from ``clients`` concurrent loops: (req/s, latencies)."""
    latencies: list[float] = []
    counter = iter(range(total))
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            for i in counter:
                body = rows[i % len(rows)]
                start = time.perf_counter()
                async with session.post(f"{url}{path}", json=body) as r:
                    await r.read()
                    if r.status != 200:
                        raise SystemExit(f"{url}: HTTP {r.status}: {await r.text()}")
                latencies.append(time.perf_counter() - start)

        for _ in range(50):  # warm-up
            async with session.post(f"{url}{path}", json=rows[0]) as r:
                await r.read()
        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - began
    return total / wall, latencies


async def batch_time(
    url: str,
    rows: list[dict[str, Any]],
    repeats: int,
    model: Any,
    path: str = "/predict_batch",
    block: int = 10,
    pause: float = 0.0,
) -> tuple[float, float]:
    """Median seconds of a ``len(rows)``-row batch request, and of ``model()`` (the model's
    own predict on the same rows), timed in alternating blocks of ``block`` calls (the
    first of each block a warm-up): both medians come from the same minutes of the
    machine, so a busy moment moves both. ``pause`` seconds between requests (untimed)
    let the server finish what it does after answering (the prediction log's write)."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    # Encoded once, outside the timing: the client's own json.dumps of 1,000 rows
    # (~4 ms) is not the server's time.
    body = json.dumps(rows).encode()
    times: list[float] = []
    own: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        while len(times) < repeats:
            for i in range(block + 1):
                start = time.perf_counter()
                model()
                if i:
                    own.append(time.perf_counter() - start)
            for i in range(block + 1):
                start = time.perf_counter()
                async with session.post(f"{url}{path}", data=body) as r:
                    await r.read()
                    if r.status != 200:
                        raise SystemExit(f"{url}: batch HTTP {r.status}: {(await r.text())[:500]}")
                if i:
                    times.append(time.perf_counter() - start)
                if pause:
                    await asyncio.sleep(pause)
    return statistics.median(times), statistics.median(own)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def request_rows(limit: int = 2000) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """params.yaml, the built Bento's serving.json, and the first ``limit`` test rows
    typed as a JSON request carries them (the schema the Bento itself ships)."""
    sys.path.insert(0, str(ROOT))
    from tabular_pipeline.serving.schema import FieldSpec, frame_to_rows

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    with tarfile.open(ROOT / params["package"]["out"]) as tar:
        member = tar.extractfile("./src/serving.json")
        assert member is not None
        serving = json.loads(member.read())
    specs = [FieldSpec.from_json(f) for f in serving["fields"]]
    test = pd.read_parquet(ROOT / params["split"]["out_dir"] / "test.parquet")
    return params, serving, frame_to_rows(test.head(limit), specs)


def own_predict(params: dict[str, Any], n: int) -> Any:
    """The model's own ``predict_proba`` (``predict``) on the first ``n`` test rows,
    in-process, one thread: the pipeline as trained (featurizer + estimator) on a typed
    frame, nothing else. The floor of a batch request."""
    import joblib
    from threadpoolctl import threadpool_limits

    pipeline = joblib.load(ROOT / params["train"]["model_out"])
    frame = pd.read_parquet(ROOT / params["split"]["out_dir"] / "test.parquet").head(n)
    method = getattr(pipeline, "predict_proba", None) or pipeline.predict

    # Once for this (client) process: the context manager scans the loaded libraries
    # on every entry, which would add milliseconds to the model's time.
    threadpool_limits(1)

    def predict() -> None:
        method(frame)

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--single-client-requests", type=int, default=500)
    parser.add_argument("--batch-repeats", type=int, default=40)
    args = parser.parse_args()

    params, serving, rows = request_rows()
    workers = int(params["serve"]["workers"])

    model = own_predict(params, 1000)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    common = {"OMP_NUM_THREADS": "1", "BENTOML_DO_NOT_TRACK": "true"}
    port_a, port_b = free_port(), free_port()
    servers = {
        "bento": (
            start(
                [sys.executable, "-m", "tabular_pipeline.serving.cli", "--port", str(port_a)],
                common | {"BENTOML_HOME": str(tmp / "bentoml"), "TABULAR_API_KEY": KEY},
                tmp / "bento.log",
            ),
            f"http://127.0.0.1:{port_a}",
            "/readyz",
        ),
        "naive": (
            start(
                [
                    str(Path(sys.executable).with_name("uvicorn")),
                    "bench.naive_app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port_b),
                    "--workers",
                    str(workers),
                    "--log-level",
                    "warning",
                ],
                common
                | {
                    "NAIVE_MODEL": str(ROOT / params["train"]["model_out"]),
                    "NAIVE_FIELDS": json.dumps(serving["fields"]),
                },
                tmp / "naive.log",
            ),
            f"http://127.0.0.1:{port_b}",
            "/docs",
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, (proc, url, ready) in servers.items():
            asyncio.run(wait_ready(url, ready, proc, tmp / f"{name}.log"))
        for name, (proc, url, _) in servers.items():
            res: dict[str, Any] = {}
            for clients in (1, 8, 32):
                total = args.single_client_requests if clients == 1 else args.requests
                rps, lat = asyncio.run(load(url, rows, clients, total))
                res[clients] = (rps, pct(lat, 0.5), pct(lat, 0.99))
            for mode, pause in (("back to back", 0.0), ("one at a time", 0.02)):
                batch, own = asyncio.run(
                    batch_time(url, rows[:1000], args.batch_repeats, model, pause=pause)
                )
                res[mode] = (batch * 1000, own * 1000)
            res["rss"] = rss_mb(proc)
            results[name] = res
    finally:
        for proc, _, _ in servers.values():
            stop(proc)

    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"model {params['model']['_target_'].rsplit('.', 1)[-1]}, {workers} worker(s) each, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| server | clients | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for name, res in results.items():
        for clients in (1, 8, 32):
            rps, p50, p99 = res[clients]
            print(f"| {name} | {clients} | {rps:.0f} | {p50:.2f} | {p99:.2f} |")
    print()
    print(
        "| server | 1000-row batches | batch ms (median) | model's own ms, alternating "
        "(median) | x model's own | RSS MiB |"
    )
    print("|---|---|---|---|---|---|")
    for name, res in results.items():
        for mode in ("one at a time", "back to back"):
            batch, own = res[mode]
            print(
                f"| {name} | {mode} | {batch:.1f} | {own:.1f} | {batch / own:.2f} "
                f"| {res['rss']:.0f} |"
            )
    a, b = results["bento"], results["naive"]
    one, streamed = a["one at a time"], a["back to back"]
    print()
    print(
        f"targets: (a)/(b) req/s at 32 clients = {a[32][0] / b[32][0]:.2f}x (>= 2); "
        f"(a) p50 at 1 client = {a[1][1]:.2f} ms (<= 3); "
        f"(a) 1000-row batch = {one[0]:.1f} ms = {one[0] / one[1]:.2f}x the model's own "
        f"{one[1]:.1f} ms (<= 1.25x); back to back {streamed[0] / streamed[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
