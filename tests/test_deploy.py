"""Kubernetes manifests (``make k8s``): valid against the API schemas, consistent with the Bento.

The schemas come from ``kubernetes-validate`` (shipped in the package, no
cluster or network). The slow test renders the manifests in the built sample
project and reads them beside that project's Bento: its port, probe paths,
open paths, environment and variable names must agree.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.serving import deploy
from tabular_pipeline.serving.runtime import CONTAINER_DATA, CONTAINER_FLAG, CWD_ENV
from tabular_pipeline.serving.settings import DeployConfig, ServeConfig
from tests.conftest import ROOT, composed_params, run, shipped

K8S_VERSION = "1.33"  # a supported minor at the time of writing; the schemas ship with the package
TAG = "adult-classifier:0123456789abcdef0123"
RESOURCES = ("deployment.yaml", "service.yaml", "hpa.yaml")


def _validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _container(objects: dict[str, Any]) -> dict[str, Any]:
    return objects["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    objects = deploy.manifests(TAG, shipped("serve", ServeConfig), shipped("deploy", DeployConfig))
    assert set(objects) == set(deploy.FILES)
    for name in RESOURCES:
        _validate(objects[name])
    # The validator is strict: a misspelt field fails (so the test can fail).
    broken = json.loads(json.dumps(objects["deployment.yaml"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken)


def test_manifests_follow_serve_and_deploy_params() -> None:
    serve, cfg = shipped("serve", ServeConfig), shipped("deploy", DeployConfig)
    cfg.registry = "registry.example/team/"
    serve.port = 8080
    objects = deploy.manifests(TAG, serve, cfg)
    container = _container(objects)
    assert container["image"] == "registry.example/team/" + TAG
    assert container["ports"][0]["containerPort"] == 8080
    assert objects["service.yaml"]["spec"]["ports"][0]["port"] == 8080
    env = {e["name"]: e for e in container["env"]}
    assert env["BENTOML_PORT"]["value"] == "8080"
    assert env[serve.api_key_env]["valueFrom"]["secretKeyRef"] == {
        "name": cfg.api_key_secret,
        "key": deploy.SECRET_KEY,
    }
    assert container["resources"]["limits"]["memory"] == f"{cfg.memory_limit_mib}Mi"
    assert objects["hpa.yaml"]["spec"]["maxReplicas"] == cfg.max_replicas
    # auth: none deploys no key at all.
    serve.auth = "none"
    names = {e["name"] for e in _container(deploy.manifests(TAG, serve, cfg))["env"]}
    assert serve.api_key_env not in names


def test_deploy_params_are_checked() -> None:
    from tabular_pipeline.config import parse_section

    section = composed_params()["deploy"]
    with pytest.raises(PipelineError, match="replicas: 9 must be"):
        parse_section({"deploy": section | {"replicas": 9}}, "deploy", DeployConfig)
    with pytest.raises(PipelineError, match="memory_request_mib"):
        parse_section({"deploy": section | {"memory_request_mib": 4096}}, "deploy", DeployConfig)


def test_scrape_job_is_monitorings() -> None:
    """The scrape job keeps monitoring/prometheus's name and path, so its alerts apply."""
    config = yaml.safe_load((ROOT / "monitoring/prometheus/prometheus.yml").read_text())
    ours = {j["job_name"]: j for j in config["scrape_configs"]}[deploy.SCRAPE_JOB]
    objects = deploy.manifests(TAG, shipped("serve", ServeConfig), shipped("deploy", DeployConfig))
    job = objects["prometheus-scrape.yml"]["scrape_configs"][0]
    assert job["job_name"] == deploy.SCRAPE_JOB
    assert job["metrics_path"] == ours["metrics_path"] == deploy.METRICS_PATH
    alerts = (ROOT / "monitoring/prometheus/alerts.yml").read_text()
    assert f'job="{deploy.SCRAPE_JOB}"' in alerts


@pytest.mark.slow
def test_manifests_agree_with_the_built_bento(built_project: Path, tmp_path: Path) -> None:
    """`make k8s`'s files beside the Bento they deploy: the same names everywhere."""
    out = tmp_path / "deploy"
    archive = built_project / "models/service.bento"
    run(
        [
            "python",
            "-m",
            "tabular_pipeline.serving.deploy",
            "--archive",
            str(archive),
            "--out",
            str(out),
        ],
        built_project,
    )
    files = {p.name: yaml.safe_load(p.read_text()) for p in out.iterdir()}
    assert set(files) == set(deploy.FILES)
    for name in RESOURCES:
        _validate(files[name])
    with tarfile.open(archive, "r:*") as tar:
        bento = yaml.safe_load(tar.extractfile("./bento.yaml").read())  # type: ignore[union-attr]
        serving = json.loads(tar.extractfile("./src/serving.json").read())  # type: ignore[union-attr]
        dockerfile = tar.extractfile("./env/docker/Dockerfile").read().decode()  # type: ignore[union-attr]
    serve = serving["serve"]
    container = files["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{bento['name']}:{bento['version']}"
    # Port: the Bento's serve.port, exposed, probed and scraped.
    assert container["ports"][0]["containerPort"] == serve["port"]
    assert files["service.yaml"]["spec"]["ports"][0]["port"] == serve["port"]
    pod = files["deployment.yaml"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(serve["port"])
    # Probe and metrics paths answer without the key (serve.open_paths).
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in serve["open_paths"]
    assert deploy.METRICS_PATH in serve["open_paths"]
    # Environment: the image runs with the container defaults (runtime.in_container),
    # the pod says so explicitly, the key variable is the one the service reads,
    # and the log folder is the mounted volume.
    assert f"ENV {CONTAINER_FLAG}=true" in dockerfile
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BENTOML_HOST"] == "0.0.0.0" and env["BENTOML_PORT"] == str(serve["port"])
    assert serve["api_key_env"] in env
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env[CWD_ENV] == CONTAINER_DATA and CONTAINER_DATA in mounts
