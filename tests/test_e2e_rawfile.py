"""A damaged raw file stops `dvc repro` at ingest with one line, and nothing is lost."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from tests.conftest import git, ran_stages

RAW = "data/raw/adult/adult.data.csv.gz"


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def zip_behind_gz(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("adult.data.csv", gzip.decompress(data))
    return buffer.getvalue()


def semicolons(data: bytes) -> bytes:
    text = gzip.decompress(data).decode().replace(", ", ";")
    return gzip.compress(text.encode(), mtime=0)


DAMAGES = [
    (truncated, "the gzip stream ends early: the file is truncated"),
    (zip_behind_gz, "the file is a zip archive but its name says gzip-compressed"),
    (lambda data: b"", "the file is empty (0 bytes"),
    (semicolons, "read 1 column with sep=','; the file looks ';'-separated"),
]


@pytest.mark.slow
def test_damaged_raw_file_gives_one_line_and_keeps_the_lock(project: Path, dvc) -> None:
    raw = project / RAW
    good = raw.read_bytes()
    lock = (project / "dvc.lock").read_bytes()
    for damage, cause in DAMAGES:
        raw.write_bytes(damage(good))
        out = dvc("repro", check=False)
        log = out.stdout + out.stderr
        assert out.returncode != 0, log[-3000:]  # DVC's own code is 255
        assert "python -m tabular_pipeline.warm stages.ingest, exited with 1" in log, log[-3000:]
        assert ran_stages(out.stdout) == ["ingest"]  # fails fast, nothing else runs
        assert "Traceback" not in log, log[-3000:]
        ours = [line for line in log.splitlines() if " ERROR tabular_pipeline: " in line]
        assert len(ours) == 1, log[-3000:]
        assert f"ERROR tabular_pipeline: {RAW}: {cause}" in ours[0]
        # DVC adds its own "failed to reproduce 'ingest'" line, naming no file.
        assert [line for line in log.splitlines() if "ERROR" in line and RAW in line] == ours
        assert (project / "dvc.lock").read_bytes() == lock
    git(project, "checkout", "--", RAW)
    dvc("checkout")  # ingest's outputs, deleted by the failed runs, come back from the cache
    assert "up to date" in dvc("status").stdout
