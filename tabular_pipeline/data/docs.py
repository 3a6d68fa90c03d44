"""Validation reports a person can read offline, and Data Docs that are reproducible.

GX Data Docs pull their CSS/JS from CDNs (unstyled offline) and embed load
times and random ids (a new hash every run, so a fresh clone's `make repro`
would dirty `dvc.lock`). The Data Docs are kept for people with a network and
normalised here; ``summary.html`` and ``summary.md`` are self-contained.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

GX_TIME = re.compile(r"\b\d{8}T\d{6}\.\d{6}Z\b")
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
FIXED_TIME = "19700101T000000.000000Z"


def normalise_html(text: str) -> str:
    """Fixed times, and uuids renumbered by first appearance (links within a page still match)."""
    text = GX_TIME.sub(FIXED_TIME, text)
    seen: dict[str, str] = {}

    def renumber(match: re.Match[str]) -> str:
        return seen.setdefault(match.group(0), f"00000000-0000-4000-8000-{len(seen):012d}")

    return UUID.sub(renumber, text)


def normalise_data_docs(docs_dir: Path) -> int:
    """Rewrite every Data Docs page in place; return how many pages there are."""
    pages = sorted(docs_dir.rglob("*.html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        fixed = normalise_html(text)
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")
    return len(pages)


def _rule(kwargs: dict[str, Any]) -> str:
    parts = []
    for key, value in kwargs.items():
        if key in ("column", "batch_id"):
            continue
        if isinstance(value, list) and len(value) > 8:
            value = [*value[:8], f"... {len(value) - 8} more"]
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def _observed(item: dict[str, Any]) -> str:
    res = item.get("result") or {}
    info = item.get("exception_info") or {}
    if info.get("raised_exception"):
        return f"error: {info.get('exception_message')}"
    if "observed_value" in res:
        return str(res["observed_value"])
    if "unexpected_count" in res:
        text = f"{res['unexpected_count']} of {res.get('element_count')} rows unexpected"
        if res.get("unexpected_count"):
            text += f" ({res.get('unexpected_percent', 0.0):.2f} %)"
        return text
    return ""


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per expectation, failures first, then by column."""
    out = []
    for item in result.get("results", []):
        cfg = item.get("expectation_config", {})
        kwargs = cfg.get("kwargs", {})
        out.append(
            {
                "ok": bool(item.get("success")),
                "column": str(kwargs.get("column", "(table)")),
                "expectation": str(cfg.get("type", "")),
                "rule": _rule(kwargs),
                "observed": _observed(item),
            }
        )
    return sorted(out, key=lambda r: (r["ok"], r["column"], r["expectation"]))


def _stats_line(table: dict[str, Any]) -> str:
    s = table.get("statistics", {})
    return (
        f"{s.get('successful_expectations')} of {s.get('evaluated_expectations')} "
        "expectations met"
    )


def summary_markdown(report: dict[str, Any], dataset: str) -> str:
    status = "passed" if report.get("success") else "FAILED"
    lines = [f"# Validation of `{dataset}`: {status}", ""]
    for name, table in report.get("tables", {}).items():
        lines += [f"## {name}: {_stats_line(table)}", ""]
        lines += ["| | column | expectation | rule | observed |", "|---|---|---|---|---|"]
        for row in rows(table.get("result", {})):
            cells = [
                "ok" if row["ok"] else "**FAIL**",
                f"`{row['column']}`",
                row["expectation"],
                row["rule"],
                row["observed"],
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
h1 .ok{color:#1a7f37} h1 .fail{color:#cf222e}
table{border-collapse:collapse;margin:0 0 2em;width:100%}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} tr.fail td{background:#ffebe9} td.status{font-weight:600}
code{font-family:ui-monospace,Menlo,Consolas,monospace}
"""


def summary_html(report: dict[str, Any], dataset: str) -> str:
    ok = bool(report.get("success"))
    status = '<span class="ok">passed</span>' if ok else '<span class="fail">FAILED</span>'
    body = [f"<h1>Validation of <code>{html.escape(dataset)}</code>: {status}</h1>"]
    for name, table in report.get("tables", {}).items():
        body.append(f"<h2>{html.escape(name)}: {html.escape(_stats_line(table))}</h2>")
        body.append(
            "<table><tr><th></th><th>column</th><th>expectation</th><th>rule</th>"
            "<th>observed</th></tr>"
        )
        for row in rows(table.get("result", {})):
            cls = "ok" if row["ok"] else "fail"
            cells = "".join(
                f"<td>{html.escape(row[k])}</td>" for k in ("expectation", "rule", "observed")
            )
            body.append(
                f'<tr class="{cls}"><td class="status">{"ok" if row["ok"] else "FAIL"}</td>'
                f"<td><code>{html.escape(row['column'])}</code></td>{cells}</tr>"
            )
        body.append("</table>")
    body.append(
        "<p>Full Great Expectations Data Docs: <a href=\"data_docs/index.html\">"
        "data_docs/index.html</a> (styled only with network access).</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Validation: {html.escape(dataset)}</title><style>{STYLE}</style></head>"
        f"<body>\n{chr(10).join(body)}\n</body></html>\n"
    )
