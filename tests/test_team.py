"""Team scale: a real S3 API (moto) as DVC remote, a real MLflow server, and fault drills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, git, ran_stages, run
from tests.test_tracking_server import free_port

pytestmark = pytest.mark.slow

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3() -> Iterator[str]:
    """moto's S3 API on 127.0.0.1, on a free port, with an empty bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, **_boto_creds()).create_bucket(Bucket="team")
    yield endpoint
    server.stop()


def _boto_creds() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def cached_outs(project: Path) -> dict[str, str]:
    """Outputs DVC caches (and pushes), with their md5 from dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    out = {}
    for spec in lock["stages"].values():
        for item in spec.get("outs", []):
            out[item["path"]] = item["md5"]
    return out


def tree_bytes(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_s3_remote_round_trip_restores_every_stage_without_running_any(
    project: Path, s3: str, tmp_path: Path
) -> None:
    env = CREDENTIALS | {"DVC_REMOTE_URL": "s3://team/cache", "DVC_REMOTE_ENDPOINT": s3}
    run(["make", "remote"], project, env=env)
    assert "endpointurl" in (project / ".dvc/config.local").read_text()
    assert s3 not in (project / ".dvc/config").read_text()  # nothing about it in git
    run(["dvc", "push", "--run-cache"], project, env=CREDENTIALS)

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    assert not (clone / "models/model.joblib").exists()
    run(["make", "remote"], clone, env=env)
    run(["dvc", "pull"], clone, env=CREDENTIALS)
    out = run(["dvc", "repro"], clone, env=CREDENTIALS)
    assert ran_stages(out.stdout) == [], out.stdout
    assert "Data and pipelines are up to date." in out.stdout
    for path in cached_outs(project):
        assert tree_bytes(clone / path) == tree_bytes(project / path), path
    assert git(clone, "status", "--porcelain") == ""


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """`make mlflow-server` as a team runs it, on a free port."""
    port = free_port()
    home = tmp_path / "mlflow-home"
    proc = subprocess.Popen(
        [
            "make",
            "-s",
            "mlflow-server",
            f"MLFLOW_PORT={port}",
            f"MLFLOW_HOME={home}",
            f"BIN={BIN}",
            "STAMP=",
        ],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("mlflow server did not start within 120 s")
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_train_and_evaluate_log_to_a_real_tracking_server(
    project: Path, mlflow_server: str
) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    run(["dvc", "repro", "-f", "-s", "train", "evaluate"], project, env=env)
    assert not (project / "mlflow.db").exists()  # nothing went to the local store
    req = urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=adult"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        experiment = json.load(resp)["experiment"]
    search = urllib.request.Request(
        f"{mlflow_server}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(search, timeout=10) as resp:
        runs = json.load(resp)["runs"]
    assert len(runs) == 1
    metrics = {m["key"] for m in runs[0]["data"]["metrics"]}
    assert {"valid.accuracy", "test.accuracy", "test.roc_auc"} <= metrics


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).resolve()
    except OSError:
        return None


def test_sigkill_of_train_then_repro_recovers_identical_outputs(project: Path) -> None:
    expected = cached_outs(project)
    # A long fit, so the kill lands mid-stage; params.yaml is restored afterwards.
    params = project / "params.yaml"
    original = params.read_text()
    slow = yaml.safe_load(original)
    slow["model"].update(max_iter=5000, early_stopping=False, learning_rate=0.01)
    params.write_text(yaml.safe_dump(slow, sort_keys=False))
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        ["dvc", "repro", "-s", "train"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    victim = None
    deadline = time.time() + 120
    while time.time() < deadline and victim is None and proc.poll() is None:
        # the python process itself (not the shell DVC starts it from), and only
        # this project's: other pipelines may be training on the same machine
        ps = subprocess.run(
            ["pgrep", "-f", "^python -m tabular_pipeline.warm stages.train"],
            capture_output=True,
            text=True,
        )
        mine = [int(p) for p in ps.stdout.split() if _cwd(int(p)) == project.resolve()]
        victim = mine[0] if mine else None
        time.sleep(0.1)
    assert victim, "train stage never started"
    time.sleep(2.0)
    assert proc.poll() is None, "train finished before the kill: make it slower"
    os.kill(victim, signal.SIGKILL)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, output
    params.write_text(original)
    out = run(["dvc", "repro"], project)
    assert "Traceback" not in out.stderr
    assert cached_outs(project) == expected
    assert "up to date" in run(["dvc", "status"], project).stdout
    # no half-written file left behind, in git's view or DVC's
    assert git(project, "status", "--porcelain") == ""
    assert not list((project / "models").glob(".*.tmp"))


def test_corrupted_cached_model_is_detected_and_restored(project: Path) -> None:
    model = project / "models/model.joblib"
    good = model.read_bytes()
    model.unlink()  # a cache link: replace the file, never write through it
    model.write_bytes(good[: len(good) // 3])  # truncated
    status = run(["dvc", "status"], project).stdout
    assert "modified" in status and "models/model.joblib" in status
    run(["dvc", "repro"], project)  # restored from the cache (or rebuilt)
    assert model.read_bytes() == good
    assert "up to date" in run(["dvc", "status"], project).stdout


def test_corrupted_model_read_by_a_stage_fails_with_a_clear_message(project: Path) -> None:
    model = project / "models/model.joblib"
    good = model.read_bytes()
    model.unlink()
    model.write_bytes(good[: len(good) // 3])
    proc = run([sys.executable, "-m", "stages.evaluate"], project, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "models/model.joblib: cannot load" in proc.stderr and "dvc checkout" in proc.stderr


def test_stale_dvc_lock_is_reported_and_removable(project: Path) -> None:
    """A `dvc` killed mid-run leaves .dvc/tmp/rwlock; docs/team.md says what to do."""
    rwlock = project / ".dvc/tmp/rwlock"
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    held = {str(project / "models/model.joblib"): {"pid": 999999, "cmd": "dvc repro"}}
    rwlock.write_text(json.dumps({"write": held, "read": {}}))
    busy = run(["dvc", "repro"], project, check=False)
    if busy.returncode == 0:
        # DVC notices the dead pid and carries on: nothing to do for the user.
        assert "up to date" in busy.stdout
    else:
        assert "busy" in (busy.stderr + busy.stdout).lower()
        rwlock.unlink()
        assert run(["dvc", "repro"], project).returncode == 0


def test_disk_full_fails_the_stage_clearly_and_keeps_dvc_lock(project: Path) -> None:
    """The stage (only it) gets a small RLIMIT_FSIZE: writes fail like a full disk, even as root."""
    lock_before = (project / "dvc.lock").read_bytes()
    model = project / "models/model.joblib"
    assert model.stat().st_size > 100_000
    pipeline = project / "dvc.yaml"
    pipeline.write_text(
        pipeline.read_text().replace(
            "cmd: python -m tabular_pipeline.warm stages.train",
            "cmd: prlimit --fsize=100000 python -m tabular_pipeline.warm stages.train",
        )
    )
    out = run(["dvc", "repro", "-s", "train"], project, check=False)
    assert out.returncode != 0
    log = out.stdout + out.stderr
    assert "cannot write models/model.joblib: File too large; dvc.lock is unchanged" in log, log
    assert "Traceback" not in log
    assert (project / "dvc.lock").read_bytes() == lock_before
    # What docs/team.md says after a failed stage: git-tracked outputs from git,
    # cached ones from the DVC cache.
    git(project, "checkout", "HEAD", "--", ".")
    run(["dvc", "checkout", "--force"], project)
    assert "up to date" in run(["dvc", "status"], project).stdout
    assert not list((project / "models").glob(".*.tmp"))
