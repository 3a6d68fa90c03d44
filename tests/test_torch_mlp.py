"""The torch MLP estimator, the tune helpers and the torchrun glue (fast, tiny data)."""

from __future__ import annotations

import io
import pickletools
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from tabular_pipeline.config import FeaturizeConfig, TrainConfig
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.models import distributed, tune
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import (
    accepts_eval_set,
    fit_pipeline,
    training_curve,
    uses_package_code,
)
from tabular_pipeline.models.torch_mlp import TorchMLPClassifier
from tests.conftest import SPACE, quadratic, shipped

LAYOUT = shipped("train", TrainConfig).distributed

ROOT = Path(__file__).resolve().parents[1]


def blobs(n: int, classes: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Separable numeric clusters plus one binary column, with string labels."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % len(classes)
    X = np.column_stack(
        [
            rng.normal(size=n) + 2.5 * label,
            rng.normal(size=n) - 1.5 * label,
            rng.integers(0, 2, size=n).astype(float),
        ]
    )
    return X, np.array(classes)[label]


def small(**kwargs: object) -> TorchMLPClassifier:
    defaults = dict(
        hidden_sizes=[16], n_frequencies=4, d_embedding=4, batch_size=32, max_epochs=8, patience=3
    )
    return TorchMLPClassifier(**(defaults | kwargs))  # type: ignore[arg-type]


def dump_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("classes", [["<=50K", ">50K"], ["a", "b", "c"]])
@pytest.mark.parametrize("embedding", ["plr", None])
def test_fits_string_labels_binary_and_multiclass(classes: list[str], embedding) -> None:
    X, y = blobs(240, classes, seed=0)
    Xv, yv = blobs(90, classes, seed=1)
    model = small(numeric_embedding=embedding).fit(X, y, eval_set=(Xv, yv))
    assert list(model.classes_) == sorted(classes)
    proba = model.predict_proba(Xv)
    assert proba.shape == (90, len(classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert (model.predict(Xv) == yv).mean() > 0.8
    # Only non-binary columns are embedded; the binary one enters as it is.
    assert model.layout_["embedded"] == ([0, 1] if embedding else [])


def test_sklearn_params_and_clone() -> None:
    model = small(lr=0.01)
    assert model.get_params()["lr"] == 0.01
    model.set_params(dropout=0.3)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert not hasattr(twin, "classes_")


def test_early_stopping_restores_best_weights() -> None:
    X, y = blobs(200, ["x", "y"], seed=2)
    Xv, yv = blobs(200, ["x", "y"], seed=3)
    model = small(max_epochs=40, patience=2, lr=0.05).fit(X, y, eval_set=(Xv, yv))
    history = pd.DataFrame(model.history_)
    assert list(history.columns) == ["epoch", "train_loss", "valid_log_loss", "valid_accuracy"]
    assert len(history) == model.best_epoch_ + 2 < 40  # stopped `patience` epochs after the best
    best = history["valid_log_loss"].min()
    assert history.loc[model.best_epoch_ - 1, "valid_log_loss"] == best
    proba = model.predict_proba(Xv)[np.arange(len(yv)), np.searchsorted(model.classes_, yv)]
    assert -np.log(proba).mean() == pytest.approx(best, rel=1e-5)


def test_without_eval_set_holds_out_a_seeded_fraction() -> None:
    X, y = blobs(200, ["x", "y"], seed=4)
    model = small(validation_fraction=0.25).fit(X, y)
    assert model.history_ and "valid_log_loss" in model.history_[0]


def test_two_fits_are_byte_identical_and_pickle_holds_no_torch() -> None:
    X, y = blobs(200, ["a", "b", "c"], seed=5)
    first, second = small().fit(X, y), small().fit(X, y)
    assert dump_bytes(first) == dump_bytes(second)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    globals_ = [
        arg
        for op, arg, _ in pickletools.genops(joblib_pickle(first))
        if op.name in ("GLOBAL", "STACK_GLOBAL") or (op.name.endswith("UNICODE") and arg)
    ]
    assert not any(str(g).startswith("torch") for g in globals_)
    assert small(random_state=1).fit(X, y).state_dict_["body.0.weight"].tolist() != (
        first.state_dict_["body.0.weight"].tolist()
    )


def joblib_pickle(obj: object) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=4)


def test_bad_params_and_labels_fail_clearly() -> None:
    X, y = blobs(60, ["a", "b"], seed=6)
    with pytest.raises(ValueError, match="monitor"):
        small(monitor="auc").fit(X, y)
    with pytest.raises(ValueError, match="not seen in training"):
        small().fit(X, y, eval_set=(X, np.where(y == "a", "z", y)))
    with pytest.raises(ValueError, match="expected 3 features"):
        small(max_epochs=1).fit(X, y).predict_proba(X[:, :2])


def test_pipeline_passes_eval_set_only_to_models_that_take_it(
    toy_frame: pd.DataFrame, tmp_path: Path
) -> None:
    assert accepts_eval_set(TorchMLPClassifier())
    assert not accepts_eval_set(LogisticRegression())
    numeric, categorical = feature_columns(toy_frame, "label")
    featurizer = build_featurizer(numeric, categorical, shipped("featurize", FeaturizeConfig)).fit(
        toy_frame.drop(columns=["label"])
    )
    train, valid = toy_frame.iloc[:90], toy_frame.iloc[90:]
    sk = fit_pipeline(featurizer, LogisticRegression(), train, "label", valid=valid)
    assert training_curve(sk).empty and not uses_package_code(sk)
    pipeline = fit_pipeline(featurizer, small(max_epochs=3), train, "label", valid=valid)
    curve = training_curve(pipeline)
    assert curve["epoch"].tolist() == [1, 2, 3] and uses_package_code(pipeline)

    # A fresh process loads the joblib file and predicts a raw DataFrame.
    joblib.dump(pipeline, tmp_path / "model.joblib")
    valid.drop(columns=["label"]).to_parquet(tmp_path / "rows.parquet")
    np.save(tmp_path / "expected.npy", pipeline.predict_proba(valid.drop(columns=["label"])))
    script = (
        "import joblib, numpy as np, pandas as pd\n"
        "p = joblib.load('model.joblib')\n"
        "got = p.predict_proba(pd.read_parquet('rows.parquet'))\n"
        "assert (got == np.load('expected.npy')).all(), 'predictions differ'\n"
        "print(list(p.classes_))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['a', 'b', 'c']"


# -- tune ----------------------------------------------------------------------------------
def test_study_is_reproducible_and_finds_the_best() -> None:
    seen: list[int] = []
    first = tune.run_study(quadratic, SPACE, 12, seed=3, on_trial=lambda n, v, s: seen.append(n))
    second = tune.run_study(quadratic, SPACE, 12, seed=3)
    pd.testing.assert_frame_equal(first, second)
    assert seen == list(range(12))
    assert not first.equals(tune.run_study(quadratic, SPACE, 12, seed=4))
    best = tune.best_params(first, SPACE)
    assert quadratic(best) == first["value"].min()
    assert isinstance(best["n"], int) and isinstance(best["layers"], list)


def test_tuned_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    target = "tabular_pipeline.models.torch_mlp.TorchMLPClassifier"
    cfg = {"_target_": target, "lr": 0.001, "dropout": 0.1}
    tune.write_tuned(path, target, {"lr": 0.002})
    assert tune.apply_tuned(cfg, path) == cfg | {"lr": 0.002}
    tune.write_tuned(path, "sklearn.linear_model.LogisticRegression", {"C": 2.0})
    assert tune.apply_tuned(cfg, path) == cfg  # tuned for another model: ignored
    tune.write_tuned(path, None, {})
    assert tune.apply_tuned(cfg, path) == cfg


def test_bad_search_space_names_the_key() -> None:
    with pytest.raises(PipelineError, match="no entry for MLP"):
        tune.check_space({}, "MLP")
    with pytest.raises(PipelineError, match=r"search_space\.MLP\.lr: needs low <= high"):
        tune.check_space({"lr": {"type": "float", "low": 1, "high": 0}}, "MLP")
    with pytest.raises(PipelineError, match="type must be"):
        tune.check_space({"lr": {"type": "uniform"}}, "MLP")


# -- distributed ---------------------------------------------------------------------------
def test_default_layout_needs_no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not distributed.needs_launch(LAYOUT)
    assert distributed.world_size() == 1 and distributed.rank() == 0


def test_torchrun_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    single = replace(LAYOUT, nproc_per_node=2)
    assert distributed.needs_launch(single)
    assert distributed.torchrun_command(single, "stages.train")[3:] == [
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "stages.train",
    ]
    multi = replace(LAYOUT, nproc_per_node=2, nnodes=3, rdzv_endpoint="node0:29400")
    cmd = distributed.torchrun_command(multi, "stages.train")
    assert "--nnodes=3" in cmd and "--rdzv_endpoint=node0:29400" in cmd
    with pytest.raises(PipelineError, match="rdzv_endpoint"):
        distributed.needs_launch(replace(LAYOUT, nnodes=2))
    with pytest.raises(PipelineError, match="does not train under torch DDP"):
        distributed.check_supported(LogisticRegression(), "LogisticRegression")
    distributed.check_supported(TorchMLPClassifier(), "TorchMLPClassifier")
