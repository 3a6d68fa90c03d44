"""Build the Bento offline and export it as a byte-reproducible archive.

Traps this works around (see shared stack facts):
- BentoML's store defaults to ~/bentoml: we build in a temporary BENTOML_HOME.
- The default ``include`` is the whole build context (data/, caches): we build
  from a temporary context holding only the package's ``.py`` files and
  ``serving.json``.
- ``lock_packages`` resolves over the network (and installs uv): off; the
  requirements are the exact versions installed here.
- ``export_bento`` resolves relative paths against ``/``: absolute paths only.
- The archive embeds ``creation_time`` and tar mtimes/owners: re-packed with
  fixed values, so two clean builds give identical bytes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import lzma
import os
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.serving.runtime import CONFIG_ENV, CONFIG_NAME, MODEL_FILE, ServingConfig

log = logging.getLogger(__name__)

SERVICE = "tabular_pipeline.serving.service:TabularService"
FIXED_TIME = "2000-01-01T00:00:00+00:00"  # creation_time written into the archive
FIXED_MTIME = 946684800  # the same instant, for tar members
# What the service imports at run time; the model's own modules are added by detection.
BASE_REQUIREMENTS = (
    "bentoml",
    "scikit-learn",
    "numpy",
    "scipy",
    "pandas",
    "joblib",
    "threadpoolctl",
    "pydantic",
    "omegaconf",
    "PyYAML",
    # /explain (tabular_pipeline/explain): shap and the numba stack it imports.
    "shap",
    "numba",
    "llvmlite",
    "slicer",
)
_TIME_LINE = re.compile(rb"^(\s*creation_time:\s*).*$", re.M)


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def safe_name(name: str) -> str:
    """A valid BentoML name: lowercase letters, digits, '-', '_', '.'."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    if not cleaned:
        raise PipelineError(f"package.name {name!r}: no usable characters")
    return cleaned[:50]


def check_promoted(decision: Path | None) -> None:
    """Refuse to package a model the register stage rejected (the old archive stays in DVC)."""
    if decision is None or not decision.exists():
        log.info("no register decision file: packaging the trained model")
        return
    try:
        promoted = json.loads(decision.read_text(encoding="utf-8")).get("promoted")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise PipelineError(f"{decision}: not a JSON object with 'promoted'") from exc
    if promoted is not True and os.environ.get("DVC_EXP_NAME"):
        # Experiments never move the champion alias (unless register is told to),
        # so their models are packaged for comparison, labelled as not promoted.
        log.warning(
            "experiment %s: packaging a model register did not promote (%s)",
            os.environ["DVC_EXP_NAME"],
            json.loads(decision.read_text(encoding="utf-8")).get("decision"),
        )
        return
    if promoted is not True:
        raise PipelineError(
            f"{decision}: promoted={promoted!r}: the model was not promoted, so it is not "
            "packaged; the last packaged archive stays restorable with `dvc checkout`"
        )


def model_modules(path: Path) -> set[str]:
    """Top-level modules that unpickling the model imports (e.g. torch for an MLP)."""
    import joblib

    before = set(sys.modules)
    joblib.load(path)
    return {m.split(".")[0] for m in set(sys.modules) - before}


def requirements(extra_modules: set[str]) -> list[str]:
    """Exact pins of what the service needs, from this environment (no resolver, no network)."""
    dists = set(BASE_REQUIREMENTS)
    by_module = importlib.metadata.packages_distributions()
    for module in extra_modules:
        if module in sys.stdlib_module_names or module == "tabular_pipeline":
            continue
        dists.update(by_module.get(module, []))
    pins = []
    for dist in sorted(dists, key=str.lower):
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


# The package modules the service imports: exactly these go into the Bento
# (and are the package stage's code deps in dvc.yaml).
SHIPPED = (
    "__init__.py",
    "config.py",
    "errors.py",
    "serving/*.py",
    "explain/__init__.py",
    "explain/shap_values.py",
)


def source_files(package_root: Path) -> list[Path]:
    return sorted({p for pattern in SHIPPED for p in package_root.glob(pattern)})


def content_version(config_json: bytes, package_root: Path, model_hashes: list[str]) -> str:
    """Bento version from content: serving config, service code and models."""
    digest = hashlib.sha256(config_json)
    for path in source_files(package_root):
        digest.update(path.relative_to(package_root).as_posix().encode())
        digest.update(path.read_bytes())
    for sha in model_hashes:
        digest.update(sha.encode())
    return digest.hexdigest()[:20]


def build_archive(
    config: ServingConfig, model_files: dict[str, Path], out: Path, package_root: Path
) -> str:
    """Save the models, build the Bento in a throwaway store, write ``out``; return the tag."""
    config_json = (json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n").encode()
    hashes = [v.sha256 for v in config.variants]
    version = content_version(config_json, package_root, hashes)
    with tempfile.TemporaryDirectory(prefix="tabular-bento-") as tmp:
        tmp_path = Path(tmp).resolve()
        ctx = tmp_path / "ctx"
        for src in source_files(package_root):
            dst = ctx / "tabular_pipeline" / src.relative_to(package_root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        (ctx / CONFIG_NAME).write_bytes(config_json)
        previous = {k: os.environ.get(k) for k in ("BENTOML_HOME", CONFIG_ENV)}
        os.environ["BENTOML_HOME"] = str(tmp_path / "home")
        os.environ[CONFIG_ENV] = str(ctx / CONFIG_NAME)
        try:
            tag = _build(config, model_files, ctx, version, tmp_path / "export.bento", hashes)
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        repack_deterministic(tmp_path / "export.bento", partial)
        partial.replace(out)
    return tag


def _build(
    config: ServingConfig,
    model_files: dict[str, Path],
    ctx: Path,
    version: str,
    export_to: Path,
    hashes: list[str],
) -> str:
    import bentoml

    extra: set[str] = set()
    for variant in config.variants:
        path = model_files[variant.name]
        extra |= model_modules(path)
        name, model_version = variant.model_tag.split(":")
        with bentoml.models.create(
            name=f"{name}:{model_version}",
            labels={"variant": variant.name, "sha256": variant.sha256},
            metadata={"sha256": variant.sha256, "file": MODEL_FILE},
        ) as stored:
            shutil.copyfile(path, stored.path_of(MODEL_FILE))
    pins = requirements(extra)
    log.info("requirements: %s", ", ".join(pins))
    bento = bentoml.bentos.build(
        SERVICE,
        name=config.name,
        version=version,
        build_ctx=str(ctx),
        include=["tabular_pipeline/**/*.py", CONFIG_NAME],
        exclude=["**/__pycache__/**"],
        description=(
            f"Tabular classifier for target {config.target!r} built by the DVC "
            "pipeline's package stage. POST /predict, /predict_batch, /explain, "
            "/explain_batch; docs at /."
        ),
        labels={
            "target": config.target,
            **{f"model-{v.name}": v.sha256[:40] for v in config.variants},
        },
        models=[v.model_tag for v in config.variants],
        python={"packages": pins, "lock_packages": False},
        docker={"python_version": f"{sys.version_info.major}.{sys.version_info.minor}"},
    )
    bentoml.bentos.export_bento(bento.tag, str(export_to))
    return str(bento.tag)


def repack_deterministic(src: Path, dst: Path) -> None:
    """Rewrite the exported archive with fixed times, owners and member order."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(src, "r:*") as tar:
        for info in tar.getmembers():
            data = None
            if info.isfile():
                fh = tar.extractfile(info)
                assert fh is not None
                data = fh.read()
                if info.name.endswith((".yaml", ".yml")):
                    data = _TIME_LINE.sub(rb"\g<1>'" + FIXED_TIME.encode() + rb"'", data)
            members.append((info, data))
    members.sort(key=lambda m: m[0].name)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            clean = tarfile.TarInfo(info.name)
            clean.type = info.type
            clean.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
            clean.mtime = FIXED_MTIME
            clean.uid = clean.gid = 0
            clean.uname = clean.gname = ""
            clean.linkname = info.linkname
            if data is not None:
                clean.size = len(data)
                tar.addfile(clean, io.BytesIO(data))
            else:
                tar.addfile(clean)
    # xz, like BentoML's own .bento export (`bentoml import` picks by extension);
    # the xz container has no timestamp.
    dst.write_bytes(lzma.compress(raw.getvalue(), format=lzma.FORMAT_XZ, preset=6))


def archive_listing(path: Path) -> dict[str, Any]:
    """Names and sizes in an archive (tests check nothing from data/ got in)."""
    with tarfile.open(path, "r:*") as tar:
        return {m.name.removeprefix("./"): m.size for m in tar.getmembers() if m.isfile()}
