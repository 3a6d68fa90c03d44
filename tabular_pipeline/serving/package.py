"""Build the Bento offline and export it as a byte-reproducible archive.

Traps this works around (see shared stack facts):
- BentoML's store defaults to ~/bentoml: we build in a temporary BENTOML_HOME.
- The default ``include`` is the whole build context (data/, caches): we build
  from a temporary context holding only ``serving.json`` and the project
  modules that the service and the models' own classes import (``contents``).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabular_pipeline import imports, stage
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.serving.runtime import (
    CONFIG_ENV,
    CONFIG_NAME,
    MODEL_FILE,
    ServingConfig,
    Variant,
)

log = logging.getLogger(__name__)

SERVICE = "tabular_pipeline.serving.service:TabularService"
FIXED_TIME = "2000-01-01T00:00:00+00:00"  # creation_time written into the archive
FIXED_MTIME = 946684800  # the same instant, for tar members
# Pinned whatever the imports say: scikit-learn's own run-time dependencies
# (scipy, joblib, threadpoolctl) would otherwise float to their newest release.
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
    # /explain: shap is found from the imports; its numba stack is pinned here.
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


def variants(
    name: str, champion: Path, challenger: Path | None, challenger_share: float
) -> tuple[list[Variant], dict[str, Path]]:
    """The served variants (champion, optional challenger) with their shares and tags."""
    files = {"champion": champion} | ({"challenger": challenger} if challenger else {})
    shares = {"champion": 1.0 - (challenger_share if challenger else 0.0)}
    if challenger:
        shares["challenger"] = challenger_share
    built = []
    for variant, path in files.items():
        sha = sha256_file(path)
        built.append(
            Variant(
                name=variant,
                model_tag=f"{name}-{variant}:{sha[:20]}",
                sha256=sha,
                share=shares[variant],
            )
        )
    return built, files


def check_features(
    specs: list[Any], features: dict[str, Any], model_path: Path, features_out: str
) -> None:
    """The request schema (from the fitted featurizer) must match featurize's column list."""
    declared = set(features["numeric"]) | set(features["categorical"])
    if declared != {s.name for s in specs}:
        raise PipelineError(
            f"package: {model_path} does not match {features_out}; re-run featurize/train"
        )


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
            "experiment %s: packaging a model register did not promote (see register.details_out)",
            os.environ["DVC_EXP_NAME"],
        )
        return
    if promoted is not True:
        raise PipelineError(
            f"{decision}: promoted={promoted!r}: the model was not promoted, so it is not "
            "packaged; the last packaged archive stays restorable with `dvc checkout`"
        )


# Distributions a local-version pin (``torch==2.13.0+cpu``) needs besides PyPI.
LOCAL_VERSION_INDEXES = {"cpu": "https://download.pytorch.org/whl/cpu"}


@dataclass(frozen=True)
class Contents:
    """What goes into the Bento besides the models: project files and exact pins."""

    files: list[Path]  # relative to the project root
    requirements: list[str]
    extra_index_urls: list[str]


def contents(project_root: Path, models: list[Any]) -> Contents:
    """The service's and the models' own project modules, and what they import.

    A Bento is loaded with no editable install of the project: every project
    class in a model's pickle (the torch MLP, a user's estimator) must ship,
    with what its module imports, and so must its third-party libraries (torch
    for the MLP). Both are read from the code's imports (``imports.closure``),
    not from a hand-kept list that drifts.
    """
    held = set().union(*(imports.object_modules(m) for m in models)) if models else set()
    project = sorted(m for m in held if m.split(".")[0] in imports.PROJECT_PACKAGES)
    files = sorted(imports.closure(project_root, [SERVICE.split(":")[0], *project]))
    modules = imports.third_party(project_root, files) | {m.split(".")[0] for m in held}
    pins = requirements(modules)
    indexes = sorted(
        {
            url
            for pin in pins
            for tag, url in LOCAL_VERSION_INDEXES.items()
            if pin.endswith(f"+{tag}")
        }
    )
    return Contents(files, pins, indexes)


def requirements(modules: set[str]) -> list[str]:
    """Exact pins of what the service needs, from this environment (no resolver, no network)."""
    dists = set(BASE_REQUIREMENTS)
    by_module = importlib.metadata.packages_distributions()
    for module in modules:
        if module in sys.stdlib_module_names or module in imports.PROJECT_PACKAGES:
            continue
        dists.update(by_module.get(module, []))
    pins = []
    for dist in sorted(dists, key=str.lower):
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def content_version(
    config_json: bytes, project_root: Path, shipped: Contents, model_hashes: list[str]
) -> str:
    """Bento version from content: serving config, shipped code, pins and models."""
    digest = hashlib.sha256(config_json)
    for rel in shipped.files:
        digest.update(rel.as_posix().encode())
        digest.update((project_root / rel).read_bytes())
    for line in [*shipped.requirements, *shipped.extra_index_urls, *model_hashes]:
        digest.update(line.encode())
    return digest.hexdigest()[:20]


def build_archive(
    config: ServingConfig, model_files: dict[str, Path], out: Path, project_root: Path
) -> tuple[str, Contents]:
    """Save the models, build the Bento in a throwaway store, write ``out``.

    Returns the Bento tag and what was shipped besides the models.
    """
    import joblib

    config_json = (json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n").encode()
    hashes = [v.sha256 for v in config.variants]
    shipped = contents(project_root, [joblib.load(model_files[v.name]) for v in config.variants])
    version = content_version(config_json, project_root, shipped, hashes)
    with tempfile.TemporaryDirectory(prefix="tabular-bento-") as tmp:
        tmp_path = Path(tmp).resolve()
        ctx = tmp_path / "ctx"
        for rel in shipped.files:
            dst = ctx / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project_root / rel, dst)
        (ctx / CONFIG_NAME).write_bytes(config_json)
        previous = {k: os.environ.get(k) for k in ("BENTOML_HOME", CONFIG_ENV)}
        os.environ["BENTOML_HOME"] = str(tmp_path / "home")
        os.environ[CONFIG_ENV] = str(ctx / CONFIG_NAME)
        try:
            tag = _build(config, model_files, ctx, version, tmp_path / "export.bento", shipped)
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        with stage.atomic_path(out) as partial:
            repack_deterministic(tmp_path / "export.bento", partial)
    return tag, shipped


def _build(
    config: ServingConfig,
    model_files: dict[str, Path],
    ctx: Path,
    version: str,
    export_to: Path,
    shipped: Contents,
) -> str:
    import bentoml

    for variant in config.variants:
        name, model_version = variant.model_tag.split(":")
        with bentoml.models.create(
            name=f"{name}:{model_version}",
            labels={"variant": variant.name, "sha256": variant.sha256},
            metadata={"sha256": variant.sha256, "file": MODEL_FILE},
        ) as stored:
            shutil.copyfile(model_files[variant.name], stored.path_of(MODEL_FILE))
    log.info("requirements: %s", ", ".join(shipped.requirements))
    python: dict[str, Any] = {"packages": shipped.requirements, "lock_packages": False}
    if shipped.extra_index_urls:  # e.g. torch==2.13.0+cpu lives on the PyTorch CPU index
        python["extra_index_url"] = shipped.extra_index_urls
    bento = bentoml.bentos.build(
        SERVICE,
        name=config.name,
        version=version,
        build_ctx=str(ctx),
        include=[rel.as_posix() for rel in shipped.files] + [CONFIG_NAME],
        exclude=["**/__pycache__/**"],
        description=(
            f"Tabular model for target {config.target!r} built by the DVC pipeline's "
            "package stage. POST /predict, /predict_batch, /explain, /explain_batch; docs at "
            "/. Self-contained: "
            "src/ holds every project module the service and the models import, and "
            "env/python/requirements.txt pins what they import"
            + (
                f" (with --extra-index-url {' '.join(shipped.extra_index_urls)} for "
                "local-version wheels such as torch's CPU build)."
                if shipped.extra_index_urls
                else "."
            )
        ),
        labels={
            "target": config.target,
            **{f"model-{v.name}": v.sha256[:40] for v in config.variants},
        },
        models=[v.model_tag for v in config.variants],
        python=python,
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
