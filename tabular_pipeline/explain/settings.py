"""The ``explain`` params section (conf/config.yaml is the home of every value)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExplainConfig:
    sample_rows: int = "???"  # type: ignore[assignment]
    background_rows: int = "???"  # type: ignore[assignment]
    permutations: int = "???"  # type: ignore[assignment]
    sampled_rows: int = "???"  # type: ignore[assignment]
    top_features: int = "???"  # type: ignore[assignment]
    importance_out: str = "???"
    beeswarm_out: str = "???"
    groups_out: str = "???"
    sensitive_out: str = "???"
    summary_out: str = "???"
    background_out: str = "???"
