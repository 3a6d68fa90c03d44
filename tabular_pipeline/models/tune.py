"""Seeded, sequential Optuna search for the ``tune`` stage.

The search space is declared in config per estimator class
(``tune.search_space.<ClassName>``). Each entry is one of::

    lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    max_leaf_nodes: {type: int, low: 15, high: 63}
    hidden_sizes: {type: categorical, choices: [[128, 128], [256, 256]]}

A TPE sampler seeded from params and one trial at a time make a rerun give
the same trials (the models themselves are deterministic). The best values
go to a small YAML file that ``train`` declares as DVC params, so
``dvc params diff`` and ``dvc exp show`` show the tuned values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tabular_pipeline.errors import PipelineError

if TYPE_CHECKING:  # a disabled tune stage never touches a frame
    import pandas as pd

log = logging.getLogger(__name__)

# tune.metric names -> keys of evaluation.metrics.score()
METRIC_KEYS = {"error": "error_rate"}


def check_space(space: dict[str, Any], model: str) -> None:
    """Fail early, naming the key, on a malformed search space."""
    if not space:
        raise PipelineError(
            f"params.yaml: tune.search_space has no entry for {model}; add one or set "
            "tune.enabled: false"
        )
    for name, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        where = f"params.yaml: tune.search_space.{model}.{name}"
        if kind in ("float", "int"):
            if "low" not in spec or "high" not in spec or spec["low"] > spec["high"]:
                raise PipelineError(f"{where}: needs low <= high, got {spec}")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise PipelineError(f"{where}: needs a non-empty 'choices' list")
        else:
            raise PipelineError(f"{where}: type must be float, int or categorical, got {kind!r}")


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one set of values; list-valued choices (layer sizes) go through JSON strings."""
    values: dict[str, Any] = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            values[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(
                name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False))
            )
        else:
            choices = [json.dumps(c) for c in spec["choices"]]
            values[name] = json.loads(trial.suggest_categorical(name, choices))
    return values


def run_study(
    objective: Callable[[dict[str, Any]], float],
    space: dict[str, Any],
    n_trials: int,
    seed: int,
    on_trial: Callable[[int, dict[str, Any], float], None] | None = None,
    metric: str = "value",
) -> pd.DataFrame:
    """Minimise ``objective`` over ``space``; one row per trial (number, value, params)."""
    import optuna
    import pandas as pd

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=int(seed))
    )
    rows: list[dict[str, Any]] = []
    for number in range(int(n_trials)):
        trial = study.ask()
        values = suggest(trial, space)
        value = float(objective(values))
        study.tell(trial, value)
        rows.append({"trial": number, "value": value} | values)
        best = min(rows, key=lambda r: r["value"])
        log.info(
            "trial %d/%d: %s %.5f (best %.5f, trial %d) %s",
            number + 1,
            n_trials,
            metric,
            value,
            best["value"],
            best["trial"] + 1,
            json.dumps(values),
        )
        if on_trial is not None:
            on_trial(number, values, value)
    return pd.DataFrame(rows)


def best_params(trials: pd.DataFrame, space: dict[str, Any]) -> dict[str, Any]:
    """Values of the best trial (first one on ties), as plain YAML-able types."""
    if trials.empty:
        return {}
    best = trials.loc[trials["value"].idxmin()]
    out: dict[str, Any] = {}
    for name, spec in space.items():
        value = best[name]
        if spec["type"] == "int":
            value = int(value)
        elif spec["type"] == "float":
            value = float(value)
        out[name] = value
    return out


def write_tuned(path: Path, target: str | None, values: dict[str, Any]) -> None:
    """The params file ``train`` reads: the estimator it was tuned for and its values."""
    from tabular_pipeline import stage

    payload = {"tuned_for": target or "", "model": values}
    stage.write_text(path, yaml.safe_dump(payload, sort_keys=True))


def apply_tuned(model_cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """``model_cfg`` with the tuned values merged in, if they were tuned for this estimator."""
    if not path.exists():
        return model_cfg
    tuned = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values = tuned.get("model") or {}
    if not values:
        return model_cfg
    if tuned.get("tuned_for") != model_cfg.get("_target_"):
        log.warning(
            "%s was tuned for %s, not %s: ignored (run the tune stage)",
            path,
            tuned.get("tuned_for"),
            model_cfg.get("_target_"),
        )
        return model_cfg
    log.info("tuned values from %s: %s", path, json.dumps(values, sort_keys=True))
    return model_cfg | values
