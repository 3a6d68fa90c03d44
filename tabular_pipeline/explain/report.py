"""The explain stage's artifacts from an ``Explanation``: tables, a summary plot, a summary.

Everything is a pure function of its inputs and a seed: the PNG is
byte-identical across runs (seeded jitter, Agg backend, no software or date
metadata), so DVC sees no change when nothing changed.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.explain.shap_values import Explainer, Explanation


def sample_rows(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A seeded sample (in original order) of at most ``rows`` rows."""
    if len(frame) <= rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=rows, random_state=seed).sort_index().reset_index(drop=True)


def importance_table(explanation: Explanation) -> pd.DataFrame:
    """Global importance: mean |SHAP| per input column, largest first (a DVC bar plot)."""
    importance = explanation.mean_abs().round(6).rename_axis("feature").reset_index()
    return importance.sort_values(
        ["mean_abs_shap", "feature"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def _row_output(explanation: Explanation, reference: np.ndarray) -> np.ndarray:
    """Per row, the output whose contributions are shown: the only one, or the top class."""
    if explanation.values.shape[2] == 1:
        return np.zeros(len(reference), dtype=int)
    return np.asarray(reference).argmax(axis=1)


def row_values(explanation: Explanation, reference: np.ndarray) -> np.ndarray:
    """(n_rows, n_features): each row's contributions to its shown output."""
    chosen = _row_output(explanation, reference)
    return explanation.values[np.arange(len(chosen)), :, chosen]


def group_contributions(
    explanation: Explanation, frame: pd.DataFrame, sensitive: list[str]
) -> dict[str, dict[str, Any]]:
    """Per sensitive column and group: rows and mean signed contribution of every feature.

    Answers "does the model lean on ``sex`` differently by group?": a feature
    whose mean contribution differs a lot between groups pushes their scores
    apart. Multiclass models: averaged over the class outputs.
    """
    values = explanation.values.mean(axis=2)
    out: dict[str, dict[str, Any]] = {}
    for column in sensitive:
        if column not in frame:
            continue
        groups = frame[column].astype(str).where(frame[column].notna(), "(missing)")
        table: dict[str, Any] = {}
        for group in sorted(groups.unique()):
            rows = (groups == group).to_numpy()
            means = values[rows].mean(axis=0)
            table[group] = {
                "size": int(rows.sum()),
                "mean_contribution": {
                    f: round(float(v), 6) for f, v in zip(explanation.features, means, strict=True)
                },
            }
        out[column] = table
    return out


def sensitive_table(groups: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Each sensitive column's own mean contribution per group (a DVC bar plot)."""
    rows = [
        {
            "group": f"{column}={group}",
            "size": info["size"],
            "mean_contribution": info["mean_contribution"][column],
        }
        for column, table in groups.items()
        for group, info in table.items()
    ]
    return pd.DataFrame(rows, columns=["group", "size", "mean_contribution"])


def _colour_values(frame: pd.DataFrame, feature: str) -> np.ndarray:
    """Feature value as a rank in [0, 1] (categories by code), NaN for missing."""
    column = frame[feature]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        ranks = column.rank(pct=True).to_numpy(dtype=np.float64)
    else:
        codes = pd.Categorical(column.astype("string")).codes.astype(np.float64)
        codes[codes < 0] = np.nan
        top = np.nanmax(codes) if np.isfinite(codes).any() else 0.0
        ranks = codes / top if top > 0 else np.zeros_like(codes)
    return ranks


def summary_png(
    explanation: Explanation,
    frame: pd.DataFrame,
    *,
    seed: int,
    top: int = 15,
    reference: np.ndarray | None = None,
) -> bytes:
    """Beeswarm-style summary: one dot per row and feature, x = contribution.

    Colour is the feature's value (low blue, high red; categories by their
    order), y jitter is seeded, so the bytes depend only on the inputs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = explanation.totals() if reference is None else reference
    values = row_values(explanation, ref)
    importance = np.abs(values).mean(axis=0)
    order = np.argsort(-importance, kind="stable")[:top][::-1]
    rng = np.random.default_rng(seed)
    with matplotlib.rc_context({"svg.hashsalt": "tabular-pipeline", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(order) + 1.4), dpi=100)
        for y, j in enumerate(order):
            feature = explanation.features[j]
            colour = _colour_values(frame, feature)
            jitter = rng.uniform(-0.3, 0.3, size=len(values))
            missing = np.isnan(colour)
            ax.scatter(
                values[~missing, j],
                y + jitter[~missing],
                c=colour[~missing],
                cmap="coolwarm",
                vmin=0,
                vmax=1,
                s=6,
                alpha=0.6,
                linewidths=0,
                rasterized=True,
            )
            if missing.any():
                ax.scatter(values[missing, j], y + jitter[missing], c="#999999", s=6, alpha=0.6)
        ax.axvline(0.0, color="#444444", linewidth=0.8)
        ax.set_yticks(range(len(order)), [explanation.features[j] for j in order])
        ax.set_xlabel(f"contribution ({explanation.space}); colour: feature value, low -> high")
        ax.set_title(f"SHAP summary: {explanation.method}, {len(values)} test rows")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        plt.close(fig)
    return buffer.getvalue()


def summary(
    explanation: Explanation,
    explainer: Explainer,
    reference: np.ndarray,
    importance: pd.DataFrame,
    top: int,
) -> dict[str, Any]:
    """What the model card and the PR report read: method, space, top features, exactness."""
    error = float(np.abs(explanation.totals() - reference).max()) if len(reference) else 0.0
    return {
        "method": explanation.method,
        "exact": explanation.exact,
        "approximate_reason": explainer.approximate_reason or None,
        "space": explanation.space,
        "outputs": explanation.outputs,
        "base_value": [round(float(b), 6) for b in explanation.base],
        "rows": int(explanation.values.shape[0]),
        # max |base + sum(contributions) - the model's own output| on the sample
        "max_additivity_error": float(f"{error:.3g}"),
        "top_features": [
            {"feature": str(r.feature), "mean_abs_shap": round(float(r.mean_abs_shap), 6)}
            for r in importance.head(top).itertuples()
        ],
    }


def background_rows(frame: pd.DataFrame, rows: int, seed: int) -> list[dict[str, Any]]:
    """A seeded sample of input rows as JSON records (None for missing).

    Shipped in the Bento: linear and sampled explainers need a background
    sample, and the service has no access to the training data.
    """
    sample = sample_rows(frame, rows, seed)
    records: list[dict[str, Any]] = []
    for row in sample.to_dict(orient="records"):
        clean: dict[str, Any] = {}
        for key, value in row.items():
            if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
                clean[str(key)] = None
            elif isinstance(value, (bool, np.bool_)):
                clean[str(key)] = bool(value)
            elif isinstance(value, (int, np.integer)):
                clean[str(key)] = int(value)
            elif isinstance(value, (float, np.floating)):
                clean[str(key)] = float(value)
            else:
                clean[str(key)] = str(value)
        records.append(clean)
    return records
