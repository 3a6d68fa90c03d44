"""DVC plots rendered to a page that works offline.

``dvc plots show`` / ``dvc plots diff`` write HTML that loads vega,
vega-lite and vega-embed from a CDN, so with no network the page is blank.
Here DVC still does what it is made for (collecting plot data across
revisions and filling its templates into Vega-Lite specs, ``--json``) and
vl-convert, which bundles the Vega engine, renders each spec to SVG. The page
inlines the SVGs: no script, no network, and the same files serve as images
for a PR comment.

    python -m tabular_pipeline.plots                 # workspace -> dvc_plots/index.html
    python -m tabular_pipeline.plots --rev main      # main vs workspace, overlaid
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabular_pipeline.evaluation.metrics import slug

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chart:
    plot_id: str
    name: str  # file-name-safe and unique
    svg: str  # the SVG, or for an image plot an <img> with the PNG inlined
    png: bytes | None = None  # image plots (e.g. the SHAP summary): the file's bytes


def dvc_plot_specs(revs: list[str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Vega-Lite specs with data inlined, from ``dvc plots show|diff --json``."""
    args = ["plots", "diff", *revs] if revs else ["plots", "show"]
    cmd = [sys.executable, "-m", "dvc", *args, "--json"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)} --json` failed:\n{proc.stderr.strip()}")
    payload: dict[str, Any] = json.loads(proc.stdout)
    for error in payload.get("errors") or []:
        log.warning("dvc plots: %s", error)
    return payload


def _name(plot_id: str, taken: set[str]) -> str:
    return slug(plot_id.removesuffix(".csv").removeprefix("plots/"), taken)


def _image(plot_id: str, item: dict[str, Any], taken: set[str], cwd: Path) -> Chart | None:
    """An image plot inlined as a data URI (no file reference: the page stays self-contained)."""
    import base64

    path = Path(str(item.get("url", "")))
    path = path if path.is_absolute() else cwd / path
    if path.suffix.lower() != ".png" or not path.is_file():
        return None
    data = path.read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    tag = f'<img alt="{html.escape(plot_id)}" src="{uri}">'
    return Chart(plot_id, _name(plot_id.removesuffix(".png"), taken), tag, data)


def render_charts(payload: dict[str, Any], cwd: Path | None = None) -> list[Chart]:
    """One SVG per Vega plot and one inlined PNG per image plot, in DVC's order."""
    import vl_convert as vlc

    charts: list[Chart] = []
    taken: set[str] = set()
    for plot_id, items in (payload.get("data") or {}).items():
        for item in items:
            if item.get("type") == "image":
                image = _image(plot_id, item, taken, cwd or Path.cwd())
                if image is not None:
                    charts.append(image)
                continue
            if item.get("type") != "vega":
                continue
            svg = vlc.vegalite_to_svg(item["content"])
            charts.append(Chart(plot_id, _name(plot_id, taken), svg))
    return charts


STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
.grid{display:flex;flex-wrap:wrap;gap:2em} figure{margin:0}
"""


def page(charts: list[Chart], title: str) -> str:
    figures = "\n".join(
        f'<figure id="{c.name}" title="{html.escape(c.plot_id)}">{c.svg}</figure>' for c in charts
    )
    empty = "" if charts else "<p>No plots found: run <code>make repro</code> first.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        f'<h1>{html.escape(title)}</h1>{empty}\n<div class="grid">\n{figures}\n</div>\n'
        "</body></html>\n"
    )


def write_plots_page(charts: list[Chart], out_dir: Path, title: str) -> Path:
    """index.html with the SVGs inlined, plus each SVG as its own file (for reports)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("*.svg"), *out_dir.glob("*.png")]:
        stale.unlink()
    for chart in charts:
        if chart.png is not None:
            (out_dir / f"{chart.name}.png").write_bytes(chart.png)
        else:
            (out_dir / f"{chart.name}.svg").write_text(chart.svg, encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(page(charts, title), encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render DVC plots to an offline HTML page.")
    parser.add_argument("--rev", action="append", default=[], help="compare with git revision")
    parser.add_argument("--out", type=Path, default=Path("dvc_plots"), help="output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    title = "Plots: " + (" vs ".join([*args.rev, "workspace"]) if args.rev else "workspace")
    charts = render_charts(dvc_plot_specs(args.rev))
    index = write_plots_page(charts, args.out, title)
    log.info("%d plots -> %s", len(charts), index)


if __name__ == "__main__":
    main()
