"""System tools some tests need (Chromium, promtool, Prometheus): found on PATH, never installed.

`make test` installs nothing: a test whose tool is missing skips with one line
naming the tool and how to get it, and pytest's `-ra` summary lists every such
skip at the end of the run. Under CI (`CI=true`) a missing tool is a failure
instead, since `.ci/run` installs them and a skip there would hide a regression.
"""

from __future__ import annotations

import os
import shutil

import pytest

# How to get each tool; Debian's package names (`.ci/run` installs them).
HOW = {
    "chromium": "install your system's chromium (Debian/Ubuntu: apt-get install chromium)",
    "promtool": "install Prometheus's promtool (Debian/Ubuntu: apt-get install prometheus)",
    "prometheus": "install the Prometheus server (Debian/Ubuntu: apt-get install prometheus)",
}


def find(*names: str) -> str | None:
    """The first of ``names`` on PATH."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing(tool: str) -> str:
    """The one-line skip reason for ``tool``."""
    return f"{tool} not found on PATH: {HOW[tool]} to run this test"


def needs(tool: str, *alternatives: str) -> pytest.MarkDecorator:
    """Skip (fail under CI) when neither ``tool`` nor an alternative is on PATH."""
    absent = find(tool, *alternatives) is None
    return pytest.mark.skipif(absent and os.environ.get("CI") != "true", reason=missing(tool))


def require(tool: str) -> None:
    """Inside a test, after its other checks: skip (fail under CI) for a missing tool."""
    if os.environ.get("CI") == "true":
        pytest.fail(missing(tool) + " (under CI, where .ci/run installs it)")
    pytest.skip(missing(tool))
