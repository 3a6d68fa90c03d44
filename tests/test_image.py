"""The default Bento's container image: built here, started as its entrypoint starts it, answered.

Exhaustive tier (`make test-exhaustive`, run by `.ci/run`). No Docker daemon
or registry is needed:

- base image: a local stand-in for ``python:3.11-slim`` (Debian 12's
  Python 3.11 from ``debootstrap``, see ``serving.image``), imported under that
  name, so the Bento's own Dockerfile builds unchanged (BentoML's
  ``base_image`` option would change the Dockerfile under test);
- ``buildah bud --isolation chroot`` in a storage of its own under the cache
  folder (``~/.cache/tabular-pipeline/containers``: the debootstrap root
  file system and the imported stand-in persist, so a second run skips them;
  the build itself runs every time, since vfs layer caching costs tens of GB);
- the container runs the image's ENTRYPOINT with the image's environment, as
  user ``bentoml``, in a network namespace made for the test; a veth pair on
  a /30 of a documentation subnet (RFC 5737, routed nowhere) that this machine
  does not use connects it to this one, and every request comes from outside.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest

from tabular_pipeline.serving import image
from tabular_pipeline.serving.runtime import CONTAINER_DATA
from tabular_pipeline.serving.schema import FieldSpec, frame_to_rows
from tabular_pipeline.serving.settings import DeployConfig
from tests.conftest import run, shipped
from tests.servers import logged_lines

# One worker builds and runs the image for both tests (module fixture `running`).
pytestmark = [pytest.mark.slow, pytest.mark.exhaustive, pytest.mark.xdist_group("image")]

KEY = "image-test-key"
# RFC 5737 documentation subnets, routed nowhere: the veth pair takes one that
# this machine does not use itself (some sandboxes put their own eth0 on one).
TEST_NETS = ("198.51.100", "203.0.113", "192.0.2")
READY_TIMEOUT = 300


def _free_test_net() -> str:
    used = _sh(["ip", "-4", "route", "show", "table", "all"]) + _sh(["ip", "-4", "addr"])
    for prefix in TEST_NETS:
        if f"{prefix}." not in used:
            return prefix
    pytest.skip(f"every documentation subnet ({', '.join(TEST_NETS)}) is in use here")


def _need_tools() -> None:
    for tool, package in (
        ("buildah", "buildah"),
        ("debootstrap", "debootstrap"),
        ("ip", "iproute2"),
    ):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (Debian: apt-get install {package}; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("building and running the image needs root (buildah chroot, network namespace)")


def _storage_env() -> dict[str, str]:
    """buildah with a storage of the test's own, in the cache folder (never the user's)."""
    root = image.cache_dir() / "containers"
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "storage.conf"
    conf.write_text(
        "[storage]\n"
        'driver = "vfs"\n'
        f'graphroot = "{root / "storage"}"\n'
        f'runroot = "{root / "run"}"\n',
        encoding="utf-8",
    )
    return image.buildah_env(dict(os.environ) | {"CONTAINERS_STORAGE_CONF": str(conf)})


def _sh(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if check and done.returncode:
        raise AssertionError(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return done.stdout.strip()


@dataclass
class Running:
    url: str
    tag: str
    config: dict[str, Any]
    netns: str
    mount: Path
    proc: subprocess.Popen[bytes]
    log: Path
    timings: dict[str, float]


def _netns_pids(netns: str) -> list[int]:
    out = _sh(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.split()]


@pytest.fixture(scope="module")
def project(request: pytest.FixtureRequest) -> Path:
    """The sampled built project, or $TABULAR_IMAGE_PROJECT: a project on which
    `make repro` ran (e.g. this checkout), to test the image of its own Bento."""
    given = os.environ.get("TABULAR_IMAGE_PROJECT")
    return Path(given).resolve() if given else request.getfixturevalue("built_project")


@pytest.fixture(scope="module")
def running(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    built_project = project
    _need_tools()
    env = _storage_env()
    env["BENTOML_HOME"] = str(tmp_path_factory.mktemp("bentoml"))
    env["BENTOML_DO_NOT_TRACK"] = "true"
    timings: dict[str, float] = {}
    began = time.perf_counter()
    # As `make image STANDIN_BASE=1 ENGINE=buildah` runs it: the tag is its last line.
    built = run(
        [
            "python",
            "-m",
            "tabular_pipeline.serving.image",
            "--engine",
            "buildah",
            "--standin-base",
            "--archive",
            str(built_project / "models/service.bento"),
        ],
        built_project,
        timeout=3600,
        env={
            k: env[k] for k in ("CONTAINERS_STORAGE_CONF", "BENTOML_HOME", "BENTOML_DO_NOT_TRACK")
        },
    )
    tag = built.stdout.split()[-1]
    timings["build"] = time.perf_counter() - began
    started = time.perf_counter()
    config = json.loads(_sh(["buildah", "inspect", "--type", "image", tag], env))["OCIv1"]["config"]

    net = _free_test_net()
    host_addr, container_addr = f"{net}.1", f"{net}.2"  # a /30: just the two ends
    netns = f"tabimg{os.getpid()}"
    host_if, ns_if = f"th{os.getpid() % 100000}", f"tc{os.getpid() % 100000}"
    ctr = _sh(["buildah", "from", "--quiet", tag], env)
    log = tmp_path_factory.mktemp("image") / "service.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        _sh(["ip", "netns", "add", netns])
        _sh(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if])
        _sh(["ip", "link", "set", ns_if, "netns", netns])
        _sh(["ip", "addr", "add", f"{host_addr}/30", "dev", host_if])
        _sh(["ip", "link", "set", host_if, "up"])
        for cmd in (
            ["ip", "addr", "add", f"{container_addr}/30", "dev", ns_if],
            ["ip", "link", "set", ns_if, "up"],
            ["ip", "link", "set", "lo", "up"],
        ):
            _sh(["ip", "netns", "exec", netns, *cmd])
        # The image's ENTRYPOINT and CMD, its environment and user, as an engine runs them;
        # only the key is added, as `docker run -e` would.
        argv = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
        in_netns = ["ip", "netns", "exec", netns, "buildah", "run", "--network", "host"]
        proc = subprocess.Popen(
            [*in_netns, "--env", f"TABULAR_API_KEY={KEY}", ctr, "--", *argv],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://{container_addr}:3000"
        deadline = time.time() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the container exited {proc.returncode}:\n{log.read_text()[-4000:]}"
                )
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"not ready in {READY_TIMEOUT}s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        timings["ready"] = time.perf_counter() - started
        mount = Path(_sh(["buildah", "mount", ctr], env))
        yield Running(url, tag, config, netns, mount, proc, log, timings)
    finally:
        for pid in _netns_pids(netns):  # only what this test started in its namespace
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=60)
        _sh(["buildah", "umount", ctr], env, check=False)
        _sh(["buildah", "rm", ctr], env, check=False)
        _sh(["ip", "link", "del", host_if], check=False)
        _sh(["ip", "netns", "del", netns], check=False)
        # The stand-in stays (the next run's base); the built image goes.
        _sh(["buildah", "rmi", tag], env, check=False)
        print(f"image timings (s): {json.dumps({k: round(v, 1) for k, v in timings.items()})}")


def _serving_json(running: Running) -> dict[str, Any]:
    bento = running.config["Env"]
    path = dict(e.split("=", 1) for e in bento)["BENTO_PATH"].lstrip("/")
    return json.loads((running.mount / path / "src" / "serving.json").read_text())


def test_image_serves_outside_its_network_namespace(running: Running, project: Path) -> None:
    built_project = project
    """/readyz, an authorised /predict equal to the pipeline's, 401 without the key."""
    config = running.config
    assert config.get("User") == "bentoml"
    env = dict(e.split("=", 1) for e in config["Env"])
    # No host is set anywhere: the container default (runtime.bind_host) serves
    # on every interface, while the Bento's serve.host stays 127.0.0.1.
    assert "BENTOML_HOST" not in env and env["BENTOML_CONTAINERIZED"] == "true"
    assert httpx.get(f"{running.url}/readyz", timeout=10).status_code == 200

    frame = pd.read_parquet(built_project / "data/split/test.parquet").head(1)
    specs = [FieldSpec.from_json(f) for f in _serving_json(running)["fields"]]
    row = frame_to_rows(frame, specs)[0]
    denied = httpx.post(f"{running.url}/predict", json=row, timeout=30)
    assert denied.status_code == 401, denied.text
    answer = httpx.post(
        f"{running.url}/predict", json=row, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    got = answer.json()
    pipeline = joblib.load(built_project / "models/model.joblib")
    expected = pipeline.predict_proba(frame)[0]
    assert np.allclose(list(got["probabilities"].values()), expected, rtol=0, atol=1e-12)
    assert got["model_version"].startswith("adult-classifier")
    metrics = httpx.get(f"{running.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "tabular_predictions_total" in metrics.text

    # The prediction log: written by the unprivileged user under its data folder.
    logged = running.mount / CONTAINER_DATA.lstrip("/") / "logs" / "predictions.jsonl"
    (line,) = logged_lines(logged, {got["prediction_id"]}, timeout=30)[-1:]
    record = json.loads(line)
    assert record["prediction_id"] == got["prediction_id"]
    assert logged.stat().st_uid != 0

    # Memory: what deploy.memory_request_mib claims for one replica.
    rss = sum(_rss_kib(pid) for pid in _service_pids(running.netns)) / 1024
    running.timings["rss_mib"] = rss
    assert rss < shipped("deploy", DeployConfig).memory_request_mib, rss


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _service_pids(netns: str) -> list[int]:
    """The image's Python processes (server and workers), not buildah's own."""
    return [p for p in _netns_pids(netns) if _argv(p)[:1] and "/app/.venv/" in _argv(p)[0]]


def _rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_image_stops_on_sigterm_within_the_grace_period(running: Running) -> None:
    """Kubernetes sends SIGTERM, then SIGKILL after terminationGracePeriodSeconds."""
    # `bentoml serve $BENTO_PATH`, exec'd by the entrypoint: the process a
    # container engine signals (its workers are its children).
    top = [
        p
        for p in _service_pids(running.netns)
        if _argv(p)[1:2] and _argv(p)[1].endswith("/bentoml") and "serve" in _argv(p)
    ]
    assert len(top) == 1, [_argv(p) for p in _netns_pids(running.netns)]
    grace = shipped("deploy", DeployConfig).grace_seconds
    began = time.perf_counter()
    os.kill(top[0], signal.SIGTERM)
    while _netns_pids(running.netns) and time.perf_counter() - began < grace:
        time.sleep(0.2)
    took = time.perf_counter() - began
    running.timings["sigterm"] = took
    assert not _netns_pids(running.netns), f"still running {grace}s after SIGTERM"
    assert took < grace
