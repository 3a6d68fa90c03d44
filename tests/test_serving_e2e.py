"""End to end: the package stage's archive, served for real on a free port.

One service start per session (fixture ``served``): a copy of the built
sample project with a challenger variant (the same model from git HEAD) and
the prediction log (on by default), so every endpoint, auth, 4xx case, A/B and the log
are checked against one running server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from tabular_pipeline.serving import package
from tests import tools
from tests.browser import dump_dom, needs_chromium, screenshot
from tests.conftest import BIN, git, ran_stages, run
from tests.servers import bento_server, free_port, logged_lines

# One worker runs them all: the session's one served Bento (fixture ``served``).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("served")]

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@dataclass
class Served:
    url: str
    project: Path
    rows: list[dict[str, Any]]
    log: Path


def test_archive_is_built_self_contained_and_pinned(built_project: Path) -> None:
    lock = yaml.safe_load((built_project / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for o in lock["stages"]["package"]["outs"]}
    archive = built_project / "models/service.bento"
    assert set(outs) == {"models/service.bento"} and archive.exists()
    names = package.archive_listing(archive)
    assert "src/serving.json" in names and "src/tabular_pipeline/serving/service.py" in names
    assert "env/docker/Dockerfile" in names
    assert not [n for n in names if n.startswith("src/data/") or "/.dvc/" in n or "mlflow" in n]
    extra = [n for n in names if n.startswith("src/") and not n.endswith((".py", ".json"))]
    assert extra == ["src/bentofile.yaml"]
    import tarfile

    with tarfile.open(archive) as tar:
        reqs = tar.extractfile("./env/python/requirements.txt").read().decode()  # type: ignore[union-attr]
        bento = yaml.safe_load(tar.extractfile("./bento.yaml").read())  # type: ignore[union-attr]
    pins = [line for line in reqs.splitlines() if line and not line.startswith("#")]
    assert any(p.startswith("scikit-learn==") for p in pins), reqs
    assert all("==" in p for p in pins if not p.startswith("-")), reqs
    assert bento["creation_time"] == package.FIXED_TIME
    sha = package.sha256_file(built_project / "models/model.joblib")
    assert bento["labels"]["model-champion"] == sha[:40]
    assert [m["tag"] for m in bento["models"]] == [f"adult-classifier-champion:{sha[:20]}"]


@pytest.fixture(scope="session")
def served(built_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("served")
    project = tmp / "project"
    shutil.copytree(built_project, project, symlinks=True)
    cfg = project / "conf/config.yaml"
    text = cfg.read_text()
    text = text.replace("rev: null ", "rev: HEAD ").replace("share: 0.1 ", "share: 0.3 ")
    text = text.replace("max_batch_rows: 1000", "max_batch_rows: 900")
    cfg.write_text(text)
    out = run(["dvc", "repro"], project)
    assert ran_stages(out.stdout) == ["compose", "package"]
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "challenger")
    with bento_server(project, tmp, KEY) as url:
        test = pd.read_parquet(project / "data/split/test.parquet")
        spec = json.loads((project / "reports/featurize/features.json").read_text())
        columns = spec["numeric"] + spec["categorical"]
        rows = [
            {k: (None if pd.isna(v) else v) for k, v in r.items()}
            for r in test[columns].astype(object).to_dict(orient="records")
        ]
        yield Served(url, project, rows, project / "logs/predictions.jsonl")


def post(served: Served, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return httpx.post(
        f"{served.url}{path}",
        content=body if isinstance(body, bytes) else json.dumps(body),
        headers={"Content-Type": "application/json", **AUTH, **(headers or {})},
        timeout=30,
    )


def test_probes_are_open_and_predict_needs_the_key(served: Served) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/docs.json"):
        assert httpx.get(f"{served.url}{path}").status_code == 200, path
    row = served.rows[0]
    response = httpx.post(f"{served.url}/predict", json=row)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    wrong = httpx.post(f"{served.url}/predict", json=row, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    ok = httpx.post(f"{served.url}/predict", json=row, headers={"X-API-Key": KEY})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["label"] in body["probabilities"] and set(body["probabilities"]) == {
        "<=50K",
        ">50K",
    }
    assert body["variant"] == "champion"  # no A/B key: the champion answers
    assert body["model_version"].startswith("adult-classifier-champion:")
    assert ok.headers["x-model-variant"] == "champion"


def test_served_predictions_equal_evaluate_on_the_full_test_split(served: Served) -> None:
    predictions = pd.read_parquet(served.project / "data/predictions/test.parquet")
    assert len(predictions) == len(served.rows) == 800
    response = post(served, "/predict_batch", served.rows)
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    got = np.array([[p["<=50K"], p[">50K"]] for p in body["probabilities"]])
    expected = predictions[["proba_<=50K", "proba_>50K"]].to_numpy()
    assert np.abs(got - expected).max() <= 1e-9
    assert body["labels"] == predictions["predicted"].astype(str).tolist()
    single = [post(served, "/predict", row).json() for row in served.rows[:20]]
    one_by_one = np.array([s["probabilities"][">50K"] for s in single])
    assert np.abs(one_by_one - expected[:20, 1]).max() <= 1e-9


def test_bad_input_is_a_json_4xx_naming_field_and_rule(served: Served) -> None:
    row = served.rows[0]
    no_age = {k: v for k, v in row.items() if k != "age"}
    cases = {
        "missing field": ("/predict", no_age, 400, ["age", "missing"]),
        "wrong type": ("/predict", row | {"age": "forty"}, 400, ["age", "int_type"]),
        "null not allowed": ("/predict", row | {"sex": None}, 400, ["sex", "string_type"]),
        "unknown field": ("/predict", row | {"salary": 1}, 400, ["salary", "extra_forbidden"]),
        "non-finite": (
            "/predict",
            json.dumps(row | {"fnlwgt": 1}).replace('"fnlwgt": 1', '"fnlwgt": NaN').encode(),
            400,
            ["fnlwgt"],
        ),
        "huge number": (
            "/predict",
            json.dumps(row).replace(f'"age": {row["age"]}', '"age": 1e999').encode(),
            400,
            ["age"],
        ),
        "batch too large": ("/predict_batch", [row] * 901, 400, ["too_long"]),
        "empty batch": ("/predict_batch", [], 400, ["too_short"]),
        "malformed json": ("/predict", b'{"age": 39,', 400, ["json_invalid"]),
        "malformed batch": ("/predict_batch", b'[{"age": ', 400, ["json_invalid"]),
        "huge integer": ("/predict", row | {"capital_gain": 10**400}, 400, ["capital_gain"]),
        "not an object": ("/predict", [1, 2], 400, ["model_type"]),
    }
    for case, (path, body, status, words) in cases.items():
        response = post(served, path, body)
        assert response.status_code == status, (case, response.text)
        payload = response.json()
        text = json.dumps(payload)
        assert "Traceback" not in text
        for word in words:
            assert word in text, (case, text)
    too_big = post(served, "/predict_batch", b"[" + b" " * 2_000_000 + b"]")
    assert too_big.status_code == 413 and "max_body_bytes" in too_big.json()["detail"]
    wrong_media = httpx.post(
        f"{served.url}/predict", content=b"age=1", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert wrong_media.status_code == 415 and "application/json" in wrong_media.json()["detail"]
    # Unknown categories are served (the featurizer's infrequent group), not rejected.
    unknown = post(served, "/predict", row | {"native_country": "Atlantis"})
    assert unknown.status_code == 200


def test_explain_contributions_reproduce_the_served_score(served: Served) -> None:
    row = served.rows[0]
    assert httpx.post(f"{served.url}/explain", json=row).status_code == 401
    response = post(served, "/explain", row)
    assert response.status_code == 200, response.text
    one = response.json()
    assert (one["space"], one["output"], one["exact"]) == ("log-odds", ">50K", True)
    assert one["variant"] == "champion" and one["model_version"].startswith("adult-classifier")
    contributions = one["contributions"]
    assert {c["feature"] for c in contributions} == set(row)
    sizes = [abs(c["contribution"]) for c in contributions]
    assert sizes == sorted(sizes, reverse=True)
    total = one["base_value"] + sum(c["contribution"] for c in contributions)
    assert abs(total - one["score"]) < 1e-9
    # the served score is the served probability's log-odds
    probability = post(served, "/predict", row).json()["probabilities"][">50K"]
    assert abs(1 / (1 + np.exp(-one["score"])) - probability) < 1e-6
    assert one["prediction"] == post(served, "/predict", row).json()["label"]

    rows = served.rows[:25]
    batch = post(served, "/explain_batch", rows)
    assert batch.status_code == 200, batch.text[:2000]
    explanations = batch.json()["explanations"]
    probabilities = post(served, "/predict_batch", rows).json()["probabilities"]
    assert len(explanations) == len(rows)
    for answer, proba in zip(explanations, probabilities, strict=True):
        total = answer["base_value"] + sum(c["contribution"] for c in answer["contributions"])
        assert abs(1 / (1 + np.exp(-total)) - proba[">50K"]) < 1e-6
    # the batch form explains row 0 as /explain does (to the last bits of shap's batch sums)
    first = explanations[0]["contributions"]
    assert [c["feature"] for c in first] == [c["feature"] for c in contributions]
    assert np.allclose(
        [c["contribution"] for c in first], [c["contribution"] for c in contributions], atol=1e-12
    )

    # the same 4xx rules as /predict
    no_age = {k: v for k, v in row.items() if k != "age"}
    for path, body, word in [
        ("/explain", no_age, "missing"),
        ("/explain", row | {"age": "forty"}, "int_type"),
        ("/explain_batch", [row] * 901, "too_long"),
        ("/explain_batch", [], "too_short"),
        ("/explain_batch", b'[{"age": ', "json_invalid"),
    ]:
        bad = post(served, path, body)
        assert bad.status_code == 400 and word in bad.text, (path, bad.text)
    assert httpx.get(f"{served.url}/explain", headers=AUTH).status_code == 405


def test_ab_split_is_sticky_with_the_configured_share(served: Served) -> None:
    row = served.rows[1]
    seen = {}
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=30) as client:
        for i in range(1000):
            r = client.post("/predict", json=row, headers={"X-User-Id": f"user-{i}"})
            assert r.status_code == 200
            seen[i] = r.json()["variant"]
        share = sum(v == "challenger" for v in seen.values()) / 1000
        assert 0.25 < share < 0.35, share
        for i in range(0, 1000, 50):
            r = client.post("/predict", json=row, headers={"X-User-Id": f"user-{i}"})
            assert r.json()["variant"] == seen[i]
            assert r.json()["model_version"].startswith(f"adult-classifier-{seen[i]}:")
        last = r.json()["prediction_id"]
    metrics = httpx.get(f"{served.url}/metrics").text
    for variant in ("champion", "challenger"):
        counter = re.search(
            rf'tabular_predictions_total{{[^}}]*variant="{variant}"[^}}]*}} (\d+)', metrics
        )
        assert counter and float(counter.group(1)) > 0, metrics[-3000:]
        assert re.search(rf'tabular_predict_seconds_bucket{{[^}}]*variant="{variant}"', metrics)
    lines = [json.loads(line) for line in logged_lines(served.log, {last})]
    assert {line["variant"] for line in lines} == {"champion", "challenger"}
    assert lines[-1]["features"] == row and set(lines[-1]) >= {"ts", "label", "proba"}


@needs_chromium
def test_docs_page_renders_offline_in_chromium(served: Served, tmp_path: Path) -> None:
    spec = httpx.get(f"{served.url}/docs.json").json()
    assert {"/predict", "/predict_batch"} <= set(spec["paths"])
    html = httpx.get(f"{served.url}/").text
    assert "googletagmanager" not in html and "swagger-ui-bundle.js" in html
    dom = dump_dom(f"{served.url}/", budget_ms=8000)
    assert "opblock" in dom and "/predict_batch" in dom, dom[-2000:]
    shot = screenshot(f"{served.url}/", tmp_path / "docs.png", 1280, 2000, budget_ms=8000)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape[:2] == (2000, 1280) and image.std() > 10


def test_fuzz_the_openapi_spec_with_schemathesis(served: Served) -> None:
    """1000+ generated requests (valid and invalid): no 5xx, every response as documented."""
    checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
    out = subprocess.run(
        [
            str(BIN / "st"),
            "run",
            f"{served.url}/docs.json",
            "--checks",
            ",".join(checks),
            "-H",
            f"Authorization: Bearer {KEY}",
            "--include-method",
            "POST",
            "--max-examples",
            "500",
            "--seed",
            "1",
            "--no-color",
        ],
        cwd=served.project,  # its .schemathesis cache lands in the temporary copy
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-6000:]
    generated = re.search(r"(\d+) generated", out.stdout)
    assert generated and int(generated.group(1)) >= 1000, out.stdout[-2000:]


# --- monitoring and Prometheus (docs/monitoring.md) -------------------------------------


def start_prometheus(tmp: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real Prometheus (Debian's) scraping ``target`` every second, with the shipped rules."""
    port = free_port()
    rules = Path(__file__).resolve().parents[1] / "monitoring/prometheus/alerts.yml"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "tabular-service", "static_configs": [{"targets": [target]}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def prom_query(url: str, query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5)
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["result"])


def exposed_names(metrics_text: str) -> set[str]:
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in metrics_text.splitlines()
        if line and not line.startswith("#")
    }


def test_monitor_flags_shifted_traffic_and_prometheus_scrapes_it(
    served: Served, tmp_path: Path
) -> None:
    """Acceptance of issue 16 on one served Bento: only sex=Female traffic.

    `monitor` must name the drifted column and exit 1; the delayed labels are
    joined by prediction_id; a real Prometheus reads tabular_predictions_total.
    """
    from tabular_pipeline.monitoring import dashboard
    from tests.test_monitoring import EXPORTED, METRIC_NAME, SERVICE_METRICS

    prom = None
    if shutil.which("prometheus"):
        prom, prom_url = start_prometheus(tmp_path, served.url.removeprefix("http://"))
    test = pd.read_parquet(served.project / "data/split/test.parquet")
    female = [i for i, row in enumerate(served.rows) if row["sex"] == "Female"]
    assert 150 < len(female) < 400, len(female)
    offset = served.log.stat().st_size if served.log.exists() else 0
    ids: dict[str, int] = {}
    for start in range(0, len(female), 50):
        chunk = female[start : start + 50]
        body = post(served, "/predict_batch", [served.rows[i] for i in chunk]).json()
        assert len(body["prediction_ids"]) == len(chunk), body
        ids.update(zip(body["prediction_ids"], chunk, strict=True))
    single = post(served, "/predict", served.rows[female[0]]).json()
    ids[single["prediction_id"]] = female[0]
    assert len(ids) == len(female) + 1  # unique per prediction, even for a repeated row

    # The log lines of this traffic, plus a corrupt line and a torn last line.
    lines = logged_lines(served.log, set(ids), offset)
    assert {json.loads(line)["prediction_id"] for line in lines} == set(ids)
    logs = tmp_path / "logs"
    logs.mkdir()
    lines.insert(5, "{garbage")
    (logs / "predictions.jsonl").write_text("\n".join(lines) + '\n{"prediction_id": "x", "ts": 1')
    labels = tmp_path / "labels.csv"
    target = test["income"].astype(str).tolist()
    rows = [f"{pid},{target[i]}" for pid, i in ids.items()] + ["nope-1,>50K", "nope-2,<=50K"]
    labels.write_text("prediction_id,label\n" + "\n".join(rows) + "\n")

    out_dir = tmp_path / "monitor"
    cmd = [sys.executable, "-m", "tabular_pipeline.monitoring.cli", "--logs", str(logs)]
    cmd += ["--labels", str(labels), "--out", str(out_dir)]
    result = subprocess.run(cmd, cwd=served.project, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-4000:]
    err = result.stderr
    assert "Traceback" not in err
    assert "predictions.jsonl:6: skipped line: not valid JSON" in err
    assert f"predictions.jsonl:{len(lines) + 1}: skipped line" in err
    assert "monitoring gate failed" in err and "critical column 'sex' drifted" in err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert "sex" in summary["drift"]["drifted_columns"]
    assert summary["rows"]["served"] == len(ids) and summary["logs"]["skipped_lines"] == 2
    assert summary["variants"]["champion"]["is_workspace_model"]
    counts = summary["quality"]["counts"]
    assert counts == {
        "labels": len(ids) + 2,
        "matched": len(ids),
        "unknown_ids": 2,
        "served": len(ids),
    }
    live = {row["metric"]: row for row in summary["quality"]["metrics"]}
    assert live["accuracy"]["promoted"] is not None and live["accuracy"]["ci"]["low"] > 0.5
    prom_text = (out_dir / "monitor.prom").read_text()
    assert 'tabular_monitor_column_drifted{column="sex",model="adult"} 1' in prom_text
    assert 'tabular_monitor_gate_passed{model="adult"} 0' in prom_text
    assert (out_dir / "report.html").stat().st_size > 100_000
    # The pipeline is untouched: monitoring is not a stage.
    status = run(["dvc", "status", "--json"], served.project)
    assert json.loads(status.stdout or "{}") == {}, status.stdout

    # Dashboard and alert queries name metrics this service really exposes.
    exposed = exposed_names(httpx.get(f"{served.url}/metrics").text)
    assert exposed >= SERVICE_METRICS, SERVICE_METRICS - exposed
    used = {n for q in dashboard.queries(dashboard.dashboard()) for n in METRIC_NAME.findall(q)}
    assert used <= exposed | EXPORTED, used - exposed - EXPORTED
    metrics_text = httpx.get(f"{served.url}/metrics").text
    assert re.search(r'bentoml_service_request_total{[^}]*endpoint="/predict_batch"', metrics_text)
    assert re.search(r'bentoml_service_request_total{[^}]*http_response_code="200"', metrics_text)

    if prom is None:
        tools.require("prometheus")
    try:
        deadline = time.time() + 60
        seen: list[dict[str, Any]] = []
        while time.time() < deadline:
            try:
                seen = prom_query(prom_url, 'sum(tabular_predictions_total{variant="champion"})')
            except httpx.HTTPError:
                seen = []
            if seen and float(seen[0]["value"][1]) >= len(ids):
                break
            time.sleep(1)
        assert seen and float(seen[0]["value"][1]) >= len(ids), (
            tmp_path / "prometheus.log"
        ).read_text()[-3000:]
        up = prom_query(prom_url, 'up{job="tabular-service"}')
        assert up and up[0]["value"][1] == "1"
        groups = httpx.get(f"{prom_url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) >= 10 and all(r["health"] != "err" for r in rules), rules
    finally:
        os.killpg(prom.pid, signal.SIGTERM)
        prom.wait(timeout=20)
