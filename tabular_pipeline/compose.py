"""Compose ``conf/`` into ``params.yaml`` exactly as ``dvc exp run`` does.

DVC composes Hydra config only on ``dvc exp run`` and never notices edits
under ``conf/`` (DVC issues #10750, #8355). The ``compose`` stage closes that
gap: it depends on ``conf/`` and rewrites ``params.yaml`` with DVC's own
``compose_and_dump``, so both paths produce byte-identical params. It must not
declare ``params.yaml`` as an output: DVC would restore that output during
``exp run`` and silently drop the ``-S`` overrides.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HydraSettings:
    """Where the config lives; mirrors the ``[hydra]`` section of ``.dvc/config``."""

    config_dir: str = "conf"
    config_name: str = "config"


def hydra_settings(root: Path) -> HydraSettings:
    """Read the same ``[hydra]`` settings ``dvc exp run`` uses."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        section = dict(repo.config.get("hydra", {}))
    if not section.get("enabled", False):
        log.warning(".dvc/config: hydra is not enabled; `dvc exp run -S` will not compose")
    return HydraSettings(
        config_dir=section.get("config_dir", "conf"),
        config_name=section.get("config_name", "config"),
    )


def compose_params(
    root: Path, settings: HydraSettings, overrides: list[str], out: Path | None = None
) -> Path:
    """Write the composed config to ``out`` (default ``root/params.yaml``)."""
    from dvc.utils.hydra import compose_and_dump

    target = out or root / "params.yaml"
    compose_and_dump(
        str(target),
        str((root / settings.config_dir).resolve()),
        None,
        settings.config_name,
        str(root),
        overrides,
    )
    return target


def running_dvc_experiment() -> str | None:
    """Name of the DVC experiment being run, if any (DVC sets it for stage commands)."""
    return os.environ.get("DVC_EXP_NAME") or None


def marker(settings: HydraSettings) -> dict[str, object]:
    """Constant content on purpose: downstream stages order after compose, never rerun by it."""
    return {"composed_from": asdict(settings)}
