"""Promotion gates: pure comparisons of numbers, so they are unit-testable.

MLflow's ``MetricThreshold`` cannot express "no regression against the
champion re-scored on today's data", so the gates are plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tabular_pipeline.errors import PipelineError

# Metrics where a smaller value is better; every other metric: larger is better.
LOWER_IS_BETTER = frozenset({"error_rate", "log_loss", "rmse", "mae", "mape"})
# Which task each known metric belongs to: a margin listed for the other
# task's metric (register.compare.margins has both) does not apply to this run.
CLASSIFICATION_METRICS = frozenset(
    {"accuracy", "error_rate", "balanced_accuracy", "f1_macro", "log_loss", "roc_auc"}
)
REGRESSION_METRICS = frozenset({"rmse", "mae", "r2", "mape"})


def direction(metric: str) -> str:
    """'lower' or 'higher' (is better): named in every gate's record and log line."""
    return "lower" if metric in LOWER_IS_BETTER else "higher"


def compared(margins: dict[str, float], metrics: dict[str, Any]) -> list[str]:
    """The metrics of ``margins`` that this run's task has (sorted)."""
    return sorted(name for name in margins if applies(name, metrics))


def applies(metric: str, metrics: dict[str, Any]) -> bool:
    """False for a known metric of the other task (absent from this run's metrics)."""
    if metric in metrics:
        return True
    other = CLASSIFICATION_METRICS if "rmse" in metrics else REGRESSION_METRICS
    return metric not in other


@dataclass
class Gate:
    """One check: its name, whether it passed, and a sentence for the log."""

    name: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    detail: str = ""
    direction: str | None = None  # "higher"/"lower" is better; None: not a metric bound
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. a comparison's Δ and interval

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
        } | self.extra


@dataclass
class Decision:
    gates: list[Gate] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    @property
    def directions(self) -> dict[str, str]:
        """Each gated metric's direction ("lower is better"), for the decision file.

        One entry per metric, not per gate: ``dvc exp show --only-changed``
        makes a column of every key that differs, and a metric's direction
        never changes between runs while its gates come and go (a champion).
        """
        return {
            g.name.split(".", 1)[1]: f"{g.direction} is better"
            for g in sorted(self.gates, key=lambda g: g.name)
            if g.direction is not None
        }


def _better_or_equal(metric: str, value: float, bound: float) -> bool:
    return value <= bound if metric in LOWER_IS_BETTER else value >= bound


def _metric(metrics: dict[str, Any], name: str, where: str) -> float:
    value = metrics.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise PipelineError(
            f"{where}: metric {name!r} is missing or not a number ({value!r}); "
            f"available: {sorted(k for k, v in metrics.items() if isinstance(v, int | float))}"
        )
    return float(value)


def floor_gates(metrics: dict[str, Any], floors: dict[str, float]) -> list[Gate]:
    """Absolute minimums (maximums for error/log loss) on this run's test metrics."""
    gates = []
    for name, floor in sorted(floors.items()):
        value = _metric(metrics, name, f"register.floors.{name}")
        ok = _better_or_equal(name, value, float(floor))
        word = "ceiling" if name in LOWER_IS_BETTER else "floor"
        gates.append(
            Gate(
                f"floor.{name}",
                ok,
                value,
                float(floor),
                f"test {name} {value:.4f} {'meets' if ok else 'misses'} the {word} {floor} "
                f"({direction(name)} is better)",
                direction(name),
            )
        )
    return gates


def ceiling_gates(metrics: dict[str, Any], ceilings: dict[str, float]) -> list[Gate]:
    """Absolute maximums on lower-is-better test metrics (``max_metrics: {rmse: ...}``)."""
    gates = []
    for name, ceiling in sorted(ceilings.items()):
        if name not in LOWER_IS_BETTER:
            raise PipelineError(
                f"register.ceilings.{name}: {name} is higher-is-better; a ceiling applies to "
                f"{sorted(LOWER_IS_BETTER)} (put {name} under data.min_metrics)"
            )
        value = _metric(metrics, name, f"register.ceilings.{name}")
        ok = value <= float(ceiling)
        gates.append(
            Gate(
                f"ceiling.{name}",
                ok,
                value,
                float(ceiling),
                f"test {name} {value:.4f} {'meets' if ok else 'exceeds'} the ceiling {ceiling} "
                "(lower is better)",
                "lower",
            )
        )
    return gates


MINUS = "\N{MINUS SIGN}"
NON_INFERIORITY = "non_inferiority"


def _num(value: float) -> str:
    """-0.0031 as the refusal lines print it (a true minus sign, 4 decimals)."""
    text = f"{value:.4f}"
    return MINUS + text[1:] if text.startswith("-") else text


def error_control(mode: str, confidence: float) -> str:
    """How several gated metrics keep the chance of a wrong promotion bounded (for the record)."""
    alpha = round((1 - confidence) / 2, 6)
    claim = "worse than its margin" if mode == NON_INFERIORITY else "not better"
    return (
        f"intersection-union test: every compared metric must pass, each a one-sided test at "
        f"level {alpha} (the {confidence:.0%} interval's bound), so the chance of promoting a "
        f"model that is {claim} on any metric is at most {alpha} without a multiplicity "
        "adjustment (Berger 1982)"
    )


def compare_gates(
    differences: dict[str, dict[str, Any]],
    margins: dict[str, float],
    mode: str,
    champion_version: str | None = None,
    same_model: bool = False,
) -> list[Gate]:
    """The paired comparison with the champion, one gate per metric.

    ``differences`` are ``resampling.Difference.as_dict()`` of Δ = new -
    champion on the same test rows. non_inferiority passes when Δ's bound on
    the worse side is within -margin (higher is better: the lower bound is
    above -margin; lower is better: the upper bound is below +margin);
    superiority when it is beyond 0. A version compared with itself (it is
    the champion already) passes: Δ = 0 is recorded.
    """
    label = f"champion v{champion_version}" if champion_version else "champion"
    gates = []
    for name, d in sorted(differences.items()):
        margin = float(margins[name])
        way = direction(name)
        limit = -margin if mode == NON_INFERIORITY else 0.0
        if way == "lower":
            limit = -limit
        bound = d["low"] if way == "higher" else d["high"]
        ok = bound is not None and (bound > limit if way == "higher" else bound < limit)
        interval = (
            f"{name}: new {MINUS} {label} = {_num(d['delta'])} "
            f"[{_num(d['low'])}, {_num(d['high'])}] ({d['confidence']:.0%}".replace("%", " %")
            + f", paired bootstrap, {d['n_resamples']:,} draws"
            + ("" if d["resampled"] == "rows" else f" of {d['resampled']}")
            + ")"
        )
        side, word = ("lower", "above") if way == "higher" else ("upper", "below")
        rule = f"{mode}: the {side} bound must be {word} {_num(limit) if limit else '0'}"
        if same_model:
            ok, verdict = True, f"ok (this version is the {label})"
        elif ok:
            verdict = f"ok ({rule}; {way} is better)"
        else:
            beyond = "below" if way == "higher" else "above"
            strictly = bound is not None and bound != limit
            verdict = (
                f"is {beyond if strictly else 'not ' + word} {_num(limit) if limit else '0'} "
                f"({rule}; {way} is better)"
            )
        gates.append(
            Gate(
                f"compare.{name}",
                ok,
                bound,
                round(limit, 6),
                f"{interval} {verdict}",
                way,
                {
                    "mode": mode,
                    "margin": margin,
                    "delta": d["delta"],
                    "low": d["low"],
                    "high": d["high"],
                    "new": d["new"],
                    "champion": d["old"],
                    "confidence": d["confidence"],
                    "n_resamples": d["n_resamples"],
                    "resampled": d["resampled"],
                    "share_better": d["share_better"],
                    "mcnemar_p": d["mcnemar_p"],
                },
            )
        )
    return gates


def drift_gate(drift: dict[str, Any] | None) -> list[Gate]:
    """The drift stage's own gate result, carried into the decision."""
    if drift is None:
        return []
    ok = bool(drift.get("gate_passed"))
    share = drift.get("drift_share")
    return [
        Gate(
            "drift",
            ok,
            share,
            drift.get("max_drift_share"),
            "drift gate passed"
            if ok
            else "drift gate failed: " + "; ".join(drift.get("failure_lines") or ["see drift"]),
        )
    ]


def fairness_gates(fairness: dict[str, Any], max_gap: float | None) -> list[Gate]:
    """Optional ceiling on each sensitive column's gap: the demographic parity
    difference (classification) or the largest between-group MAE gap
    (regression, in the target's units)."""
    if max_gap is None:
        return []
    gates = []
    for column, gaps in sorted(fairness.items()):
        key = "mae_gap" if "mae_gap" in gaps else "dpd"
        gap = gaps.get(key)
        if gap is None:
            continue
        what = "largest MAE gap" if key == "mae_gap" else "demographic parity difference"
        ok = float(gap) <= float(max_gap)
        gates.append(
            Gate(
                f"fairness.{column}.{key}",
                ok,
                float(gap),
                float(max_gap),
                f"{what} by {column} {gap:.4f} "
                f"{'within' if ok else 'exceeds'} the ceiling {max_gap} (lower is better)",
                "lower",
            )
        )
    return gates


def decide(
    *,
    metrics: dict[str, Any],
    differences: dict[str, dict[str, Any]] | None,
    floors: dict[str, float],
    margins: dict[str, float],
    drift: dict[str, Any] | None,
    max_fairness_gap: float | None,
    champion_version: str | None = None,
    ceilings: dict[str, float] | None = None,
    mode: str = NON_INFERIORITY,
    same_model: bool = False,
) -> Decision:
    """Every gate of a candidate. ``differences`` (None: no champion yet) are the
    paired comparisons with the champion, gated by ``margins`` in ``mode``."""
    return Decision(
        floor_gates(metrics, floors)
        + ceiling_gates(metrics, ceilings or {})
        + compare_gates(differences or {}, margins, mode, champion_version, same_model)
        + drift_gate(drift)
        + fairness_gates(metrics.get("fairness") or {}, max_fairness_gap)
    )
