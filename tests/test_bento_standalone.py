"""Every model's Bento loads and predicts with nothing of the project but its own src/.

In the project the package is installed in editable mode, so a Bento that
forgot a module (the torch MLP's class) still loads here and only fails in a
container. This test extracts each archive into an empty folder and predicts
in a Python started with ``-I -S``: no editable-install hook, no repository on
the path, only the Bento's ``src/`` and the installed third-party libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabular_pipeline import compose
from tabular_pipeline.config import DataConfig, FeaturizeConfig, load_params, parse_section
from tabular_pipeline.models.features import build_featurizer, feature_columns
from tabular_pipeline.models.modeling import build_estimator, fit_pipeline, task_model_cfg
from tabular_pipeline.serving import package
from tabular_pipeline.serving.runtime import ServingConfig
from tabular_pipeline.serving.schema import build_field_specs
from tabular_pipeline.serving.settings import ServeConfig
from tests.conftest import ROOT, shipped

pytestmark = pytest.mark.slow

# `linear` is conf/model/logreg.yaml under a second name: not built twice.
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if p.stem != "linear")
# Classifiers for every model; the regressor of the model whose class lives in
# this package (the torch MLP), the one a Bento could fail to unpickle.
CASES = [(m, "binary") for m in MODELS] + [("mlp", "regression")]
# Smaller than shipped, same classes: the test is about loading, not accuracy.
FAST = {
    "hgb": {"max_iter": 10},
    "random_forest": {"n_estimators": 10},
    "mlp": {"max_epochs": 2, "hidden_sizes": [16], "verbose": False},
    "lightgbm": {"n_estimators": 20},
    "xgboost": {"n_estimators": 20},
    "catboost": {"iterations": 20},
}
# The GBDT libraries' distributions, pinned in the Bento when their model is.
LIBRARY_PINS = {"lightgbm": "lightgbm==", "xgboost": "xgboost-cpu==", "catboost": "catboost=="}

PREDICT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    src, model_file, rows_file, out_file = map(Path, sys.argv[1:5])
    import joblib, numpy as np, pandas as pd
    import tabular_pipeline
    from tabular_pipeline.serving.fast import FastPredictor
    from tabular_pipeline.serving.runtime import load_config
    from tabular_pipeline.serving.schema import frame_to_rows
    assert Path(tabular_pipeline.__file__).resolve().is_relative_to(src.resolve()), (
        tabular_pipeline.__file__)
    pipeline = joblib.load(model_file)
    config = load_config(src / "serving.json")
    frame = pd.read_parquet(rows_file)
    method = "predict" if config.task == "regression" else "predict_proba"
    served = getattr(FastPredictor(pipeline, config.fields), method)(
        frame_to_rows(frame, config.fields))
    np.save(out_file, np.stack([getattr(pipeline, method)(frame), served]))
    print(json.dumps(sorted(m for m in sys.modules if m.startswith("tabular_pipeline"))))
    """
)


def toy(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "num": rng.normal(size=n),
            "count": rng.integers(0, 10, size=n).astype("int64"),
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], size=n)),
        }
    )
    score = frame["num"] + (frame["colour"] == "red") + rng.normal(scale=0.5, size=n)
    frame["label"] = np.where(score > 0.5, "yes", "no")
    frame["value"] = score.fillna(0.0).astype("float64")
    frame.loc[::7, "num"] = np.nan
    return frame


@pytest.mark.parametrize(("model", "task"), CASES)
def test_bento_predicts_outside_the_project(model: str, task: str, tmp_path: Path) -> None:
    params = load_params(
        compose.compose_params(
            ROOT, compose.HydraSettings(), [f"model={model}"], tmp_path / "params.yaml"
        )
    )
    target, other = ("value", "label") if task == "regression" else ("label", "value")
    train, test = toy(400, 0).drop(columns=[other]), toy(200, 1).drop(columns=[other])
    numeric, categorical = feature_columns(train, target)
    cfg = parse_section(params, "featurize", FeaturizeConfig)  # the model's preset
    featurizer = build_featurizer(numeric, categorical, cfg)
    featurizer.fit(train.drop(columns=[target]))
    estimator = build_estimator(task_model_cfg(params["model"], task) | FAST.get(model, {}))
    pipeline = fit_pipeline(featurizer, estimator, train, target, valid=test)
    model_file = tmp_path / "model.joblib"
    import joblib

    joblib.dump(pipeline, model_file)

    data = DataConfig(name="toy", target=target)
    specs = build_field_specs(featurizer, data)
    variants, files = package.variants("toy", model_file, None, 0.1)
    config = ServingConfig(
        "toy",
        target,
        [str(c) for c in getattr(pipeline, "classes_", [])],
        specs,
        variants,
        shipped("serve", ServeConfig),
        task=task,
    )
    archive = tmp_path / "service.bento"
    shipped_contents = build_in_subprocess(config, files, archive, tmp_path)

    bento = tmp_path / "bento"
    with tarfile.open(archive) as tar:
        tar.extractall(bento, filter="data")
    src = bento / "src"
    requirements = (bento / "env/python/requirements.txt").read_text()
    (stored,) = (bento / "models").glob(f"toy-champion/*/{package.MODEL_FILE}")
    rows = tmp_path / "rows.parquet"
    features = test.drop(columns=[target])
    features.to_parquet(rows)
    out = tmp_path / "out.npy"
    site = sysconfig.get_paths()["purelib"]
    bootstrap = f"import sys; sys.path[:] = [{str(src)!r}, {site!r}] + sys.path[-3:]\n"
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            bootstrap + PREDICT,
            str(src),
            str(stored),
            str(rows),
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    plain, served = np.load(out)
    expected = (
        pipeline.predict(features) if task == "regression" else pipeline.predict_proba(features)
    )
    # Equal up to summation order (a random forest adds its trees' votes in threads).
    np.testing.assert_allclose(plain, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-9)

    shipped_files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.py"))
    assert shipped_files == [p.as_posix() for p in shipped_contents.files]
    if model == "mlp":
        assert "tabular_pipeline.models.torch_mlp" in loaded
        assert "tabular_pipeline/models/torch_mlp.py" in shipped_files
        assert "torch==2.13.0" in requirements
        # The CPU wheel lives on PyTorch's index: the container build must know it.
        assert requirements.splitlines()[0] == (
            "--extra-index-url https://download.pytorch.org/whl/cpu"
        )
    elif model == "xgboost":  # the pipeline's XGBoost class (text labels) ships in src/
        assert "tabular_pipeline.models.xgb" in loaded
        assert "tabular_pipeline/models/xgb.py" in shipped_files
    else:
        assert "torch" not in requirements
        assert not any(m.startswith("tabular_pipeline.models") for m in loaded)
    for lib, pin in LIBRARY_PINS.items():  # only the model's own library is pinned
        assert (pin in requirements) == (model == lib), (lib, requirements)


BUILD = textwrap.dedent(
    """
    import pickle, sys
    from pathlib import Path
    from tabular_pipeline.serving import package
    config, files, out, root = pickle.loads(Path(sys.argv[1]).read_bytes())
    _, contents = package.build_archive(config, files, out, root)
    Path(sys.argv[2]).write_bytes(pickle.dumps(contents))
    """
)


def build_in_subprocess(
    config: ServingConfig, files: dict[str, Path], archive: Path, tmp: Path
) -> package.Contents:
    """As the package stage does, one build per process: BentoML reads its home once."""
    import pickle

    (tmp / "build.pkl").write_bytes(pickle.dumps((config, files, archive, ROOT)))
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(tmp / "build.pkl"), str(tmp / "contents.pkl")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    contents = pickle.loads((tmp / "contents.pkl").read_bytes())
    assert isinstance(contents, package.Contents)
    return contents
