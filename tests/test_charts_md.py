"""DVC plots become Markdown GitHub draws: Mermaid xy-charts and count tables."""

from __future__ import annotations

from tabular_pipeline.charts_md import GRID, plot_markdown


def _item(values: list[dict], encoding: dict | None = None) -> dict:
    spec = {"data": {"values": values}, "encoding": encoding or {}}
    return {"type": "vega", "revisions": ["main", "workspace"], "content": spec}


def test_curves_are_resampled_per_revision() -> None:
    values = [
        {"fpr": x, "tpr": x**0.5, "rev": rev} for rev in ("main", "workspace") for x in (0, 0.25, 1)
    ]
    enc = {
        "x": {"field": "fpr", "type": "quantitative"},
        "y": {"field": "tpr", "type": "quantitative"},
    }
    (block,) = plot_markdown({"data": {"roc": [_item(values, enc)]}})
    lines = [line for line in block.splitlines() if line.strip().startswith("line ")]
    assert len(lines) == 2 and block.startswith("```mermaid\nxychart-beta")
    assert all(line.count(",") == GRID - 1 for line in lines)
    assert '"fpr" 0 --> 1' in block


def test_bars_and_confusion_tables() -> None:
    bars = [
        {"feature": f, "importance": i, "rev": "workspace"} for f, i in (("a", 0.2), ("b", 0.1))
    ]
    enc = {
        "x": {"field": "importance", "type": "quantitative"},
        "y": {"field": "feature", "type": "nominal"},
    }
    conf = [
        {"actual": a, "predicted": p, "rev": "workspace"}
        for a, p in (("x", "x"), ("x", "y"), ("y", "y"), ("y", "y"))
    ]
    payload = {"data": {"imp": [_item(bars, enc)], "cm": [_item(conf)], "pic": [{"type": "image"}]}}
    imp, cm = plot_markdown(payload)
    assert 'x-axis ["a", "b"]' in imp and "bar [0.2, 0.1]" in imp
    assert "| `x` | 1 | 1 |" in cm and "| `y` | 0 | 2 |" in cm


def test_empty_cells_are_skipped_not_fatal() -> None:
    """A fairness rate left empty for a tiny group must not break the report."""
    q = "quantitative"
    bars = [{"group": "a", "tpr": "", "rev": "w"}, {"group": "b", "tpr": "0.5", "rev": "w"}]
    enc = {"x": {"field": "tpr", "type": q}, "y": {"field": "group", "type": "nominal"}}
    curve = [{"epoch": "", "loss": "", "rev": "w"}]
    cenc = {"x": {"field": "epoch", "type": q}, "y": {"field": "loss", "type": q}}
    item = {"type": "vega", "revisions": ["w"]}
    payload = {
        "data": {
            "bars": [item | {"content": {"data": {"values": bars}, "encoding": enc}}],
            "curve": [item | {"content": {"data": {"values": curve}, "encoding": cenc}}],
        }
    }
    (block,) = plot_markdown(payload)
    assert "bar [0.0, 0.5]" in block
