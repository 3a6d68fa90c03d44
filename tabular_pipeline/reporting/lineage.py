"""Inputs of the model card that are read from files: row counts, hashes, versions."""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tabular_pipeline.config import DataConfig

SPLITS = ("train", "valid", "test")
FRAMEWORKS = ("scikit-learn", "pandas", "numpy", "mlflow", "evidently", "dvc")


def md5(path: Path) -> str:
    """The hash DVC records for a file in dvc.lock (and in a directory's manifest)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def data_section(data: DataConfig, split_dir: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    rows, hashes = {}, {}
    for name in SPLITS:
        path = split_dir / f"{name}.parquet"
        if path.exists():
            rows[name] = int(pq.read_metadata(path).num_rows)
            hashes[name] = md5(path)
    return {
        "dataset": data.name,
        "source": {"train": data.source.train, "test": data.source.test},
        "target": data.target,
        "rows": rows,
        "md5": hashes,
    }


def hashes(model_path: Path, split_dir: Path) -> dict[str, Any]:
    files = [model_path] + [split_dir / f"{s}.parquet" for s in SPLITS]
    return {
        "model_sha256": stage_sha256(model_path),
        "mlflow_run": "the run tagged model_sha256 = the value above (the MLflow copy of "
        "this card adds its id and the git commit)",
        # For files these equal the md5s in dvc.lock and in DVC's directory manifests.
        "input_md5": {p.as_posix(): md5(p) for p in files if p.exists()},
    }


def stage_sha256(path: Path) -> str:
    from tabular_pipeline.tracking import file_sha256

    return file_sha256(path)


def framework_versions() -> dict[str, str]:
    out = {}
    for pkg in FRAMEWORKS:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def top_drifted(summary: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` drifted columns, by name (scores of different tests do not compare)."""
    return sorted(
        (c for c in summary.get("columns", []) if c["drifted"]), key=lambda c: c["column"]
    )[:n]
