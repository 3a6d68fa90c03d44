"""DVC plots as Markdown that GitHub draws itself: Mermaid xy-charts and tables.

A PR comment cannot show local images without uploading them somewhere.
GitHub renders Mermaid in comments, so the report carries each plot as a
``xychart-beta`` (curves resampled on an even grid, since Mermaid spaces
points evenly) or, for the confusion matrix, as a table of counts. Mermaid has
no scatter plot: a scatter (predicted vs actual) becomes the mean y per x bin
beside the diagonal y = x.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

GRID = 21  # curve points per series in a comment: readable, and small


def _fields(spec: dict[str, Any]) -> tuple[str, str, str, str] | None:
    enc = spec.get("encoding") or {}
    x, y = enc.get("x") or {}, enc.get("y") or {}
    if "field" not in x or "field" not in y:
        return None
    return x["field"], x.get("type", ""), y["field"], y.get("type", "")


def _num(value: Any) -> float | None:
    """DVC passes CSV cells as text; an empty cell (e.g. a rate for a tiny group) is None."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _series(values: list[dict[str, Any]], revs: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {rev: [v for v in values if v.get("rev") == rev] for rev in revs}


def _axis(label: str, lo: float, hi: float) -> str:
    return f'"{label}" {lo:.3g} --> {hi:.3g}'


def _curve(title: str, values: list[dict[str, Any]], revs: list[str], f: tuple) -> str:
    xf, _, yf, _ = f
    values = [v for v in values if _num(v[xf]) is not None and _num(v[yf]) is not None]
    if not values:
        return ""
    xs = [float(v[xf]) for v in values]
    ys = [float(v[yf]) for v in values]
    lo, hi = min(xs), max(xs)
    grid = np.linspace(lo, hi, GRID)
    lines = []
    for rows in _series(values, revs).values():
        pts = sorted((float(r[xf]), float(r[yf])) for r in rows)
        if not pts:
            continue
        px, py = zip(*pts, strict=True)
        lines.append(
            "    line " + json.dumps([round(float(v), 4) for v in np.interp(grid, px, py)])
        )
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f'    title "{title}"',
            f"    x-axis {_axis(xf, lo, hi)}",
            f"    y-axis {_axis(yf, min(ys), max(ys))}",
            *lines,
            "```",
        ]
    )


def _scatter(title: str, values: list[dict[str, Any]], revs: list[str], f: tuple) -> str:
    """Mean y per even x bin, one line per revision, and the y = x line to compare."""
    xf, _, yf, _ = f
    values = [v for v in values if _num(v[xf]) is not None and _num(v[yf]) is not None]
    if not values:
        return ""
    xs = np.array([float(v[xf]) for v in values])
    lo, hi = float(xs.min()), float(xs.max())
    edges = np.linspace(lo, hi, GRID + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    lines = ["    line " + json.dumps([round(float(c), 4) for c in centres])]
    ys_all = [float(v[yf]) for v in values]
    for rows in _series(values, revs).values():
        if not rows:
            continue
        rx = np.array([float(r[xf]) for r in rows])
        ry = np.array([float(r[yf]) for r in rows])
        idx = np.clip(np.searchsorted(edges, rx, side="right") - 1, 0, GRID - 1)
        means = []
        for b in range(GRID):
            hit = ry[idx == b]
            # An empty bin repeats the diagonal (Mermaid needs a value per x).
            means.append(round(float(hit.mean()) if len(hit) else float(centres[b]), 4))
        lines.append("    line " + json.dumps(means))
    lo_y, hi_y = min([*ys_all, lo]), max([*ys_all, hi])
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f'    title "{title} (mean per bin; first line: y = x)"',
            f"    x-axis {_axis(xf, lo, hi)}",
            f"    y-axis {_axis(yf, lo_y, hi_y)}",
            *lines,
            "```",
        ]
    )


def _mark(spec: dict[str, Any]) -> str:
    mark = spec.get("mark")
    return str(mark.get("type") if isinstance(mark, dict) else mark or "")


def _bars(title: str, values: list[dict[str, Any]], revs: list[str], f: tuple) -> str:
    xf, _, yf, _ = f  # x quantitative, y the category (horizontal bars in DVC)
    cats = list(dict.fromkeys(str(v[yf]) for v in values))
    bars = []
    for rows in _series(values, revs).values():
        by_cat = {str(r[yf]): _num(r[xf]) for r in rows}
        bars.append("    bar " + json.dumps([round(by_cat.get(c) or 0.0, 4) for c in cats]))
    head = ["```mermaid", "xychart-beta horizontal", f'    title "{title}"']
    axes = [f"    x-axis {json.dumps(cats)}", f'    y-axis "{xf}"']
    return "\n".join([*head, *axes, *bars, "```"])


def _confusion(title: str, values: list[dict[str, Any]], revs: list[str]) -> str:
    out = []
    for rev, rows in _series(values, revs).items():
        counts = Counter((str(r["actual"]), str(r["predicted"])) for r in rows)
        labels = sorted({a for a, _ in counts} | {p for _, p in counts})
        out.append(f"**{title}** (`{rev}`; rows: actual, columns: predicted)\n")
        out.append("| | " + " | ".join(f"`{c}`" for c in labels) + " |")
        out.append("|---" * (len(labels) + 1) + "|")
        for a in labels:
            out.append(
                f"| `{a}` | " + " | ".join(str(counts.get((a, p), 0)) for p in labels) + " |"
            )
        out.append("")
    return "\n".join(out)


def plot_markdown(payload: dict[str, Any]) -> list[str]:
    """One Markdown block per DVC plot; plots of an unknown shape are left out."""
    blocks = []
    for plot_id, items in (payload.get("data") or {}).items():
        for item in items:
            if item.get("type") != "vega":
                continue
            spec = item["content"]
            values = (spec.get("data") or {}).get("values") or []
            revs = list(item.get("revisions") or [])
            if not values:
                continue
            if {"actual", "predicted"} <= set(values[0]):
                blocks.append(_confusion(plot_id, values, revs))
                continue
            f = _fields(spec)
            if f is None:
                continue
            if f[1] == "quantitative" and f[3] == "quantitative":
                draw = _scatter if _mark(spec) in ("point", "circle") else _curve
                curve = draw(plot_id, values, revs, f)
                if curve:
                    blocks.append(curve)
            elif f[1] == "quantitative":
                blocks.append(_bars(plot_id, values, revs, f))
    return blocks
