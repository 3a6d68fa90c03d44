"""Markdown report of the workspace against a base git revision, for PR comments.

``make report BASE=main`` (or ``python -m tabular_pipeline.report``) writes
``reports/pr/report.md`` with the params and metrics diffs (DVC's own tables,
including deltas) and draws the plots of both revisions overlaid, as SVG that
renders offline, to ``reports/pr/plots/`` (see ``tabular_pipeline.plots``).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from tabular_pipeline.charts_md import plot_markdown
from tabular_pipeline.plots import dvc_plot_specs, render_charts, write_plots_page

log = logging.getLogger(__name__)


def dvc(*args: str) -> str:
    """Run the DVC CLI of this environment and return its stdout."""
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed:\n{proc.stderr.strip()}")
    return proc.stdout.strip()


def section(title: str, body: str, empty: str) -> str:
    return f"## {title}\n\n{body if body else empty}\n"


def build_report(base: str, out_dir: Path, plots_url: str | None = None) -> Path:
    """Write report.md (and the plots HTML) comparing the workspace with ``base``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    params = dvc("params", "diff", base, "--md")
    metrics = dvc("metrics", "diff", base, "--md", "--precision", "4")
    plots_dir = out_dir / "plots"
    payload = dvc_plot_specs([base])
    write_plots_page(render_charts(payload), plots_dir, f"Plots: {base} vs workspace")
    drawn = "\n\n".join(plot_markdown(payload))
    where = (
        f"[the CI run]({plots_url}) (artifact `pipeline-report`, file `plots/index.html`)"
        if plots_url
        else "[plots/index.html](plots/index.html)"
    )
    parts = [
        f"# Pipeline report: workspace vs `{base}`\n",
        section("Params", params, f"No params changed against `{base}`."),
        section("Metrics", metrics, f"No metrics changed against `{base}`."),
        section(
            "Plots",
            f"Series in each chart, in order: `{base}`, then the workspace. Full-resolution "
            f"plots of both revisions, overlaid: {where} (renders offline).\n\n{drawn}",
            "",
        ),
    ]
    report = out_dir / "report.md"
    report.write_text("\n".join(parts), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--out", default="reports/pr", type=Path, help="output folder")
    parser.add_argument("--plots-url", default=None, help="link to published plots HTML")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    report = build_report(args.base, args.out, args.plots_url)
    log.info("wrote %s and %s", report, args.out / "plots" / "index.html")


if __name__ == "__main__":
    main()
