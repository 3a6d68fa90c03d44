"""The project tier: what `make test` checks in a project generated from the template.

It tests *this* project, on its own data, not the template's machinery:

1. the data contract: `ingest` and `validate` (the dataset config and its
   schema) pass on a seeded sample of the project's raw files;
2. a smoke run of the whole pipeline through `package` on that sample;
3. the served contract of the Bento it built: probes, auth, a prediction for
   rows of its own test split, a 400 for a row that breaks the request schema.

Everything runs on one temporary copy of the project (the tracked files, with
the raw files replaced by their sample), built once per session; the tests
share it through one xdist group. In the template repository the same tests
run on the Adult example. See docs/testing.md.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pandas as pd
import pytest

from tests.conftest import NOT_COPIED, ROOT, composed_params, git, run, tracked_files
from tests.servers import bento_server

# The end-to-end tests share one sampled copy: one worker runs them all.
PROJECT_TIER: tuple[Any, ...] = (
    pytest.mark.slow,
    pytest.mark.project,
    pytest.mark.xdist_group("project"),
)
if not (ROOT / ".copier-answers.yml").exists():
    # In the template these checks on Adult repeat what its own `make test` checks
    # (tests/test_e2e*.py, tests/test_serving_e2e.py), and the template round trip
    # (tests/test_template.py) runs this tier in a generated project: the
    # exhaustive tier. In a generated project this file *is* `make test`.
    PROJECT_TIER += (pytest.mark.exhaustive,)


def project_tier(test: Any) -> Any:
    for mark in PROJECT_TIER:
        test = mark(test)
    return test


SEED = 0
TRAIN_ROWS = 2000  # a sample that trains a usable model in seconds
TEST_ROWS = 1000
KEY = "project-tier-key"
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _open(path: Path, mode: str) -> IO[Any]:
    opener = OPENERS.get(path.suffix)
    if opener is not None:
        return opener(path, mode)  # type: ignore[no-any-return]
    return path.open(mode)


def header_lines(read: dict[str, Any]) -> int:
    """How many leading lines of a CSV are not rows, under ``data.source.read``."""
    header = read.get("header", None if "names" in read else "infer")
    lines = 0 if header is None else (1 if header == "infer" else int(header) + 1)
    skip = read.get("skiprows")
    return lines + (skip if isinstance(skip, int) else 0)


def sample_file(src: Path, dst: Path, rows: int, read: dict[str, Any]) -> None:
    """A seeded sample of ``rows`` data rows of ``src`` in its own format and compression.

    CSV is sampled line by line, header kept, so the read options apply as they
    do to the real file (a quoted field spanning lines would be cut: use
    Parquet for such data). Rows keep their order.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(src)
        if len(frame) > rows:
            frame = frame.sample(rows, random_state=SEED).sort_index()
        frame.to_parquet(dst)
        return
    if src.suffix == ".zip":
        shutil.copy2(src, dst)  # rare; the whole file
        return
    with _open(src, "rb") as handle:
        lines = handle.readlines()
    head = header_lines(read)
    body = [line for line in lines[head:] if line.strip()]
    if len(body) > rows:
        keep = sorted(random.Random(SEED).sample(range(len(body)), rows))
        body = [body[i] for i in keep]
    with _open(dst, "wb") as handle:
        handle.writelines(lines[:head] + body)


def sampled_copy(tmp: Path) -> Path:
    """This project's tracked files in a new git repo, its raw files replaced by samples."""
    params = composed_params()
    data = params["data"]
    project = tmp / "project"
    for rel in tracked_files():
        if rel.startswith(NOT_COPIED):
            continue
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, project / rel)
    read = dict(data["source"].get("read") or {})
    for key, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
        rel = data["source"].get(key)
        if not rel:
            continue
        src = ROOT / rel
        if not src.is_file():
            pytest.fail(
                f"data.source.{key}: no file {rel}: put the project's data there "
                f"(or `dvc pull` it) before `make test`"
            )
        sample_file(src, project / rel, rows, read)
    for pattern in data["source"].get("extra_train") or []:  # labelled batches, if any
        for src in sorted(ROOT.glob(pattern)):
            sample_file(src, project / src.relative_to(ROOT), TRAIN_ROWS, read)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "sampled project")
    return project


class Smoke:
    """The sampled copy and what ran in it."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.contract = run(["dvc", "repro", "validate"], project, check=False)
        self.pipeline: Any = None

    def through_package(self) -> Any:
        if self.contract.returncode != 0:
            pytest.fail("the data contract is broken (see test_data_contract_holds_on_a_sample)")
        if self.pipeline is None:
            # An experiment runs every stage through package even when the
            # register gates reject a model trained on a small sample.
            self.pipeline = run(["dvc", "exp", "run"], self.project, check=False, timeout=900)
        return self.pipeline


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Smoke:
    return Smoke(sampled_copy(tmp_path_factory.mktemp("own")))


@pytest.fixture(scope="session")
def served(smoke: Smoke, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert smoke.through_package().returncode == 0, "the smoke run failed"
    with bento_server(smoke.project, tmp_path_factory.mktemp("served"), KEY) as url:
        yield url


def test_header_lines_follow_the_read_options() -> None:
    assert header_lines({}) == 1
    assert header_lines({"header": None}) == 0
    assert header_lines({"names": ["a", "b"]}) == 0
    assert header_lines({"header": 1, "skiprows": 2}) == 4


def test_sample_keeps_format_header_and_order(tmp_path: Path) -> None:
    src = tmp_path / "in.csv.gz"
    with gzip.open(src, "wt") as handle:
        handle.write("a,b\n" + "".join(f"{i},x{i}\n" for i in range(50)))
    sample_file(src, tmp_path / "out.csv.gz", 10, {})
    frame = pd.read_csv(tmp_path / "out.csv.gz")
    assert list(frame.columns) == ["a", "b"] and len(frame) == 10
    assert frame["a"].is_monotonic_increasing
    sample_file(src, tmp_path / "again.csv.gz", 10, {})
    assert pd.read_csv(tmp_path / "again.csv.gz").equals(frame)  # seeded


@project_tier
def test_data_contract_holds_on_a_sample(smoke: Smoke) -> None:
    """`ingest` and `validate` pass: the data config and schema describe the data."""
    proc = smoke.contract
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert proc.returncode == 0, "the data contract is broken:\n" + "\n".join(
        errors or proc.stderr.splitlines()[-20:]
    )
    result = json.loads((smoke.project / "reports/validate/result.json").read_text())
    assert result["success"] is True


@project_tier
def test_pipeline_runs_through_package_on_the_sample(smoke: Smoke) -> None:
    proc = smoke.through_package()
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (smoke.project / "models/service.bento").is_file()
    metrics = json.loads((smoke.project / "metrics/evaluate.json").read_text())
    assert metrics, "evaluate wrote no metrics"
    decision = json.loads((smoke.project / "metrics/register.json").read_text())
    assert "promoted" in decision


def request_columns(url: str) -> list[str]:
    """The fields of one /predict request, from the service's own OpenAPI spec."""
    spec = httpx.get(f"{url}/docs.json", timeout=30).json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return list(schema["properties"])


@project_tier
def test_served_bento_answers_its_own_test_rows(smoke: Smoke, served: str) -> None:
    for path in ("/livez", "/readyz"):
        assert httpx.get(f"{served}{path}", timeout=30).status_code == 200, path
    columns = request_columns(served)
    test = pd.read_parquet(smoke.project / "data/split/test.parquet")
    rows = [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in test[columns].head(20).astype(object).to_dict(orient="records")
    ]
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(f"{served}/predict", json=rows[0], timeout=30).status_code == 401
    answer = httpx.post(f"{served}/predict_batch", json=rows, headers=auth, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["prediction_ids"]) == len(rows)
    one = httpx.post(f"{served}/predict", json=rows[0], headers=auth, timeout=30)
    assert one.status_code == 200, one.text
    assert "label" in one.json() or "prediction" in one.json()
    missing = {k: v for k, v in rows[0].items() if k != columns[0]}
    bad = httpx.post(f"{served}/predict", json=missing, headers=auth, timeout=30)
    assert bad.status_code == 400 and columns[0] in bad.text
