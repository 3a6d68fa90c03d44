"""Markdown report of the workspace against a base git revision, for PR comments.

``make report BASE=main`` (or ``python -m tabular_pipeline.report``) writes
``reports/pr/report.md`` with the params and metrics diffs (DVC's own tables,
including deltas), a paired comparison of the two revisions' models on the
same test rows (Δ, its bootstrap interval and a verdict per headline metric,
see docs/comparing-models.md), and draws the plots of both revisions
overlaid, as SVG that renders offline, to ``reports/pr/plots/`` (see
``tabular_pipeline.plots``).
"""

from __future__ import annotations

import argparse
import io
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

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


# Headline test metrics compared per row (metrics.TEST_HEADLINE without n_rows).
HEADLINE = {
    "classification": ("accuracy", "f1_macro", "log_loss", "roc_auc"),
    "regression": ("rmse", "mae", "r2", "mape"),
}
# The gate's settings when params.yaml has no register.compare (an older revision).
DEFAULTS = {"confidence": 0.95, "n_resamples": 2000, "seed": 0}


def scored_rows(table: pd.DataFrame) -> Any:
    """evaluate's per-row predictions file as ``resampling.Scored``."""
    from tabular_pipeline.evaluation import resampling

    proba_cols = [c for c in table.columns if str(c).startswith("proba_")]
    if proba_cols:
        classes = [str(c)[len("proba_") :] for c in proba_cols]
        return resampling.classification(table["actual"], table[proba_cols].to_numpy(), classes)
    return resampling.regression(table["actual"], table["predicted"])


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def same_rows(base: pd.DataFrame, head: pd.DataFrame) -> tuple[bool, str]:
    """Whether the two revisions scored the same test rows, in the same order, and how known."""
    if "row_id" in base.columns and "row_id" in head.columns:
        same = len(base) == len(head) and np.array_equal(base["row_id"], head["row_id"])
        return same, "row ids"
    # A base written before evaluate recorded row ids: labels and count are all there is.
    same = len(base) == len(head) and np.array_equal(
        base["actual"].astype(str), head["actual"].astype(str)
    )
    return same, "row count and labels (the base's predictions have no row ids)"


def compare_predictions(
    base: pd.DataFrame,
    head: pd.DataFrame,
    base_name: str,
    settings: dict[str, Any],
    groups: Any = None,
) -> str:
    """The paired-comparison section: Δ = workspace - base per headline metric.

    Paired (same resampled rows for both models) when both revisions scored
    the same test rows; otherwise one line says the rows differ and each
    model's numbers on its own rows are shown, without an interval.
    """
    from tabular_pipeline.evaluation import resampling

    new, old = scored_rows(head), scored_rows(base)
    metrics = [
        m
        for m in HEADLINE[new.task]
        if not (m == "mape" and ((new.y == 0).any() or (old.y == 0).any()))
    ]
    if new.task != old.task:
        return (
            f"The base `{base_name}` has a {old.task} model and the workspace a "
            f"{new.task} model: no comparison.\n"
        )
    same, how = same_rows(base, head)
    if not same or new.classes != old.classes:
        common = len(set(base.get("row_id", [])) & set(head.get("row_id", [])))
        rows = [
            [m, _fmt(d["old"]), _fmt(d["new"]), _fmt(d["delta"], signed=True)]
            for m, d in resampling.unpaired(new, old, metrics).items()
        ]
        line = (
            f"The test rows differ between `{base_name}` and the workspace ({len(base):,} vs "
            f"{len(head):,} rows"
            + (f", {common:,} in common" if "row_id" in base.columns else "")
            + "): the data changed, so these are unpaired numbers, each model on its own "
            "test rows, with no interval for the difference."
        )
        return "\n".join([line, "", *_md(["metric", base_name, "workspace", "Δ"], rows), ""])
    conf, draws, seed = settings["confidence"], settings["n_resamples"], settings["seed"]
    diffs = resampling.paired(new, old, metrics, draws, conf, seed, groups=groups)
    level = f"{conf:.0%}".replace("%", " %")
    rows = []
    for m, d in diffs.items():
        rows.append(
            [
                m,
                _fmt(d.old),
                _fmt(d.new),
                _fmt(d.delta, signed=True),
                f"[{_fmt(d.low, signed=True)}, {_fmt(d.high, signed=True)}]",
                f"{d.direction}",
                "n/a" if d.share_better is None else f"{d.share_better:.0%}",
                f"**{d.verdict}**",
            ]
        )
    acc = diffs.get("accuracy")
    notes = [
        f"Both models on the same {len(new):,} test rows (matched by {how}); Δ = workspace - "
        f"`{base_name}`, {level} paired bootstrap interval ({draws:,} draws of "
        f"{'whole groups' if groups is not None else 'rows'}, the same draws for both models, "
        f'seed {seed}). A verdict is "better"/"worse" when the interval excludes 0 '
        "(each metric on its own, not adjusted for looking at several).",
    ]
    if acc is not None and acc.mcnemar_p is not None:
        notes.append(
            "Accuracy, exact McNemar test on the rows where exactly one model is right: "
            f"p = {acc.mcnemar_p:.4g}."
        )
    header = [
        "metric",
        base_name,
        "workspace",
        "Δ",
        f"{level} interval",
        "better is",
        "draws better",
        "verdict",
    ]
    return "\n".join([" ".join(notes[:1]), "", *_md(header, rows), "", *notes[1:], ""])


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(map(str, r)) + " |" for r in rows],
    ]


def _params(text: str | None) -> dict[str, Any]:
    return (yaml.safe_load(text) or {}) if text else {}


def git_show(rev: str, path: str) -> str | None:
    proc = subprocess.run(
        ["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False
    )
    return proc.stdout if proc.returncode == 0 else None


def paired_section(base: str) -> str:
    """Both revisions' per-row test predictions (the base's through DVC), compared."""
    import dvc.api

    here = Path("params.yaml")
    params = _params(here.read_text(encoding="utf-8") if here.exists() else None)
    base_params = _params(git_show(base, "params.yaml"))
    path = (params.get("evaluate") or {}).get("predictions_out")
    if not path:
        return "No `evaluate.predictions_out` in params.yaml: no per-row comparison.\n"
    if not Path(path).exists():
        return f"No per-row predictions in the workspace (`{path}`): run `make repro` first.\n"
    base_path = (base_params.get("evaluate") or {}).get("predictions_out") or path
    try:
        with dvc.api.open(base_path, rev=base, mode="rb") as f:
            base_table = pd.read_parquet(io.BytesIO(f.read()))
    except Exception as err:  # any DVC/git failure: the report still has the rest
        log.warning("base predictions %s@%s: %s", base_path, base, err)
        return (
            f"No per-row predictions of `{base}` (`{base_path}` through DVC: "
            f"{type(err).__name__}; is its output in the cache or a remote? `dvc pull` it): "
            "no paired comparison.\n"
        )
    head_table = pd.read_parquet(path)
    settings = DEFAULTS | {
        k: v
        for k, v in ((params.get("register") or {}).get("compare") or {}).items()
        if k in DEFAULTS
    }
    groups = None
    column = (params.get("data") or {}).get("group_column")
    test_path = Path((params.get("split") or {}).get("out_dir", "")) / "test.parquet"
    if column and test_path.exists():
        test = pd.read_parquet(test_path, columns=None)
        if column in test.columns and len(test) == len(head_table):
            groups = test[column].to_numpy()
    return compare_predictions(base_table, head_table, base, settings, groups)


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
            "Is the workspace model better? Paired comparison on the test rows",
            paired_section(base),
            "",
        ),
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
