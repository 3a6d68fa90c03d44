"""The register stage's policy as pure functions: what to compare, what to decide, what to write.

Kept apart from MLflow so the verdict table and the decision records are
unit-tested without a tracking store (``tests/test_registry_gates.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypedDict

from tabular_pipeline.registry.gates import Decision, applies, error_control

log = logging.getLogger(__name__)


class DecisionHeadline(TypedDict):
    """``register.decision_out``: a DVC metrics file, so only what `exp show` should list."""

    promoted: bool
    version: int


class DecisionDetails(TypedDict):
    """``register.details_out``: everything behind the headline (not a DVC metric)."""

    decision: str
    model_name: str
    version: int
    champion_version_before: int | None
    champion_version: int | None
    champion_rescored: dict[str, Any] | None
    compare: dict[str, Any] | None
    gates: dict[str, dict[str, Any]]
    directions: dict[str, str]
    failures: list[str]


def verdict(passed: bool, in_experiment: bool, promote_in_experiments: bool) -> tuple[str, bool]:
    """(verdict, whether the alias moves).

    ``dvc exp run`` sweeps many candidates: they are gated and recorded, but
    only move the alias when ``register.promote_in_experiments`` says so.
    """
    if not passed:
        return "rejected", False
    if in_experiment and not promote_in_experiments:
        return "passed-not-promoted", False
    return "promoted", True


def champion_metrics(
    champion_version: int | None,
    version: int,
    metrics: dict[str, Any],
    rescore: Callable[[int], dict[str, Any]],
) -> dict[str, Any] | None:
    """The champion's metrics on *this* test split: none, ours (it is us), or re-scored.

    Comparing with the numbers the champion logged when it was trained would
    compare two different test sets after any data change.
    """
    if champion_version is None:
        return None
    if champion_version == version:
        return metrics
    return rescore(champion_version)


def resampling_units(test: Any, group_column: str | None) -> tuple[Any, str]:
    """(groups to resample whole, or None; what is resampled, for the record).

    Rows of one entity (``data.group_column``) are not independent: the
    comparison then draws whole groups. A group column that the test split
    does not have falls back to rows, said in the log and the record.
    """
    if group_column is None:
        return None, "rows"
    if group_column not in test.columns:
        log.warning(
            "data.group_column %r is not in the test split: the comparison resamples rows",
            group_column,
        )
        return None, f"rows (data.group_column {group_column!r} is not in the test split)"
    return test[group_column].to_numpy(), f"whole groups of {group_column}"


def comparison_record(
    compare: Any, compared: list[str], resampled: str, champion_version: int
) -> dict[str, Any]:
    """How the candidate was compared with the champion (``register.compare``), for the record."""
    return {
        "champion_version": champion_version,
        "method": "paired percentile bootstrap: the same resampled test rows for both models",
        "mode": compare.mode,
        "margins": {k: float(compare.margins[k]) for k in compared},
        "confidence": compare.confidence,
        "n_resamples": compare.n_resamples,
        "seed": compare.seed,
        "resampled": resampled,
        "error_control": error_control(compare.mode, compare.confidence),
    }


def drift_evidence(
    drift: dict[str, Any], drift_summary: dict[str, Any], required: bool
) -> dict[str, Any] | None:
    """What the drift gate needs from the drift stage's outputs, or None when not required."""
    if not required:
        return None
    return drift | {"failure_lines": drift_summary["gate_failures"]}


def records(
    *,
    decision: Decision,
    verdict: str,
    promote: bool,
    model_name: str,
    version: int,
    champion_before: int | None,
    champion: dict[str, Any] | None,
    compared: list[str],
    comparison: dict[str, Any] | None = None,
) -> tuple[DecisionHeadline, DecisionDetails]:
    """The two decision files: the headline metric and the details behind it.

    ``comparison``: how the paired comparison with the champion was made
    (mode, level, draws, what was resampled, error control), None without one.
    """
    champion_after = version if promote else champion_before
    details: DecisionDetails = {
        "decision": verdict,
        "model_name": model_name,
        "version": version,
        "champion_version_before": champion_before,
        "champion_version": champion_after,
        "champion_rescored": (
            None
            if champion is None or champion_before == version
            else {k: champion.get(k) for k in sorted(compared) if applies(k, champion)}
        ),
        "compare": comparison,
        "gates": {g.name: g.as_dict() for g in decision.gates},
        "directions": decision.directions,
        "failures": [g.detail for g in decision.failures],
    }
    headline: DecisionHeadline = {"promoted": champion_after == version, "version": version}
    return headline, details
