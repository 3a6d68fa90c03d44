"""Look at pages as a person would: headless Chromium with the network cut off.

Chromium comes from the system (`.ci/run` installs Debian's package; `make
test` installs nothing). Without it the page tests skip locally with the reason
(tests/tools.py), but fail under CI, where a skip would hide a blank page.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tests import tools

# GitHub's runners have google-chrome instead, which works the same here.
CHROMIUM = tools.find("chromium", "google-chrome")
needs_chromium = tools.needs("chromium", "google-chrome")


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, tools.missing("chromium")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # Networking off: every request but loopback (Chromium never proxies
            # it) goes to a closed local port, so a page that needs a CDN
            # renders as it would offline; a service on 127.0.0.1 still answers.
            "--proxy-server=127.0.0.1:9",
            *args,
            url,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def dump_dom(url: str, budget_ms: int = 5000) -> str:
    """The DOM after scripts ran (or failed to load)."""
    return _chromium(url, f"--virtual-time-budget={budget_ms}", "--dump-dom").stdout


def screenshot(
    url: str, png: Path, width: int = 1400, height: int = 1100, budget_ms: int = 5000
) -> Path:
    _chromium(
        url,
        f"--window-size={width},{height}",
        f"--virtual-time-budget={budget_ms}",
        f"--screenshot={png}",
    )
    assert png.exists() and png.stat().st_size > 0
    return png


def ink(png: Path) -> float:
    """Share of pixels that are not (near) white: 0 for a blank page."""
    from PIL import Image

    with Image.open(png) as image:
        gray = image.convert("L")
        hist = gray.histogram()
    total = sum(hist)
    return sum(hist[:240]) / total
