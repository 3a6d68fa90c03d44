"""End to end with LightGBM: `dvc exp run -S model=lightgbm` with tune, through package.

One library through the real chain (tune, train, evaluate, explain, register,
package); the other two are covered per library by tests/test_gbdt.py and
tests/test_bento_standalone.py. Tiny budgets: this checks the wiring.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ran_stages

pytestmark = pytest.mark.slow

LGBM = [
    *("-S", "model=lightgbm", "-S", "model.n_estimators=60", "-S", "model.learning_rate=0.2"),
    *("-S", "tune.enabled=true", "-S", "tune.n_trials=2"),
    *("-S", "evaluate.importance.n_repeats=1"),
]


def test_lightgbm_tunes_trains_explains_exactly_and_packages(project: Path, dvc) -> None:
    out = dvc("exp", "run", *LGBM)
    assert {"tune", "train", "explain", "package"} <= set(ran_stages(out.stdout))
    best = yaml.safe_load((project / "reports/tune/best_params.yaml").read_text())
    assert best["tuned_for"].endswith("LGBMClassifier")
    assert {"learning_rate", "num_leaves"} <= set(best["model"])
    assert json.loads((project / "metrics/evaluate.json").read_text())["accuracy"] > 0.8
    explained = json.loads((project / "reports/explain/summary.json").read_text())
    assert explained["exact"] is True and explained["space"] == "log-odds"
    assert explained["max_additivity_error"] < 1e-6
    assert "APPROXIMATE" not in out.stdout + out.stderr
    with tarfile.open(project / "models/service.bento") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("requirements.txt"))
        handle = tar.extractfile(member)
        assert handle is not None
        requirements = handle.read().decode()
    assert "lightgbm==" in requirements
    assert "xgboost" not in requirements and "catboost" not in requirements
