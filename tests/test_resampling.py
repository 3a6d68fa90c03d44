"""The one resampling module: single-model intervals and paired differences, on tiny tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
)

from tabular_pipeline.errors import PipelineError
from tabular_pipeline.evaluation import metrics as m
from tabular_pipeline.evaluation import resampling as rs

CLASSES = ["neg", "pos"]


def binary(n: int, seed: int, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.3, "pos", "neg")
    p = np.clip((y == "pos") * (1 - noise) + rng.random(n) * noise, 0.001, 0.999)
    return y, np.column_stack([1 - p, p])


def test_weighted_metrics_match_sklearn_with_weights_and_ties() -> None:
    rng = np.random.default_rng(3)
    n = 200
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    raw = np.round(rng.random((n, 3)), 1) + 1e-3  # many tied scores
    proba = raw / raw.sum(axis=1, keepdims=True)
    s = rs.classification(y, proba, ["a", "b", "c"])
    w = rng.integers(0, 4, size=(4, n)).astype(float)
    pred = np.array(["a", "b", "c"])[proba.argmax(axis=1)]
    for row, got in zip(w, rs.values(w, s, "roc_auc").tolist(), strict=True):
        keep = row > 0
        expected = np.mean(
            [roc_auc_score(y == c, proba[:, i], sample_weight=row) for i, c in enumerate("abc")]
        )
        assert got == pytest.approx(expected, rel=1e-12)
        assert rs.values(row[None], s, "accuracy")[0] == pytest.approx(
            accuracy_score(y, pred, sample_weight=row)
        )
        assert rs.values(row[None], s, "log_loss")[0] == pytest.approx(
            log_loss(y, proba, sample_weight=row, labels=["a", "b", "c"])
        )
        # f1/balanced accuracy by repeating rows (sklearn's weighting of them differs).
        yy, pp = (
            np.repeat(y[keep], row[keep].astype(int)),
            np.repeat(pred[keep], row[keep].astype(int)),
        )
        assert rs.values(row[None], s, "f1_macro")[0] == pytest.approx(
            f1_score(yy, pp, average="macro", zero_division=0)
        )
        assert rs.values(row[None], s, "balanced_accuracy")[0] == pytest.approx(
            balanced_accuracy_score(yy, pp)
        )


def test_point_values_equal_evaluates_metrics() -> None:
    y, proba = binary(500, 0)
    got = m.classification_metrics(y, proba, CLASSES)
    s = rs.classification(y, proba, CLASSES)
    for name in rs.CLASSIFICATION_METRICS:
        assert rs.point(s, name) == pytest.approx(got[name], abs=1e-6), name
    yr = np.random.default_rng(1).normal(10, 2, 300)
    pr = yr + np.random.default_rng(2).normal(0, 1, 300)
    reg = rs.regression(yr, pr)
    assert rs.point(reg, "mae") == pytest.approx(mean_absolute_error(yr, pr))
    assert rs.point(reg, "r2") == pytest.approx(r2_score(yr, pr))
    assert rs.point(reg, "rmse") == pytest.approx(m.regression_metrics(yr, pr)["rmse"], abs=1e-6)


def test_draws_cover_every_resample_of_a_tiny_table_like_brute_force() -> None:
    """Closed form: on n = 3 rows the bootstrap distribution of a mean is known exactly.

    Enumerating the 27 equally likely index triples gives the distribution of
    the resampled accuracy; 20,000 seeded draws must match its mean and spread.
    """
    correct = np.array([1.0, 1.0, 0.0])
    exact = np.array([correct[list(t)].mean() for t in itertools.product(range(3), repeat=3)])
    w = np.vstack(list(rs.draws(3, 20_000, seed=0)))
    assert w.shape == (20_000, 3) and (w.sum(axis=1) == 3).all()
    sampled = w @ correct / 3
    assert sampled.mean() == pytest.approx(exact.mean(), abs=0.01)
    assert sampled.std() == pytest.approx(exact.std(), abs=0.01)


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate() -> None:
    y, proba = binary(2000, 0)
    s = rs.classification(y, proba, CLASSES)
    args = (s, ["accuracy", "roc_auc", "balanced_accuracy"], 1000, 0.95)
    ci = rs.bootstrap_ci(*args, seed=7)
    assert ci == rs.bootstrap_ci(*args, seed=7)
    assert ci != rs.bootstrap_ci(*args, seed=8)
    for name in ("accuracy", "roc_auc"):
        assert ci[name]["low"] < rs.point(s, name) < ci[name]["high"]
    # A 95 % interval of a proportion near 0.8 with n = 2000: about 2 x 1.96 x 0.009.
    assert 0.025 < ci["accuracy"]["high"] - ci["accuracy"]["low"] < 0.045
    reg = rs.regression(
        np.arange(500.0), np.arange(500.0) + np.random.default_rng(0).normal(size=500)
    )
    rci = rs.bootstrap_ci(reg, ["rmse", "mae", "r2"], 300, 0.95, seed=1)
    for name in ("rmse", "mae", "r2"):
        assert rci[name]["low"] < rs.point(reg, name) < rci[name]["high"]


def test_unknown_metric_and_confidence_are_named() -> None:
    s = rs.classification(np.array(["a"]), np.array([[1.0]]), ["a"])
    with pytest.raises(PipelineError, match=r"evaluate\.bootstrap\.metrics: \['r2'\]"):
        rs.bootstrap_ci(s, ["r2"], 10, 0.95, 0)
    reg = rs.regression([1.0], [1.0])
    with pytest.raises(PipelineError, match=r"evaluate\.bootstrap\.regression_metrics"):
        rs.bootstrap_ci(reg, ["accuracy"], 10, 0.95, 0)
    with pytest.raises(PipelineError, match=r"register\.compare\.confidence: 1\.5"):
        rs.paired(s, s, ["accuracy"], 10, 1.5, 0, where="register.compare")


def test_identical_models_give_zero_with_a_degenerate_interval() -> None:
    y, proba = binary(1000, 1)
    a = rs.classification(y, proba, CLASSES)
    b = rs.classification(y, proba.copy(), CLASSES)
    out = rs.paired(a, b, ["accuracy", "log_loss", "roc_auc"], 500, 0.95, 0)
    for d in out.values():
        assert (d.delta, d.low, d.high) == (0.0, 0.0, 0.0)
        assert d.verdict == "no detectable difference" and d.share_better == 0.0
    assert out["accuracy"].mcnemar_p == 1.0


def test_better_on_every_row_gives_a_positive_interval() -> None:
    y, proba = binary(800, 2)
    truth = (y == "pos").astype(float)
    old = rs.classification(y, proba, CLASSES)
    # Every row's probability moves towards its label: better log loss and AUC-neutral at worst.
    moved = proba[:, 1] + 0.5 * (truth - proba[:, 1])
    new = rs.classification(y, np.column_stack([1 - moved, moved]), CLASSES)
    out = rs.paired(new, old, ["log_loss", "accuracy"], 1000, 0.95, 0)
    ll = out["log_loss"]
    assert ll.high < 0 and ll.verdict == "better" and ll.share_better == 1.0  # lower is better
    assert out["accuracy"].low >= 0
    yr = np.linspace(0, 10, 400)
    noise = np.random.default_rng(0).normal(0, 1, 400)
    rout = rs.paired(
        rs.regression(yr, yr + 0.5 * noise),
        rs.regression(yr, yr + noise),
        ["mae", "r2"],
        500,
        0.95,
        0,
    )
    assert rout["mae"].high < 0 and rout["mae"].verdict == "better"
    assert rout["r2"].low > 0 and rout["r2"].verdict == "better"


def test_same_draws_for_both_models_make_the_interval_narrow() -> None:
    """Two models that differ on a few rows only: the paired interval of Δ accuracy is
    tight around the true difference; resampling each model independently (the
    mistake this guards against) gives an interval about as wide as a single
    accuracy's and straddles 0."""
    y, proba = binary(4000, 3)
    old = rs.classification(y, proba, CLASSES)
    flipped = proba.copy()
    pred = flipped.argmax(axis=1)
    wrong = np.flatnonzero(np.asarray(CLASSES)[pred] != y)[:80]  # fix 80 errors = +0.02
    flipped[wrong] = flipped[wrong][:, ::-1]
    new = rs.classification(y, flipped, CLASSES)
    d = rs.paired(new, old, ["accuracy"], 1000, 0.95, 0)["accuracy"]
    assert d.delta == pytest.approx(0.02)
    assert 0.014 < d.low < d.high < 0.026 and d.verdict == "better"
    assert d.mcnemar_p is not None and d.mcnemar_p < 1e-20  # 80 vs 0 discordant rows
    # Independent resampling: draws for one model, other draws for the other.
    w1 = np.vstack(list(rs.draws(len(y), 1000, seed=0)))
    w2 = np.vstack(list(rs.draws(len(y), 1000, seed=1)))
    independent = rs.values(w1, new, "accuracy") - rs.values(w2, old, "accuracy")
    lo, hi = np.quantile(independent, [0.025, 0.975])
    assert lo < d.low and hi > d.high and hi - lo > 3 * (d.high - d.low)


def test_group_resampling_draws_whole_groups() -> None:
    """Rows of a group move together: each draw's row counts are constant within a
    group, and with a strong group effect the interval is wider than by rows."""
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(40), 25)
    w = next(rs.draws(len(groups), 50, seed=0, groups=groups))
    for g in range(40):
        block = w[:, groups == g]
        assert (block == block[:, :1]).all()
    assert (w.sum(axis=1) % 25 == 0).all()
    # Whether the new model is right depends on the group: a clustered difference.
    y = np.where(rng.random(1000) < 0.5, "pos", "neg")
    old = rs.classification(y, np.tile([0.5, 0.5], (1000, 1)), CLASSES)
    good = rng.random(40) < 0.6
    right = np.where(good[groups], y == "pos", y != "pos")
    p = np.where(right, 0.9, 0.1)
    new = rs.classification(y, np.column_stack([1 - p, p]), CLASSES)
    by_rows = rs.paired(new, old, ["accuracy"], 1000, 0.95, 0)["accuracy"]
    by_groups = rs.paired(new, old, ["accuracy"], 1000, 0.95, 0, groups=groups)["accuracy"]
    assert by_groups.resampled == "40 groups" and by_rows.resampled == "rows"
    assert by_groups.high - by_groups.low > 2.5 * (by_rows.high - by_rows.low)
    assert by_groups.mcnemar_p is None  # McNemar assumes independent rows


def test_paired_refuses_different_rows_or_classes() -> None:
    y, proba = binary(50, 5)
    a = rs.classification(y, proba, CLASSES)
    with pytest.raises(PipelineError, match="same test rows"):
        rs.paired(a, rs.classification(y[:40], proba[:40], CLASSES), ["accuracy"], 10, 0.95, 0)
    with pytest.raises(PipelineError, match="different classes"):
        rs.paired(a, rs.classification(y, proba, ["neg", "yes"]), ["accuracy"], 10, 0.95, 0)
