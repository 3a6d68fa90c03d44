"""``make image``: the Bento's OCI image, built with the engine this machine has.

    python -m tabular_pipeline.serving.image [--archive PATH] [--engine E] [--standin-base]

The Dockerfile is BentoML's own (``bentoml.container.construct_containerfile``,
the one ``bentoml containerize`` writes), so the image is what BentoML's users
expect: ``FROM python:3.11-slim``, the pinned requirements in ``/app/.venv``,
user ``bentoml``, entrypoint ``bentoml serve $BENTO_PATH``. The engine is
docker or podman when its daemon/runtime answers, else buildah (daemonless:
``--isolation chroot`` and the ``vfs`` driver work inside a sandbox where
neither overlay mounts nor rlimits can be set). The tag is the Bento's own
``name:version``, a hash of its content (see ``package.content_version``).

Where ``python:3.11-slim`` cannot be pulled (no registry, as on the machines
this project is tested on), ``--standin-base`` makes a stand-in for it with
buildah: a Debian 12 ``debootstrap`` root file system with Python 3.11 and pip
(what the Dockerfile uses of the real image), cached under
``~/.cache/tabular-pipeline/`` and keyed by its recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tabular_pipeline.errors import PipelineError

log = logging.getLogger("image")

ENGINES = ("docker", "podman", "buildah")
BASE_IMAGE = "python:3.11-slim"  # what BentoML's Dockerfile starts FROM for python 3.11
BASE_REF = f"docker.io/library/{BASE_IMAGE}"  # the name the engines resolve it to
SUITE = "bookworm"  # Debian 12: Python 3.11, like the real python:3.11-slim
# What the Dockerfile needs of its base: python3 and pip (it runs `pip install
# uv`, then uv makes /app/.venv from this Python), TLS roots for PyPI, and
# useradd/groupadd (in minbase already).
STANDIN_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CACHE_ENV = "TABULAR_CACHE_DIR"


def cache_dir() -> Path:
    """Where cached build inputs live: $TABULAR_CACHE_DIR or ~/.cache/tabular-pipeline."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tabular-pipeline"
    return Path(root)


def buildah_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """buildah's settings for a sandbox (its own variables, so a user's choice wins)."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("BUILDAH_ISOLATION", "chroot")  # no user namespaces or cgroups needed
    env.setdefault("STORAGE_DRIVER", "vfs")  # no overlay mounts needed
    return env


def _answers(cmd: Sequence[str]) -> bool:
    try:
        done = subprocess.run(list(cmd), capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def pick_engine(requested: str | None = None) -> str:
    """docker or podman if it answers, else buildah; a requested engine must exist."""
    if requested:
        if requested not in ENGINES:
            raise PipelineError(f"--engine {requested!r}: use one of {', '.join(ENGINES)}")
        if not shutil.which(requested):
            raise PipelineError(f"--engine {requested}: not installed")
        return requested
    for engine in ("docker", "podman"):
        if shutil.which(engine) and _answers([engine, "info"]):
            return engine
    if shutil.which("buildah"):
        return "buildah"
    raise PipelineError(
        "no container engine: install docker or podman, or buildah (Debian: apt-get install "
        "buildah) to build without a daemon"
    )


def apt_mirror(sources: Sequence[Path] | None = None) -> str:
    """The Debian mirror the host's apt uses (deb822 ``URIs:`` or a one-line ``deb``)."""
    paths = (
        list(sources)
        if sources is not None
        else [
            *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
            Path("/etc/apt/sources.list"),
        ]
    )
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split()
            uri = None
            deb822 = len(words) >= 2 and words[0] == "URIs:"
            one_line = len(words) >= 3 and words[0] == "deb" and not words[1].startswith("[")
            if deb822 or one_line:
                uri = words[1]
            if uri and "security" not in uri:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def standin_recipe(mirror: str) -> dict[str, object]:
    """Everything the stand-in's bytes depend on: its cache key."""
    return {
        "tool": "debootstrap --variant=minbase",
        "suite": SUITE,
        "packages": list(STANDIN_PACKAGES),
        "mirror": mirror,
        "post": "python/pip on PATH as in the official image; pip may install system-wide",
        "format": 1,
    }


def standin_rootfs(mirror: str | None = None) -> Path:
    """A tarball of the stand-in root file system, built once per recipe (about 70 s)."""
    mirror = mirror or apt_mirror()
    recipe = standin_recipe(mirror)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    tarball = cache_dir() / f"base-{SUITE}-{key}.tar"
    if tarball.exists():
        log.info("stand-in base: cached %s", tarball)
        return tarball
    if not shutil.which("debootstrap"):
        raise PipelineError(
            "debootstrap: not installed (Debian: apt-get install debootstrap); it makes the "
            f"local stand-in for {BASE_IMAGE}"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="standin-", dir=tarball.parent))
    rootfs = work / "rootfs"
    try:
        log.info("stand-in base: debootstrap %s from %s (1-3 minutes)", SUITE, mirror)
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(STANDIN_PACKAGES)}"]
        subprocess.run([*cmd, SUITE, str(rootfs), mirror], check=True, stdout=subprocess.DEVNULL)
        _like_official(rootfs)
        partial = tarball.with_suffix(".partial")
        excluded = [f"--exclude=./{d}/*" for d in ("dev", "proc", "sys", "run")]
        subprocess.run(["tar", "-C", str(rootfs), *excluded, "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    finally:
        _remove_tree(work)
    return tarball


def _remove_tree(path: Path) -> None:
    """Delete a debootstrap work folder, never through a mount left inside it.

    debootstrap mounts /proc (and may bind-mount the host's /dev) in its
    target; a failed run can leave them. Unmount, deepest first, and keep the
    folder if anything is still mounted.
    """
    root = str(path.resolve())
    mounted = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1] == root or line.split()[1].startswith(root + "/")
    ]
    for point in sorted(mounted, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if any(
        line.split()[1].startswith(root + "/")
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ):
        log.warning("%s: still has mounts; left in place", path)
        return
    shutil.rmtree(path, ignore_errors=True)


def _like_official(rootfs: Path) -> None:
    """What the official python image offers that the Dockerfile relies on."""
    # The official image's Python is not Debian's: pip installs into it freely.
    for marker in (rootfs / "usr" / "lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    local_bin = rootfs / "usr" / "local" / "bin"
    local_bin.mkdir(parents=True, exist_ok=True)
    for name, target in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
        link = local_bin / name
        if not link.exists():
            link.symlink_to(target)
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (rootfs / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True)
    for lists in (rootfs / "var" / "lib" / "apt" / "lists").glob("*_*"):
        lists.unlink()


LOCAL_CAS = Path("/usr/local/share/ca-certificates")  # Debian's place for a machine's own CAs
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
STANDIN_LABEL = "io.tabular-pipeline.standin"


def local_cas(folder: Path = LOCAL_CAS) -> list[Path]:
    """The CAs this machine trusts besides Debian's (e.g. a TLS-inspecting proxy's)."""
    return sorted(folder.glob("*.crt")) if folder.is_dir() else []


def _image_label(ref: str, environ: dict[str, str]) -> str | None:
    done = subprocess.run(
        ["buildah", "inspect", "--type", "image", ref],
        capture_output=True,
        text=True,
        env=environ,
        check=False,
    )
    if done.returncode:
        return None
    labels = json.loads(done.stdout)["OCIv1"]["config"].get("Labels") or {}
    stale = "stand-in" in labels.get("org.opencontainers.image.description", "")
    return labels.get(STANDIN_LABEL, "stale" if stale else "")


def import_standin(environ: dict[str, str] | None = None, mirror: str | None = None) -> str:
    """Make ``python:3.11-slim`` a local buildah image from the stand-in (unless present).

    The stand-in also trusts this machine's own CAs (``/usr/local/share/ca-certificates``)
    and points ``SSL_CERT_FILE`` at the bundle, so that pip and uv reach PyPI during
    the build where a proxy inspects TLS; a real ``python:3.11-slim`` is left alone.
    """
    env = buildah_env(environ)
    mirror = mirror or apt_mirror()
    cas = local_cas()
    digest = hashlib.sha256(json.dumps(standin_recipe(mirror), sort_keys=True).encode())
    for ca in cas:
        digest.update(ca.read_bytes())
    key = digest.hexdigest()[:16]
    present = _image_label(BASE_REF, env)  # "" for a real (pulled) image: kept
    if present is not None and present in ("", key):
        log.info("base image %s: already in buildah's storage", BASE_REF)
        return BASE_REF
    tarball = standin_rootfs(mirror)

    def buildah(*args: str) -> str:
        done = subprocess.run(
            ["buildah", *args], capture_output=True, text=True, env=env, check=False
        )
        if done.returncode:
            raise PipelineError(f"buildah {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    ctr = buildah("from", "scratch")
    try:
        buildah("add", ctr, str(tarball), "/")
        extra: list[str] = []
        if cas:
            root = Path(buildah("mount", ctr))
            try:
                folder = root / LOCAL_CAS.relative_to("/")
                folder.mkdir(parents=True, exist_ok=True)
                with (root / BUNDLE.lstrip("/")).open("ab") as bundle:
                    for ca in cas:
                        shutil.copyfile(ca, folder / ca.name)
                        bundle.write(b"\n" + ca.read_bytes())
            finally:
                buildah("umount", ctr)
            extra = ["--env", f"SSL_CERT_FILE={BUNDLE}"]  # uv ships its own roots otherwise
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            *extra,
            "--cmd",
            "python3",
            "--label",
            f"org.opencontainers.image.description=local stand-in for {BASE_IMAGE}",
            "--label",
            f"{STANDIN_LABEL}={key}",
            ctr,
        )
        buildah("commit", "--quiet", ctr, BASE_REF)
    finally:
        buildah("rm", ctr)
    log.info("base image %s: imported the stand-in from %s", BASE_REF, tarball)
    return BASE_REF


def build(archive: Path, engine: str, *, environ: dict[str, str] | None = None) -> str:
    """Build the archive's image with ``engine``; returns the tag (``name:version``)."""
    import bentoml
    from bentoml._internal.container import construct_containerfile

    from tabular_pipeline.serving.cli import import_archive

    tag = import_archive(archive)
    bento = bentoml.bentos.get(tag)
    env = dict(os.environ if environ is None else environ)
    if engine == "buildah":
        env = buildah_env(env)
    with construct_containerfile(bento, enable_buildkit=False) as (context, dockerfile):
        # buildah: no layer cache. With the vfs driver every cached layer is a
        # full copy of the file system (measured: ~30 GB for this Dockerfile);
        # without it, one working container and one final image (~1.6 GB each).
        cmd = ["buildah", "bud", "--layers=false"] if engine == "buildah" else [engine, "build"]
        cmd += ["-f", str(Path(context) / dockerfile), "-t", tag, context]
        log.info("%s", " ".join(cmd))
        done = subprocess.run(cmd, env=env, check=False)
    if done.returncode:
        raise PipelineError(
            f"{engine}: building the image of {tag} failed (exit {done.returncode}); "
            "its output is above"
        )
    return tag


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, help="default: package.out")
    parser.add_argument("--engine", choices=ENGINES, help="default: the first that works")
    parser.add_argument(
        "--standin-base",
        action="store_true",
        help=f"buildah only: make a local {BASE_IMAGE} with debootstrap if it is missing",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tabular_pipeline.config import load_params, parse_section
    from tabular_pipeline.serving.settings import PackageConfig

    try:
        archive = args.archive or Path(parse_section(load_params(), "package", PackageConfig).out)
        os.environ.setdefault("BENTOML_HOME", str(Path(".bentoml").resolve()))
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
        engine = pick_engine(args.engine)
        if args.standin_base:
            if engine != "buildah":
                raise PipelineError("--standin-base: only with buildah (use --engine buildah)")
            import_standin()
        tag = build(archive, engine)
    except PipelineError as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info("built %s with %s", tag, engine)
    print(tag)


if __name__ == "__main__":
    main()
