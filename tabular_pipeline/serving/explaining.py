"""/explain for the service, free of BentoML: build the explainer once, shape the answer.

The explainer is built at start-up from the packaged pipeline and the
background rows shipped in ``serving.json`` (never per request). A model no
explainer applies to does not stop the service: /explain answers 501 with
the reason, logged once at start-up; an approximate one is logged as such.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tabular_pipeline.serving.fast import FastPredictor

log = logging.getLogger(__name__)


def build(
    pipeline: Any, predictor: FastPredictor, settings: dict[str, Any], target: str
) -> tuple[Any, str]:
    """(explainer, "") or (None, why /explain is disabled)."""
    from tabular_pipeline.explain.shap_values import Explainer, ExplainError

    rows = settings.get("background") or []
    background = predictor.frame(rows) if rows else None
    try:
        explainer = Explainer(
            pipeline,
            background,
            seed=int(settings.get("seed", 0)),
            permutations=int(settings.get("permutations", 10)),
            background_rows=max(len(rows), 1),
            target=target,
        )
    except ExplainError as exc:
        log.error("/explain disabled: %s", exc)
        return None, str(exc)
    return explainer, ""


def _number(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def explain_rows(
    explainer: Any,
    predictor: FastPredictor,
    rows: list[dict[str, Any]],
    proba: np.ndarray | None,
) -> list[dict[str, Any]]:
    """Per row: prediction, explained output, base value, contributions sorted by |value|.

    A binary classifier's output is its positive class; a multiclass one's is
    the predicted class (``proba``: the served probabilities); a regressor's is
    its prediction (``proba`` None). ``score`` = base_value + sum(contributions),
    in ``space``.
    """
    explanation = explainer.explain(predictor.features(rows))
    classes = explainer.classes
    answers = []
    for i, row in enumerate(rows):
        k, label = 0, None
        if classes:
            assert proba is not None
            label = classes[int(np.argmax(proba[i]))]
            if len(explanation.outputs) > 1:
                k = explanation.outputs.index(label)
        values = explanation.values[i, :, k]
        order = sorted(range(len(values)), key=lambda j: (-abs(values[j]), j))
        base = float(explanation.base[k])
        score = _number(base + float(values.sum()))
        answers.append(
            {
                "prediction": score if label is None else label,
                "output": explanation.outputs[k],
                "score": score,
                "base_value": _number(base),
                "space": explanation.space,
                "exact": explanation.exact,
                "method": explanation.method,
                "contributions": [
                    {
                        "feature": explanation.features[j],
                        "value": row.get(explanation.features[j]),
                        "contribution": _number(float(values[j])),
                    }
                    for j in order
                ],
            }
        )
    return answers
