"""A model card generated from the pipeline's own outputs (JSON + Markdown).

Sections follow the Model Card Toolkit / Hugging Face card layout: model
details, intended use, limitations, training data, evaluation (with
confidence intervals), fairness (per-group metrics with group sizes), drift,
the registry decision and lineage. The text parts come from ``data.card`` in
the dataset config, so a bring-your-own dataset writes its own.

The card in ``reports/`` is deterministic: lineage is content hashes, never
run ids, timestamps or the git commit (which changes when the card itself is
committed). :func:`with_run_lineage` adds those for the copy logged to MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tabular_pipeline import stage
from tabular_pipeline.config import DataConfig
from tabular_pipeline.reporting import lineage

SCHEMA = "tabular-pipeline/model-card/v1"


def build(
    *,
    model_name: str,
    model_cfg: dict[str, Any],
    seed: int,
    registry: dict[str, Any],
    data: dict[str, Any],
    text: dict[str, str],
    evaluation: dict[str, Any],
    fairness: dict[str, Any],
    drift: dict[str, Any],
    drift_top: list[dict[str, Any]],
    decision: dict[str, Any],
    lineage: dict[str, Any],
    versions: dict[str, str],
) -> dict[str, Any]:
    keys = (
        ("rmse", "mae", "r2", "mape")
        if "rmse" in evaluation
        else ("accuracy", "f1_macro", "roc_auc", "log_loss")
    )
    headline = {k: evaluation.get(k) for k in keys}
    return {
        "schema": SCHEMA,
        "model_details": {
            "name": model_name,
            "type": str(model_cfg.get("_target_", "")),
            "params": {k: v for k, v in model_cfg.items() if k != "_target_"},
            "seed": seed,
            "registry": registry,
            "frameworks": versions,
        },
        "intended_use": text.get("intended_use", ""),
        "limitations": text.get("limitations", ""),
        "training_data": {
            "description": text.get("description", ""),
            "citation": text.get("citation", ""),
            **data,
        },
        "evaluation": {
            "split": "test",
            "n_rows": evaluation.get("n_rows"),
            "metrics": headline,
            "confidence_intervals": evaluation.get("ci", {}),
            "sampling": evaluation.get("sampling", {}),
            "per_class": evaluation.get("per_class", {}),
        },
        "fairness": fairness,
        "drift": {**drift, "most_drifted_columns": drift_top},
        "decision": decision,
        "lineage": lineage,
    }


def explanations(summary: dict[str, Any]) -> dict[str, Any]:
    """The card's "what drives the model" section from the explain stage's summary."""
    exactness = (
        f"exact: base value + contributions reproduce the model's {summary['space']} "
        f"(max error {summary['max_additivity_error']:.1g} on these rows)"
        if summary["exact"]
        else f"approximate ({summary.get('approximate_reason') or 'sampled'}): the "
        "contributions add up to the output, but each is an estimate"
    )
    note = (
        f"Mean |SHAP| is the average size of a feature's contribution to the model's "
        f"{summary['space']} over {summary['rows']} test rows: how much the model relies on "
        "the feature, not whether the feature causes the outcome. Correlated features share "
        "credit between them; one-hot columns are summed back to their input column. "
        f"Method: {summary['method']}, {exactness}."
    )
    return {
        "method": summary["method"],
        "exact": summary["exact"],
        "space": summary["space"],
        "rows": summary["rows"],
        "top_features": summary["top_features"],
        "note": note,
    }


def split_section(summary: dict[str, Any]) -> dict[str, Any]:
    """How the test rows were held out (split stage's summary), without the leakage details."""
    return {
        k: summary.get(k) for k in ("strategy", "test_source", "time_column", "group_column")
    } | {
        "splits": summary.get("splits", {}),
        "leakage_passed": summary.get("leakage", {}).get("passed"),
    }


STRATEGY_TEXT = {
    "random": "a seeded random split",
    "stratified": "a seeded random split, stratified on the target",
    "group": "a group split: no value of `{group}` is in two splits, so the test error is "
    "that of an entity the model never saw",
    "time": "a time split on `{time}`: every test row is later than every training row, so the "
    "test error is that of the future",
    "group_time": "a group and time split: test rows are later than training rows and belong to "
    "entities (`{group}`) the model never saw",
}


def _split_lines(card: dict[str, Any]) -> list[str]:
    sp = card.get("split")
    if not sp:
        return []
    text = STRATEGY_TEXT.get(sp["strategy"], sp["strategy"]).format(
        group=sp.get("group_column"), time=sp.get("time_column")
    )
    source = " The test rows are the source's own test file." if sp["test_source"] == "file" else ""
    lines = [
        "## How the test rows were held out",
        "",
        f"Strategy `{sp['strategy']}`: {text}.{source}",
        "",
    ]
    parts = sp.get("splits", {})
    cols = ["rows"] + [
        c for c in ("groups", "time_min", "time_max") if any(c in p for p in parts.values())
    ]
    lines += _table(["split", *cols], [[n, *(p.get(c) for c in cols)] for n, p in parts.items()])
    return [*lines, ""]


def _cv_lines(card: dict[str, Any]) -> list[str]:
    cv = card.get("cross_validation")
    if not cv:
        return []
    if not cv.get("enabled"):
        return [f"Cross-validation: off ({cv.get('reason')}).", ""]
    conf = round(100 * cv["confidence"])
    lines = [
        f"### Cross-validation ({cv['folds']} folds on train+valid, strategy `{cv['strategy']}`)",
        "",
        f"Mean over folds with a {conf} % interval ({cv['interval']}: it accounts for the "
        "overlapping training sets, so it is wider than a naive one). Compare with the test "
        "metrics above: a test value far outside it says the test split is unusual.",
        "",
    ]
    metrics = [k for k, v in cv.items() if isinstance(v, dict) and "mean" in v]
    lines += _table(
        ["metric", "mean", f"{conf} % CI", "std over folds"],
        [
            [k, cv[k]["mean"], f"{cv[k]['ci_low']:.4f} to {cv[k]['ci_high']:.4f}", cv[k]["std"]]
            for k in metrics
        ],
    )
    return [*lines, ""]


def _explanation_lines(card: dict[str, Any]) -> list[str]:
    ex = card.get("explanations")
    if not ex:
        return []
    lines = ["## What drives the model (SHAP)", "", ex["note"], ""]
    lines += _table(
        ["feature", f"mean abs SHAP ({ex['space']})"],
        [[f["feature"], f["mean_abs_shap"]] for f in ex["top_features"]],
    )
    return [*lines, ""]


def from_artifacts(
    *,
    params: dict[str, Any],
    data: DataConfig,
    registry: dict[str, Any],
    split_dir: Path,
    model_path: Path,
    evaluation: dict[str, Any],
    fairness: dict[str, Any],
    drift: dict[str, Any],
    drift_summary: dict[str, Any],
    decision: dict[str, Any],
) -> dict[str, Any]:
    """The card from the pipeline's own outputs (what ``register`` read and decided)."""
    from tabular_pipeline.models.modeling import task_model_cfg

    return build(
        model_name=registry["model_name"],
        # The estimator that was trained: the model file's regressor block for
        # a regression run (its metrics say which).
        model_cfg=task_model_cfg(
            dict(params["model"]), "regression" if "rmse" in evaluation else "binary"
        ),
        seed=int(params["seed"]),
        registry=registry,
        data=lineage.data_section(data, split_dir),
        text={
            "description": data.card.description,
            "intended_use": data.card.intended_use,
            "limitations": data.card.limitations,
            "citation": data.card.citation,
        },
        evaluation=evaluation,
        fairness=fairness,
        drift={k: v for k, v in drift_summary.items() if k not in ("columns", "prediction")}
        | {"gate_passed": drift["gate_passed"]},
        drift_top=lineage.top_drifted(drift_summary, 5),
        decision=decision,
        lineage=lineage.hashes(model_path, split_dir),
        versions=lineage.framework_versions(),
    )


def write(card: dict[str, Any], card_dir: Path) -> None:
    stage.write_json(card_dir / "model_card.json", card)
    stage.write_text(card_dir / "model_card.md", to_markdown(card))


def with_run_lineage(
    card: dict[str, Any], run_id: str | None, commit: str | None
) -> dict[str, Any]:
    """The MLflow copy: same card plus the run id and git commit (random or self-referential)."""
    out = json.loads(json.dumps(card))
    out["lineage"]["mlflow_run_id"] = run_id
    out["lineage"]["git_commit"] = commit
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def to_markdown(card: dict[str, Any]) -> str:
    d = card["model_details"]
    reg = d["registry"]
    ev = card["evaluation"]
    lines = [
        f"# Model card: {d['name']}",
        "",
        "Generated by the pipeline's `register` stage from its own outputs; do not edit.",
        "",
        "## Model details",
        "",
        f"- **Type**: `{d['type']}` (seed {d['seed']})",
        f"- **Registry**: `{reg.get('model_name')}` version {reg.get('version')}; "
        f"alias `{reg.get('alias')}`: "
        + ("points here" if reg.get("is_alias_target") else "not this version"),
        "- **Frameworks**: " + ", ".join(f"{k} {v}" for k, v in sorted(d["frameworks"].items())),
        "",
        "Parameters:",
        "",
        *_table(["parameter", "value"], [[k, v] for k, v in sorted(d["params"].items())]),
        "",
        "## Intended use",
        "",
        card["intended_use"] or "_Not stated: set `data.card.intended_use` in the data config._",
        "",
        "## Limitations",
        "",
        card["limitations"] or "_Not stated: set `data.card.limitations` in the data config._",
        "",
        "## Training data",
        "",
        card["training_data"]["description"] or "_No description in `data.card`._",
        "",
    ]
    td = card["training_data"]
    lines += _table(
        ["split", "rows", "md5"],
        [[s, td["rows"].get(s), td["md5"].get(s)] for s in sorted(td["rows"])],
    )
    if td.get("citation"):
        lines += ["", f"Citation: {td['citation']}"]
    lines += ["", "## Evaluation (test split)", ""]
    ci = ev["confidence_intervals"]
    lines += _table(
        ["metric", "value", "95 % CI"],
        [
            [
                k,
                v,
                f"{ci[k]['low']:.4f} to {ci[k]['high']:.4f}" if k in ci else "-",
            ]
            for k, v in ev["metrics"].items()
        ],
    )
    lines += ["", sampling_note(ev["n_rows"], ev.get("sampling", {})), ""]
    lines += _cv_lines(card)
    lines += _split_lines(card)
    lines += ["## Fairness", ""]
    fair = card["fairness"]
    if not fair.get("columns"):
        lines += ["_No sensitive columns configured (`data.sensitive`)._", ""]
    elif fair.get("task") == "regression":
        lines += _regression_fairness(fair)
    else:
        lines += [
            f"Positive class `{fair['positive_label']}`. Gaps over groups with at least "
            f"{fair['min_group_size']} test rows.",
            "",
        ]
        for column, info in fair["columns"].items():
            lines += [
                f"### {column}",
                "",
                f"Demographic parity difference {_fmt(info['dpd'])}, ratio "
                f"{_fmt(info['dpr'])}; equalized-odds difference {_fmt(info['eod'])}.",
                "",
            ]
            lines += _table(
                ["group", "size", "base rate", "selection rate", "accuracy", "TPR", "FPR"],
                [
                    [
                        g["group"],
                        g["size"],
                        g["base_rate"],
                        g["selection_rate"],
                        g["accuracy"],
                        g["tpr"],
                        g["fpr"],
                    ]
                    for g in info["groups"]
                ],
            )
            lines.append("")
    lines += _explanation_lines(card)
    dr = card["drift"]
    lines += [
        "## Drift",
        "",
        f"Reference: {dr.get('reference')}; current: {dr.get('current')}. "
        f"Drifted feature columns: {dr.get('n_drifted')} of {dr.get('n_columns')} "
        f"(share {_fmt(dr.get('drift_share'))}); prediction drift: "
        f"{_fmt(dr.get('prediction_drifted'))}; gate passed: {_fmt(dr.get('gate_passed'))}."
        + _drift_sample(dr),
        "",
    ]
    if dr["most_drifted_columns"]:
        lines += _table(
            ["column", "method", "score", "threshold", "drifted"],
            [
                [c["column"], c["method"], c["score"], c["threshold"], c["drifted"]]
                for c in dr["most_drifted_columns"]
            ],
        )
        lines.append("")
    dec = card["decision"]
    directions = dec.get("directions") or {}
    lines += [
        "## Registry decision",
        "",
        f"**{dec['decision']}** (promoted: {_fmt(dec['promoted'])}).",
        "",
    ]
    lines += _table(
        ["gate", "passed", "value", "threshold", "direction"],
        [
            [k, g["passed"], g["value"], g["threshold"], directions.get(k.split(".", 1)[-1])]
            for k, g in dec["gates"].items()
        ],
    )
    lines += _comparison(dec)
    lin = card["lineage"]
    lines += ["", "## Lineage", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in lin.items() if not isinstance(v, dict)]
    for k, v in lin.items():
        if isinstance(v, dict):
            lines += [f"- **{k}**:"] + [f"  - `{p}`: `{h}`" for p, h in sorted(v.items())]
    lines.append("")
    return "\n".join(lines)


def _comparison(dec: dict[str, Any]) -> list[str]:
    """The paired comparison with the champion: Δ, its interval, the mode and margin."""
    cmp = dec.get("compare")
    if not cmp:
        return []
    level = f"{cmp['confidence']:.0%}".replace("%", " %")
    lines = [
        "",
        f"Compared with champion v{cmp['champion_version']} on the same test rows "
        f"({cmp['mode']}, {level} paired bootstrap intervals, {cmp['n_resamples']:,} draws of "
        f"{cmp['resampled']}); {cmp['error_control']}.",
        "",
    ]
    rows = [
        [
            k.split(".", 1)[1],
            g["new"],
            g["champion"],
            g["delta"],
            f"[{_fmt(g['low'])}, {_fmt(g['high'])}]",
            g["margin"],
            g["passed"],
        ]
        for k, g in dec["gates"].items()
        if k.startswith("compare.")
    ]
    return lines + _table(["metric", "new", "champion", "Δ", "interval", "margin", "passed"], rows)


def _regression_fairness(fair: dict[str, Any]) -> list[str]:
    """Per-group error of a regressor: where it is less accurate, and biased which way."""
    lines = [
        f"Per group: mean target and prediction, MAE and mean residual (prediction - "
        f"actual: > 0 over-predicts). Gap = largest MAE difference over groups with at "
        f"least {fair['min_group_size']} test rows, with a bootstrap 95 % CI.",
        "",
    ]
    for column, info in fair["columns"].items():
        ci = info.get("mae_gap_ci") or {}
        interval = f" (95 % CI {_fmt(ci.get('low'))} to {_fmt(ci.get('high'))})" if ci else ""
        lines += [
            f"### {column}",
            "",
            f"Largest MAE gap {_fmt(info.get('mae_gap'))}{interval}: "
            f"{_fmt(info.get('worst_group'))} vs {_fmt(info.get('best_group'))}.",
            "",
        ]
        lines += _table(
            ["group", "n", "mean target", "mean prediction", "MAE", "mean residual"],
            [
                [
                    g["group"],
                    g["size"],
                    g["mean_target"],
                    g["mean_prediction"],
                    g["mae"],
                    g["mean_residual"],
                ]
                for g in info["groups"]
            ],
        )
        lines.append("")
    return lines


def sampling_note(n_rows: Any, sampling: dict[str, Any]) -> str:
    """What each estimate was computed on: on a large test split, CIs and importance use samples."""
    if not sampling:
        return f"{n_rows} test rows; intervals: seeded percentile bootstrap."
    boot, test = sampling["bootstrap_rows"], sampling["test_rows"]
    on = "all test rows" if boot == test else f"a seeded sample of {boot:,} of them"
    note = (
        f"{test:,} test rows (the metrics use all of them). Intervals: seeded percentile "
        f"bootstrap, {sampling['bootstrap_resamples']:,} resamples of {on}"
    )
    if boot != test:
        note += " (so wider than the whole split's would be)"
    return (
        f"{note}. Permutation importance: {sampling['importance_rows']:,} rows x "
        f"{sampling['importance_repeats']} repeats."
    )


def _drift_sample(drift: dict[str, Any]) -> str:
    """Above drift.max_rows a side, Evidently compared seeded samples: say how large."""
    rows, total = drift.get("rows") or {}, drift.get("rows_sampled_from") or {}
    if not rows or not total or rows == total:
        return ""
    return (
        f" Compared on seeded samples: {rows['reference']:,} of {total['reference']:,} "
        f"reference rows, {rows['current']:,} of {total['current']:,} current rows."
    )
