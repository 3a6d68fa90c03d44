"""``make k8s``: Kubernetes manifests for the Bento's image, from params.

    python -m tabular_pipeline.serving.deploy [--archive PATH]

Writes ``deploy.out_dir``: ``deployment.yaml`` (the image tagged with the
Bento's version, probes on BentoML's ``/readyz`` and ``/livez``, resources,
the API key from a Secret, the prediction log on a volume), ``service.yaml``,
``hpa.yaml`` and ``prometheus-scrape.yml`` (the ``tabular-service`` job of
``monitoring/prometheus`` through Kubernetes service discovery, so its
alerts apply unchanged). Every port, path and variable name is taken from the
same params and constants the Bento is built from, and
``tests/test_deploy.py`` checks them against a built Bento.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.serving.runtime import CONTAINER_DATA, CWD_ENV
from tabular_pipeline.serving.settings import DeployConfig, ServeConfig

log = logging.getLogger("deploy")

READY_PATH = "/readyz"  # BentoML: 200 once every worker loaded its models
LIVE_PATH = "/livez"  # BentoML: 200 while the server process answers
METRICS_PATH = "/metrics"
SCRAPE_JOB = "tabular-service"  # monitoring/prometheus's job (its alerts select it)
SECRET_KEY = "api-key"  # the key inside deploy.api_key_secret
CONTAINER_UID = 1034  # BentoML's Dockerfile: user `bentoml` (uid = gid = 1034)
FILES = ("deployment.yaml", "service.yaml", "hpa.yaml", "prometheus-scrape.yml")


def image_ref(registry: str, tag: str) -> str:
    """``<registry>/<name>:<version>``, or the local ``name:version``."""
    return f"{registry.rstrip('/')}/{tag}" if registry else tag


def manifests(tag: str, serve: ServeConfig, deploy: DeployConfig) -> dict[str, Any]:
    """File name -> the object written there (Kubernetes resources, a scrape config)."""
    name, version = tag.split(":")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "model-server"}
    port_name = "http"
    # The image's own defaults (runtime.bind_host, runtime.log_base), spelt out
    # so that the pod spec shows where the service listens and writes.
    env: list[dict[str, Any]] = [
        {"name": "BENTOML_HOST", "value": "0.0.0.0"},
        {"name": "BENTOML_PORT", "value": str(serve.port)},
        {"name": CWD_ENV, "value": CONTAINER_DATA},
    ]
    if serve.auth == "api_key":
        env.append(
            {
                "name": serve.api_key_env,
                "valueFrom": {"secretKeyRef": {"name": deploy.api_key_secret, "key": SECRET_KEY}},
            }
        )

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": port_name},
            "periodSeconds": period,
            "timeoutSeconds": 2,
            "failureThreshold": failures,
        }

    container = {
        "name": "service",
        "image": image_ref(deploy.registry, tag),
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": port_name, "containerPort": serve.port, "protocol": "TCP"}],
        "env": env,
        # Loading the models (and shap for /explain) takes seconds: the startup
        # probe holds liveness off until /readyz first answers.
        "startupProbe": probe(READY_PATH, 2, 60),
        "readinessProbe": probe(READY_PATH, 5, 3),
        "livenessProbe": probe(LIVE_PATH, 10, 3),
        "resources": {
            "requests": {"cpu": deploy.cpu_request, "memory": f"{deploy.memory_request_mib}Mi"},
            "limits": {"cpu": deploy.cpu_limit, "memory": f"{deploy.memory_limit_mib}Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": CONTAINER_DATA}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels | {"app.kubernetes.io/version": version}},
        "spec": {
            "replicas": deploy.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels | {"app.kubernetes.io/version": version},
                    # For Prometheus setups that scrape annotated pods.
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/path": METRICS_PATH,
                        "prometheus.io/port": str(serve.port),
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": deploy.grace_seconds,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": CONTAINER_UID,
                        "runAsGroup": CONTAINER_UID,
                        "fsGroup": CONTAINER_UID,  # the log volume is writable by `bentoml`
                    },
                    "containers": [container],
                    # The prediction log (serve.prediction_log.path, relative to
                    # $TABULAR_SERVE_CWD). Replace with a PersistentVolumeClaim or
                    # ship the files (docs/monitoring.md) to keep them past the pod.
                    "volumes": [
                        {"name": "data", "emptyDir": {"sizeLimit": f"{deploy.log_volume_mib}Mi"}}
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [
                {"name": port_name, "port": serve.port, "targetPort": port_name, "protocol": "TCP"}
            ],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": deploy.replicas,
            "maxReplicas": deploy.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": deploy.target_cpu_percent,
                        },
                    },
                }
            ],
        },
    }
    keep = "|".join(["true", *[v for k, v in labels.items() if k.endswith("/name")]])
    scrape = {
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "metrics_path": METRICS_PATH,
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": [
                    {
                        "source_labels": [
                            "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
                            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
                        ],
                        "separator": "|",
                        "regex": keep,
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_number"],
                        "regex": str(serve.port),
                        "action": "keep",
                    },
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ]
    }
    return {
        "deployment.yaml": deployment,
        "service.yaml": service,
        "hpa.yaml": hpa,
        "prometheus-scrape.yml": scrape,
    }


def write(objects: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, obj in objects.items():
        path = out_dir / file_name
        header = (
            "# Generated by `make k8s` from params.yaml (deploy, serve, package) and the\n"
            "# Bento's version; edit conf/config.yaml, not this file.\n"
        )
        path.write_text(header + yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, help="default: package.out")
    parser.add_argument("--out", type=Path, help="default: deploy.out_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tabular_pipeline.config import load_params, parse_section
    from tabular_pipeline.serving.cli import archive_tag
    from tabular_pipeline.serving.settings import PackageConfig

    try:
        params = load_params()
        package_cfg = parse_section(params, "package", PackageConfig)
        serve = parse_section(params, "serve", ServeConfig)
        deploy = parse_section(params, "deploy", DeployConfig)
        tag = archive_tag(args.archive or Path(package_cfg.out))
    except PipelineError as exc:
        log.error("%s", exc)
        sys.exit(1)
    for path in write(manifests(tag, serve, deploy), args.out or Path(deploy.out_dir)):
        log.info("wrote %s", path)
    log.info(
        "image %s; the key: kubectl create secret generic %s --from-literal=%s=...",
        image_ref(deploy.registry, tag),
        deploy.api_key_secret,
        SECRET_KEY,
    )


if __name__ == "__main__":
    main()
