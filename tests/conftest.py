"""Shared fixtures: tiny frames for unit tests, a sampled project copy for e2e tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline.config import DataConfig, load_data_config, load_params, parse_section

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Every stage a test starts runs cold unless the test asks for the warm runner
# (tests/test_warm.py, the fresh-clone repro in tests/test_e2e.py): no
# preloading servers competing for the two cores, and per-process-tree checks
# (prlimit, pgrep, peak RSS) see the stage itself.
os.environ["TABULAR_WARM"] = "0"
# A small committed Adult sample laid out like a project (data, data config,
# schema): the tests never read data/raw/adult or conf/data/adult.yaml, so a
# project started from the template (which has neither) keeps its test suite.
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "adult"
GAPMINDER = FIXTURE.parent / "gapminder"  # the regression example, likewise
# Project paths a test copy never takes from the checkout: the checkout's own
# data and example outputs (the fixture provides the data).
NOT_COPIED = ("data/raw/", "dvc.lock", "metrics/", "plots/", "reports/")
T = TypeVar("T")


def fixture_params() -> dict:
    """The fixture's ``data`` section composed as Hydra would (base defaults, then the file)."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(ROOT / "conf" / "base" / "data.yaml")
    own = OmegaConf.load(FIXTURE / "conf" / "data" / "adult.yaml")
    own.pop("defaults", None)
    composed = OmegaConf.create({"data": OmegaConf.merge(base, own)})
    params = OmegaConf.to_container(composed, resolve=True)
    assert isinstance(params, dict)
    return params


@cache
def composed_params() -> dict[str, Any]:
    """params.yaml as conf/ composes it today (defaults only), once per process."""
    from tabular_pipeline import compose

    with tempfile.TemporaryDirectory() as tmp:
        out = compose.compose_params(ROOT, compose.HydraSettings(), [], Path(tmp) / "p.yaml")
        return load_params(out)


def gapminder_params() -> dict[str, Any]:
    """Composed params with the Gapminder regression example as ``data`` (a copy to
    edit), its schema from the fixture: a generated project has neither params.yaml
    nor the example's conf; test_config holds the fixture equal to the example."""
    import copy

    params = copy.deepcopy(composed_params())
    params["data"] = {
        **params["data"],
        "name": "gapminder",
        "target": "lifeexp",
        "task": "regression",
        "drop": ["country", "iso_alpha", "iso_num"],
        "labels": [],
        "positive_label": None,
        "label_map": {},
        "rename": {},
        "source": {"train": "data/raw/gapminder/gapminder.csv.gz", "test": None, "read": {}},
        "schema": str(GAPMINDER / "conf/data/schema/gapminder.yaml"),
    }
    return params


# A toy Optuna search space (every kind of entry) and its objective, for the
# tune tests: cheap trials with a known best.
SPACE = {
    "x": {"type": "float", "low": -2.0, "high": 2.0},
    "n": {"type": "int", "low": 1, "high": 4},
    "layers": {"type": "categorical", "choices": [[8], [8, 8]]},
}


def quadratic(values: dict[str, Any]) -> float:
    return float((values["x"] - 0.5) ** 2 + values["n"] + len(values["layers"]))


def shipped(name: str, schema: type[T]) -> T:
    """A params section exactly as the template ships it: the dataclasses carry no
    defaults, so tests that need a config start from conf/, never from a copy."""
    return parse_section(composed_params(), name, schema)


@pytest.fixture(scope="session")
def adult_cfg() -> DataConfig:
    """The fixture's data config; its paths are relative to ``FIXTURE``."""
    params = fixture_params()
    params["data"]["schema"] = str(FIXTURE / params["data"]["schema"])
    return load_data_config(params)


@pytest.fixture
def toy_frame() -> pd.DataFrame:
    """A small, clean, typed frame with three classes and some missing values."""
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "num": rng.normal(size=n),
            "count": rng.integers(0, 10, size=n),
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], size=n)),
            "label": np.array(["a", "b", "c"])[np.arange(n) % 3],
        }
    )
    frame.loc[::10, "num"] = np.nan
    return frame


def run(
    cmd: list[str],
    cwd: Path,
    check: bool = True,
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a CLI in the project copy with the test environment's tools first on PATH."""
    base = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    base.pop("MLFLOW_TRACKING_URI", None)  # tests use the project's own store unless told
    # A `make` the test runs is a top-level make, however pytest itself was started
    # (under `make test` these would add "Entering directory" lines and a jobserver).
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        base.pop(name, None)
    env = base | (env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def tracked_files() -> list[str]:
    """Files a clean clone would have: tracked plus untracked-but-not-ignored."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def make_project(tmp: Path) -> Path:
    """A git repo holding the project's files, run on the committed Adult fixture.

    The Hydra defaults are set to the fixture's dataset and the hgb model,
    which the end-to-end tests assume whatever the project's own defaults are.
    """
    project = tmp / "project"
    for rel in tracked_files():
        if rel.startswith(NOT_COPIED) or rel == "params.yaml":
            continue
        target = project / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    shutil.copytree(FIXTURE, project, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    config = project / "conf" / "config.yaml"
    text = re.sub(r"(?m)^  - data: .*$", "  - data: adult", config.read_text())
    config.write_text(re.sub(r"(?m)^  - model: .*$", "  - model: hgb", text))
    write_params(project, config)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "sampled project")
    return project


def write_params(project: Path, config: Path) -> None:
    """params.yaml for the copy: the checkout's when its config is the same, else composed."""
    if (ROOT / "params.yaml").exists() and config.read_text() == (
        ROOT / "conf" / "config.yaml"
    ).read_text():
        shutil.copy2(ROOT / "params.yaml", project / "params.yaml")
        return
    from tabular_pipeline import compose

    compose.compose_params(project, compose.HydraSettings(), [])


def git(cwd: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout


def ran_stages(output: str) -> list[str]:
    """Stage names DVC reports as run, in order."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]


# Slow modules by the length of their longest tests: a 2-3 minute test that
# starts last would leave the other worker idle at the end.
LONGEST_FIRST = {
    name: rank
    for rank, name in enumerate(
        [
            "test_torch_e2e",
            "test_regression_e2e",
            "test_gbdt_e2e",
            "test_e2e",
            "test_e2e_trust",
            "test_team",
            "test_serving_e2e",
        ]
    )
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first, and among them those that need no built project first.

    With two xdist workers this keeps both cores busy: one worker builds the
    shared project while the other starts on a test that builds its own, and
    the many short unit tests at the end even out the finish.

    Tests marked ``exhaustive`` belong to `make test-exhaustive`: they are
    deselected unless a ``-m`` expression is given (which then decides).
    """
    if not config.getoption("markexpr"):
        exhaustive = [item for item in items if item.get_closest_marker("exhaustive")]
        if exhaustive:
            config.hook.pytest_deselected(items=exhaustive)
            items[:] = [item for item in items if not item.get_closest_marker("exhaustive")]
    order = {id(item): i for i, item in enumerate(items)}

    def key(item: pytest.Item) -> tuple[bool, bool, int, int]:
        slow = item.get_closest_marker("slow") is not None
        uses_build = "built_project" in getattr(item, "fixturenames", ())
        module = LONGEST_FIRST.get(item.path.stem, len(LONGEST_FIRST))
        return (not slow, uses_build, module, order[id(item)])

    items.sort(key=key)


@pytest.fixture(scope="session")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sampled project on which `dvc repro` has run once and which is committed.

    Built once per session: under pytest-xdist the first worker to ask builds
    it in the session's shared temp folder while the others wait on a file
    lock. Tests must treat it as read-only (copy it: the ``project`` fixture),
    so no dvc command ever runs in it after the build.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by every worker of this session
    home = root / "built"
    with FileLock(str(root / "built.lock")):
        if not (home / "done").exists():
            shutil.rmtree(home, ignore_errors=True)
            project = make_project(home)
            run(["dvc", "repro"], project)
            git(project, "add", "-A")
            git(project, "commit", "-q", "-m", "repro")
            (home / "done").touch()
    return home / "project"


@pytest.fixture
def project(built_project: Path, tmp_path: Path) -> Path:
    """A private copy of the built project (outputs, cache and git history included)."""
    copy = tmp_path / "project"
    shutil.copytree(built_project, copy, symlinks=True)
    # The MLflow store records absolute artifact paths: start each copy afresh.
    (copy / "mlflow.db").unlink(missing_ok=True)
    shutil.rmtree(copy / "mlartifacts", ignore_errors=True)
    return copy


@pytest.fixture
def dvc(project: Path) -> Callable[..., subprocess.CompletedProcess]:
    def _dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["dvc", *args], project, check=check)

    return _dvc
