"""XGBoost's scikit-learn estimators as the pipeline needs them (conf/model/xgboost.yaml).

XGBoost's classifier only takes labels 0..k-1, unlike every scikit-learn
classifier (the pipeline's labels are the target's text): :class:`XGBClassifier`
encodes them, so ``classes_`` and ``predict`` speak the target's labels as
LightGBM's and CatBoost's do. Both classes keep only the trees up to the best
early-stopping iteration. Imported only when a model file names them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost


def _keep_best(model: xgboost.XGBModel) -> None:
    """Drop the trees grown after the best iteration.

    XGBoost keeps them and only its ``predict`` skips them; shap's tree
    explainer and the raw booster would use them all. Sliced, every reader of
    the model sees the same trees.
    """
    booster = model.get_booster()
    best = booster.attr("best_iteration")
    if best is not None and int(best) + 1 < booster.num_boosted_rounds():
        sliced = booster[: int(best) + 1]
        sliced.set_attr(best_iteration=best, best_score=booster.attr("best_score"))
        model._Booster = sliced


class XGBClassifier(xgboost.XGBClassifier):
    """``xgboost.XGBClassifier`` for any labels (text included), as scikit-learn's take."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> XGBClassifier:
        """Fit on label codes; ``eval_set`` labels are encoded the same way."""
        labels, codes = np.unique(np.asarray(y), return_inverse=True)
        self.labels_: np.ndarray | None = None  # classes_ is 0..k-1 while xgboost fits
        if kwargs.get("eval_set"):
            eval_set = []
            for X_e, y_e in kwargs["eval_set"]:
                y_e = np.asarray(y_e)
                known = np.isin(y_e, labels)
                if not known.all():
                    raise ValueError(f"eval_set has labels not in y: {sorted(set(y_e[~known]))}")
                eval_set.append((X_e, np.searchsorted(labels, y_e)))
            kwargs["eval_set"] = eval_set
        super().fit(X, codes, **kwargs)
        _keep_best(self)
        self.labels_ = labels
        return self

    @property
    def classes_(self) -> np.ndarray:
        labels = getattr(self, "labels_", None)
        return labels if labels is not None else np.arange(self.n_classes_)

    def predict(self, X: Any, **kwargs: Any) -> Any:
        """Labels (or, with ``output_margin=True``, raw scores)."""
        out = super().predict(X, **kwargs)
        if kwargs.get("output_margin"):
            return out
        return self.classes_[np.asarray(out, dtype=np.intp)]


class XGBRegressor(xgboost.XGBRegressor):
    """``xgboost.XGBRegressor`` whose model holds only the trees up to the best iteration."""

    def fit(self, X: Any, y: Any, **kwargs: Any) -> XGBRegressor:
        super().fit(X, y, **kwargs)
        _keep_best(self)
        return self
