"""The ``explain`` params section (conf/config.yaml is the one home of every value)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExplainConfig:
    sample_rows: int
    background_rows: int
    permutations: int
    sampled_rows: int
    top_features: int
    importance_out: str
    beeswarm_out: str
    groups_out: str
    sensitive_out: str
    summary_out: str
    background_out: str

    def __post_init__(self) -> None:
        for name in ("sample_rows", "background_rows", "permutations", "sampled_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"explain.{name}: {getattr(self, name)!r} must be at least 1")
