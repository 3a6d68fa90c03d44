"""Per-row feature contributions (SHAP values) for the pipeline's final estimator.

The estimator is explained on the featurizer's output, then the columns a
feature produced (one-hot blocks) are summed back to that feature. Additive
explanations stay additive under this sum (shap#397), so for every row

    base + sum(contributions) == the model's own output in ``space``

which the tests check against scikit-learn directly (shap's own additivity
check compares with its tree rebuild, at 1 % tolerance).

Which explainer, by final estimator:
- tree ensembles (HistGradientBoosting, RandomForest, ExtraTrees, DecisionTree,
  LightGBM, XGBoost, CatBoost; classifier or regressor): ``shap.TreeExplainer`` with
  ``feature_perturbation="tree_path_dependent"`` on the raw output: exact, no
  background data (the interventional mode fails additivity on HGB, shap#3267).
  HGB with native categorical splits is refused: shap ignores them and returns
  wrong values without an error (shap#3436).
- linear models (``coef_`` + ``intercept_``): ``shap.LinearExplainer`` against
  the mean of a background sample: exact in log-odds / target units.
- anything else (the torch MLP, a user's model): Shapley values estimated by
  seeded permutation sampling over the input columns against a fixed
  background sample, with a bounded number of permutations: additive, but
  *approximate* attributions, and labelled so.

shap is imported lazily (numba makes ``import shap`` take seconds).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

LOG_ODDS = "log-odds"
RAW_SCORE = "raw score"  # multiclass: per-class logits (softmax input)
PROBABILITY = "probability"
TARGET_UNITS = "target units"
LOG_TARGET = "log of the prediction"  # regressors with a log link (poisson, gamma)

TREE_MODELS = (
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    # GBDT libraries (conf/model/lightgbm.yaml, xgboost.yaml, catboost.yaml),
    # on the featurizer's one-hot output: shap reads their trees exactly.
    "LGBMClassifier",
    "LGBMRegressor",
    "XGBClassifier",
    "XGBRegressor",
    "CatBoostClassifier",
    "CatBoostRegressor",
)
# Tree models whose classifier output is a sum of trees in raw-score space
# (log-odds, per-class logits), not an average of probabilities.
BOOSTING_MODELS = tuple(
    m for m in TREE_MODELS if m.startswith(("HistGradientBoosting", "LGBM", "XGB", "CatBoost"))
)


def raw_margin(estimator: Any, X: np.ndarray) -> np.ndarray:
    """A boosted classifier's raw score (what tree SHAP adds up to), from the library itself.

    scikit-learn's have ``decision_function``; LightGBM, XGBoost and CatBoost
    each name it differently in ``predict``.
    """
    if hasattr(estimator, "decision_function"):
        return np.asarray(estimator.decision_function(X))
    library = type(estimator).__name__
    if library.startswith("LGBM"):
        return np.asarray(estimator.predict(X, raw_score=True))
    if library.startswith("XGB"):
        return np.asarray(estimator.predict(X, output_margin=True))
    if library.startswith("CatBoost"):
        return np.asarray(estimator.predict(X, prediction_type="RawFormulaVal"))
    raise ExplainError(f"explain: {library} has no raw score to explain")


class ExplainError(PipelineError):
    """No explainer applies to this model (the service answers 501)."""


@dataclass
class Explanation:
    """Contributions of each input feature, for each row and each explained output.

    ``values[i, j, k]``: feature ``features[j]``'s contribution to output
    ``outputs[k]`` of row ``i``; ``base[k]`` is the output's expected value.
    """

    features: list[str]
    outputs: list[str]
    space: str
    method: str
    exact: bool
    base: np.ndarray  # (n_outputs,)
    values: np.ndarray  # (n_rows, n_features, n_outputs)

    def totals(self) -> np.ndarray:
        """base + sum of contributions: the model output they explain, (n_rows, n_outputs)."""
        return np.asarray(self.base[None, :] + self.values.sum(axis=1))

    def mean_abs(self) -> pd.Series:
        """Global importance: mean |contribution| per feature (averaged over outputs)."""
        importance = np.abs(self.values).mean(axis=(0, 2))
        return pd.Series(importance, index=self.features, name="mean_abs_shap")


# -- one-hot blocks back to input columns -------------------------------------------
def _last_step(transformer: Any) -> Any:
    steps = getattr(transformer, "steps", None)
    return steps[-1][1] if steps else transformer


def _onehot_widths(encoder: Any, n_columns: int) -> list[int]:
    widths = getattr(encoder, "_n_features_outs", None)
    if widths is None:  # public attributes give the same numbers
        infrequent = getattr(encoder, "infrequent_categories_", [None] * n_columns)
        widths = [
            len(cats) - (0 if inf is None else len(inf) - 1)
            for cats, inf in zip(encoder.categories_, infrequent, strict=True)
        ]
        if getattr(encoder, "drop_idx_", None) is not None:
            widths = [w - (d is not None) for w, d in zip(widths, encoder.drop_idx_, strict=True)]
    return [int(w) for w in widths]


def _widths_by_name(transformer: Any, columns: list[str], width: int) -> list[int] | None:
    """Outputs per input column when each output is named ``<column>_<part>`` in input
    order (skrub's encoders, one-hot-like user steps); None when the names do not say."""
    try:
        names = [str(n) for n in transformer.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):
        return None
    if len(names) != width:
        return None
    owners = []
    for name in names:
        matches = [c for c in columns if name == c or name.startswith(f"{c}_")]
        if not matches:
            return None
        owners.append(max(matches, key=len))  # "a_b_year" is a_b's, not a's
    widths = [owners.count(c) for c in columns]
    expected = [c for c, w in zip(columns, widths, strict=True) for _ in range(w)]
    return widths if owners == expected else None


def feature_groups(featurizer: Any) -> tuple[list[str], list[np.ndarray]]:
    """Input columns and, for each, the featurizer output columns it produced.

    Reads the fitted ColumnTransformer's ``output_indices_``: a transformer
    whose width equals its inputs maps one to one; a OneHotEncoder maps each
    input to its category block; other encoders by their output names
    (``<column>_<part>``). Anything else cannot be attributed to a column.
    """
    if not hasattr(featurizer, "output_indices_"):
        raise ExplainError("explain: the featurizer is not a fitted ColumnTransformer")
    names: list[str] = []
    groups: list[np.ndarray] = []
    for name, transformer, columns in featurizer.transformers_:
        block = featurizer.output_indices_[name]
        width = block.stop - block.start
        if transformer == "drop" or width == 0:
            continue
        columns = [str(c) for c in columns]
        last = _last_step(transformer)
        if type(last).__name__ == "OneHotEncoder":
            widths = _onehot_widths(last, len(columns))
        elif width == len(columns):
            widths = [1] * len(columns)
        elif (by_name := _widths_by_name(transformer, columns, width)) is not None:
            widths = by_name  # date parts, string-encoder components: <column>_<part>
        else:
            raise ExplainError(
                f"explain: featurizer block {name!r} maps {len(columns)} columns to {width}: "
                "its outputs cannot be attributed to input columns"
            )
        if sum(widths) != width:
            raise ExplainError(f"explain: featurizer block {name!r}: widths {widths} != {width}")
        start = block.start
        for column, w in zip(columns, widths, strict=True):
            names.append(column)
            groups.append(np.arange(start, start + w))
            start += w
    return names, groups


def aggregate(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Sum column contributions (n, m, k) into feature contributions (n, F, k)."""
    return np.stack([values[:, g, :].sum(axis=1) for g in groups], axis=1)


# -- explainers -----------------------------------------------------------------------
def _as_3d(values: Any, n: int, m: int) -> np.ndarray:
    """shap's outputs (list per class, (n, m) or (n, m, k)) as (n, m, k)."""
    if isinstance(values, list):
        return np.stack([np.asarray(v, dtype=np.float64) for v in values], axis=-1)
    arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(n, m, 1) if arr.ndim == 2 else arr


class NativeTreeShap:
    """XGBoost's and CatBoost's own exact tree SHAP, shaped as shap's TreeExplainer answers.

    The same path-dependent algorithm, computed by the library on the model it
    predicts with (XGBoost ``pred_contribs``, CatBoost ``ShapValues``). shap
    0.51 gets both wrong without an error: it reads an XGBoost 3 model's
    intercept from its text config rounded to three digits (``[2.17E-1]``:
    every row off by up to ~0.1 log-odds), and returns NaN base values for a
    multiclass CatBoost model.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.xgboost = type(model).__name__.startswith("XGB")
        bias = self._contribs(np.zeros((1, int(model.n_features_in_))))[0][..., -1]
        self.expected_value = np.asarray(bias, dtype=np.float64)

    def _library(self) -> Any:
        """The model's own library (xgboost or catboost), found from its class.

        Not an ``import`` statement: the Bento pins the libraries its service
        code imports (tabular_pipeline/imports.py), and every served model's
        Bento would then carry both, CatBoost's 264 MB included. The model's
        own library is pinned already, from the classes its pickle holds.
        """
        for cls in type(self.model).__mro__:
            top = cls.__module__.split(".")[0]
            if top in ("xgboost", "catboost"):
                return importlib.import_module(top)
        raise ExplainError(f"explain: {type(self.model).__name__} is not an XGBoost/CatBoost model")

    def _contribs(self, X: np.ndarray) -> np.ndarray:
        """(n, m + 1), or (n, k, m + 1) per class; the last column is the base value."""
        library = self._library()
        if self.xgboost:
            out = self.model.get_booster().predict(library.DMatrix(X), pred_contribs=True)
        else:
            out = self.model.get_feature_importance(library.Pool(X), type="ShapValues")
        return np.asarray(out, dtype=np.float64)

    def shap_values(self, X: np.ndarray, check_additivity: bool = False) -> np.ndarray:
        out = self._contribs(X)[..., :-1]
        return out if out.ndim == 2 else np.moveaxis(out, 1, -1)  # (n, m) or (n, m, k)


class Explainer:
    """Built once (per model) from the fitted pipeline; explains featurized rows."""

    def __init__(
        self,
        pipeline: Any,
        background: pd.DataFrame | None = None,
        *,
        seed: int = 0,
        permutations: int = 10,
        background_rows: int = 100,
        target: str = "prediction",
    ) -> None:
        steps = getattr(pipeline, "steps", None)
        if not steps or len(steps) != 2:
            raise ExplainError("explain: the model is not a featurizer + estimator Pipeline")
        self.featurizer = pipeline[0]
        self.estimator = pipeline[-1]
        self.features, self.groups = feature_groups(self.featurizer)
        self.classes = [str(c) for c in getattr(self.estimator, "classes_", [])]
        self.is_classifier = bool(self.classes)
        self.target = target
        self.background: np.ndarray | None = None
        if background is not None and len(background):
            rows = background.sample(
                n=min(background_rows, len(background)), random_state=seed
            ).sort_index()
            self.background = np.asarray(self.featurizer.transform(rows), dtype=np.float64)
        self.seed = seed
        self.permutations = max(2, permutations + permutations % 2)  # antithetic pairs
        self.approximate_reason = ""
        name = type(self.estimator).__name__
        self._outputs()
        if name in TREE_MODELS:
            refused = self._tree_refusal()
            if refused:
                self.approximate_reason = refused
                log.warning("%s", refused)
                self._build_sampling()
            else:
                self._build_tree()
        elif hasattr(self.estimator, "coef_") and hasattr(self.estimator, "intercept_"):
            self._build_linear()
        else:
            self.approximate_reason = f"{name} has no exact explainer"
            self._build_sampling()
        if self.approximate_reason:
            log.warning(
                "explanations are APPROXIMATE (%s): sampled Shapley values, %d permutations "
                "against %d background rows",
                self.approximate_reason,
                self.permutations,
                0 if self.background is None else len(self.background),
            )

    # -- what is explained ---------------------------------------------------------
    def _outputs(self) -> None:
        if not self.is_classifier:
            self.outputs = [self.target]
        elif len(self.classes) == 2:
            self.outputs = [self.classes[1]]  # the positive class, as predict_proba[:, 1]
        else:
            self.outputs = list(self.classes)

    def _raw_space(self) -> str:
        if not self.is_classifier:
            loss = getattr(self.estimator, "loss", "squared_error")
            return LOG_TARGET if loss in ("poisson", "gamma") else TARGET_UNITS
        return LOG_ODDS if len(self.classes) == 2 else RAW_SCORE

    def _tree_refusal(self) -> str:
        categorical = getattr(self.estimator, "is_categorical_", None)
        if categorical is not None and np.asarray(categorical).any():
            return (
                f"{type(self.estimator).__name__} uses native categorical splits, which "
                "shap's TreeExplainer ignores (wrong values without an error, shap#3436): "
                "tree SHAP refused; one-hot encode categoricals in the featurizer instead"
            )
        return ""

    def _build_tree(self) -> None:
        import shap

        self._shap: Any
        if type(self.estimator).__name__.startswith(("XGB", "CatBoost")):
            self._shap = NativeTreeShap(self.estimator)
        else:
            self._shap = shap.TreeExplainer(
                self.estimator, feature_perturbation="tree_path_dependent"
            )
        self.method = "tree SHAP (path-dependent)"
        self.exact = True
        # Gradient boosting explains its raw score; forests average the trees'
        # outputs, which for a classifier are probabilities.
        boosting = type(self.estimator).__name__ in BOOSTING_MODELS
        self.space = self._raw_space() if boosting or not self.is_classifier else PROBABILITY
        if self.space == PROBABILITY:
            self.reference = self._proba
        elif self.is_classifier:
            self.reference = self._decision
        else:
            self.reference = self._log_predict if self.space == LOG_TARGET else self._predict
        expected = np.atleast_1d(np.asarray(self._shap.expected_value, dtype=np.float64))
        self.base = self._select(expected[None, None, :])[0, 0]

    def _build_linear(self) -> None:
        import shap

        if self.background is None:
            raise ExplainError("explain: a linear model needs background rows (the mean)")
        self._shap = shap.LinearExplainer(self.estimator, shap.maskers.Independent(self.background))
        self.method = "linear SHAP"
        self.exact = True
        self.space = self._raw_space()
        self.reference = self._decision if self.is_classifier else self._predict
        if self.space == LOG_TARGET:
            raise ExplainError("explain: linear model with a log link is not supported")
        expected = np.atleast_1d(np.asarray(self._shap.expected_value, dtype=np.float64))
        self.base = expected.reshape(-1)

    def _build_sampling(self) -> None:
        if self.background is None:
            raise ExplainError(
                f"explain: {type(self.estimator).__name__} has no exact explainer and no "
                "background rows were given for the sampling one"
            )
        if not (self.is_classifier and hasattr(self.estimator, "predict_proba")) and not (
            not self.is_classifier and hasattr(self.estimator, "predict")
        ):
            raise ExplainError(f"explain: {type(self.estimator).__name__} has no usable output")
        self._shap = None
        self.method = "sampled Shapley values (permutation)"
        self.exact = False
        self.space = PROBABILITY if self.is_classifier else TARGET_UNITS
        self.reference = self._proba if self.is_classifier else self._predict
        rng = np.random.default_rng(self.seed)
        half = [rng.permutation(len(self.groups)) for _ in range(self.permutations // 2)]
        self._perms = [p for perm in half for p in (perm, perm[::-1])]  # antithetic
        self.base = self.reference(self.background).mean(axis=0)

    # -- the model's own outputs (what contributions must add up to) ----------------
    def _select(self, out: np.ndarray) -> np.ndarray:
        """Keep the explained outputs: a binary classifier's positive class only."""
        if self.is_classifier and len(self.classes) == 2 and out.shape[-1] == 2:
            return out[..., 1:]
        return out

    def _decision(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(raw_margin(self.estimator, X), dtype=np.float64)
        return out.reshape(len(X), -1)

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return self._select(np.asarray(self.estimator.predict_proba(X), dtype=np.float64))

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(X), dtype=np.float64).reshape(len(X), 1)

    def _log_predict(self, X: np.ndarray) -> np.ndarray:
        return np.log(self._predict(X))

    # -- explain -------------------------------------------------------------------
    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.featurizer.transform(frame), dtype=np.float64)

    def explain_frame(self, frame: pd.DataFrame) -> Explanation:
        return self.explain(self.transform(frame))

    def explain(self, X: np.ndarray) -> Explanation:
        """Contributions for featurized rows ``X`` (the featurizer's output)."""
        X = np.asarray(X, dtype=np.float64)
        n, m = X.shape
        if self._shap is None:
            values = self._sampled(X)
        else:
            if self.method.startswith("tree"):
                raw = self._shap.shap_values(X, check_additivity=False)
            else:
                raw = self._shap.shap_values(X)
            values = aggregate(self._select(_as_3d(raw, n, m)), self.groups)
        return Explanation(
            features=list(self.features),
            outputs=list(self.outputs),
            space=self.space,
            method=self.method,
            exact=self.exact,
            base=np.asarray(self.base, dtype=np.float64).reshape(-1),
            values=values,
        )

    def _sampled(self, X: np.ndarray) -> np.ndarray:
        """Permutation sampling over input columns; additive by construction (telescoping)."""
        assert self.background is not None
        B = self.background
        F = len(self.groups)
        k = len(self.outputs)
        values = np.zeros((len(X), F, k))
        for i, x in enumerate(X):
            for perm in self._perms:
                stack = np.repeat(B[None, :, :], F + 1, axis=0)  # (F+1, b, m)
                for step, j in enumerate(perm, start=1):
                    stack[step:, :, self.groups[j]] = x[self.groups[j]]
                out = self.reference(stack.reshape(-1, B.shape[1])).reshape(F + 1, len(B), k)
                means = out.mean(axis=1)  # (F+1, k)
                values[i, perm, :] += np.diff(means, axis=0)
        return values / len(self._perms)
