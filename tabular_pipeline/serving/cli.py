"""``make serve``: import the built archive into a project-local store and serve it.

    python -m tabular_pipeline.serving.cli [--port N] [--host H] [--archive PATH]

The BentoML store is ``$BENTOML_HOME`` if set, else ``.bentoml/`` in the
project (git-ignored), never ``~/bentoml``. Host and port default to the
``serve`` params.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tarfile
from pathlib import Path

import yaml

from tabular_pipeline.config import load_params, parse_section
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.serving.runtime import CWD_ENV
from tabular_pipeline.serving.settings import PackageConfig, ServeConfig

log = logging.getLogger("serve")


def archive_tag(archive: Path) -> str:
    """``name:version`` recorded in the archive's bento.yaml."""
    if not archive.exists():
        raise PipelineError(f"{archive}: no serving artifact; run `make repro` first")
    with tarfile.open(archive, "r:*") as tar:
        names = [n for n in ("./bento.yaml", "bento.yaml") if n in tar.getnames()]
        member = tar.extractfile(names[0]) if names else None
        if member is None:
            raise PipelineError(f"{archive}: not a Bento archive (no bento.yaml)")
        info = yaml.safe_load(member.read())
    return f"{info['name']}:{info['version']}"


def import_archive(archive: Path) -> str:
    """Import into the current BENTOML_HOME unless that exact version is already there."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag = archive_tag(archive)
    try:
        bentoml.bentos.get(tag)
    except NotFound:
        bentoml.bentos.import_bento(str(archive.resolve()))
    return tag


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--archive", type=Path)
    parser.add_argument("--import-only", action="store_true", help="print the tag and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params()
        cfg = parse_section(params, "package", PackageConfig)
        serve = parse_section(params, "serve", ServeConfig)
        os.environ.setdefault("BENTOML_HOME", str(Path(".bentoml").resolve()))
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
        os.environ.setdefault(CWD_ENV, str(Path.cwd()))
        tag = import_archive(args.archive or Path(cfg.out))
    except PipelineError as exc:
        log.error("%s", exc)
        sys.exit(1)
    if args.import_only:
        print(tag)
        return
    host, port = args.host or serve.host, args.port or serve.port
    log.info("serving %s on http://%s:%d (store %s)", tag, host, port, os.environ["BENTOML_HOME"])
    bentoml = Path(sys.executable).with_name("bentoml")
    os.execv(str(bentoml), [str(bentoml), "serve", tag, "--host", host, "--port", str(port)])


if __name__ == "__main__":
    main()
