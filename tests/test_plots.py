"""Plots render offline: DVC's Vega-Lite specs become inline SVG in one page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tabular_pipeline.plots import Chart, dvc_plot_specs, page, render_charts, write_plots_page
from tests.browser import dump_dom, ink, needs_chromium, screenshot

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]},
    "mark": "line",
    "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y"}},
}


def test_render_charts_makes_svg_and_unique_names() -> None:
    payload = {
        "data": {
            "plots/roc/a.csv": [{"type": "vega", "content": SPEC}],
            "roc/a": [{"type": "vega", "content": SPEC}],
            "picture.png": [{"type": "image", "url": "picture.png"}],
        }
    }
    charts = render_charts(payload)
    assert [c.name for c in charts] == ["roc_a", "roc_a_2"]  # a missing image is left out
    assert all(c.svg.startswith("<svg") and "<path" in c.svg for c in charts)


def test_image_plots_are_inlined(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/summary.png").write_bytes(png)
    payload = {"data": {"reports/summary.png": [{"type": "image", "url": "reports/summary.png"}]}}
    [chart] = render_charts(payload, cwd=tmp_path)
    assert chart.png == png and chart.svg.startswith('<img alt="reports/summary.png"')
    assert "data:image/png;base64," in chart.svg
    write_plots_page([chart], tmp_path / "out", "t")
    assert (tmp_path / "out" / f"{chart.name}.png").read_bytes() == png


def test_page_inlines_svg_and_loads_nothing(tmp_path: Path) -> None:
    index = write_plots_page([Chart("p", "p", "<svg><path d='M0 0L1 1'/></svg>")], tmp_path, "t")
    text = index.read_text()
    assert "<svg><path" in text
    assert "<script" not in text and "http" not in text.replace("http://www.w3.org", ""), (
        "the page must not load anything"
    )
    assert (tmp_path / "p.svg").exists()
    assert "No plots found" in page([], "t")


@needs_chromium
def test_project_plots_render_with_networking_disabled(tmp_path: Path) -> None:
    """The committed plots of this repo, as `make plots` renders them, seen in Chromium."""
    charts = render_charts(dvc_plot_specs(cwd=ROOT))
    assert len(charts) >= 5  # roc, precision-recall, calibration, confusion, importance
    index = write_plots_page(charts, tmp_path / "out", "Plots: workspace")
    dom = dump_dom(index.as_uri())
    images = sum(c.png is not None for c in charts)  # e.g. the SHAP summary PNG, inlined
    assert dom.count("<svg") >= len(charts) - images
    assert dom.count("<img") == images
    assert dom.count("<path") > 50  # axes, curves and bars were drawn
    assert ink(screenshot(index.as_uri(), tmp_path / "ours.png")) > 0.03


@needs_chromium
def test_dvc_own_plots_page_is_blank_offline(tmp_path: Path) -> None:
    """Control: the check above tells a drawn page from DVC's CDN-bound one."""
    out = tmp_path / "dvc"
    subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    dom = dump_dom((out / "index.html").as_uri())
    assert "cdn.jsdelivr.net" in (out / "index.html").read_text()
    assert dom.count("<svg") == 0 and "<canvas" not in dom
