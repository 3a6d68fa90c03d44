"""The user's own code in a generated project (docs/your-code.md): a custom transformer
with a custom estimator, then in front of LightGBM, named by `_target_` in the user's own
configs, run through `package`; the Bento predicts outside the project as the pipeline
does; a template update leaves the user's folder, dependencies and configs untouched."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tabular_pipeline.serving.package import MODEL_FILE
from tests.conftest import git, run
from tests.test_template import (  # noqa: F401  (template_repo is a fixture)
    ANSWERS,
    VENV,
    conflict_lines,
    copier,
    generate,
    release,
    synthetic_csv,
    template_repo,
)

# A template round trip (copier copy, make repro, copier update): the exhaustive tier.
pytestmark = [pytest.mark.slow, pytest.mark.exhaustive]

USER_FILES = {
    "user/features.py": '''
        """A feature step of our own: signed log of skewed amounts."""

        import numpy as np
        from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin


        class SignedLog(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
            def fit(self, X, y=None):
                self.n_features_in_ = np.asarray(X).shape[1]
                return self

            def transform(self, X):
                X = np.asarray(X, dtype=float)
                return np.sign(X) * np.log1p(np.abs(X))
        ''',
    "user/models.py": '''
        """A model of our own: logistic regression that weighs the classes equally."""

        from sklearn.linear_model import LogisticRegression


        class BalancedLogit(LogisticRegression):
            def __init__(self, C=1.0, max_iter=1000, random_state=None):
                super().__init__(
                    C=C, max_iter=max_iter, random_state=random_state, class_weight="balanced"
                )
        ''',
    "conf/featurize/mine.yaml": """
        defaults:
          - scaled
          - _self_
        steps:
          numeric:
            scale: null                      # re-added after our step: order is config order
            log: {_target_: user.features.SignedLog}
            rescale: {_target_: sklearn.preprocessing.StandardScaler}
        """,
    "conf/model/mine.yaml": """
        defaults:
          - override /featurize@_global_.featurize: mine
          - _self_
        _target_: user.models.BalancedLogit
        C: 0.5
        random_state: ${seed}
        """,
}

LGBM_FILES = {
    "conf/featurize/mine_trees.yaml": """
        defaults:
          - trees
          - _self_
        steps:
          numeric:
            log: {_target_: user.features.SignedLog}
        """,
}

PREDICT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    model_file, rows_file, out_file = map(Path, sys.argv[1:4])
    import joblib, numpy as np, pandas as pd
    pipeline = joblib.load(model_file)
    frame = pd.read_parquet(rows_file).drop(columns=["churned"])
    np.save(out_file, pipeline.predict_proba(frame))
    assert "omegaconf" not in sys.modules  # _convert_ all: no config type in the pickle
    import user.features
    print(user.features.__file__)
    """
)


def predict(python_path: list[str], model: Path, rows: Path, out: Path, cwd: Path) -> str:
    """Predict in a fresh interpreter that sees only ``python_path`` (no project, no .pth)."""
    bootstrap = f"import sys; sys.path[:] = {python_path!r} + sys.path[-3:]\n"
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", bootstrap + PREDICT, str(model), str(rows), str(out)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_users_code_runs_through_package_and_survives_update(
    template_repo: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    template = tmp_path / "template"
    git(tmp_path, "clone", "-q", str(template_repo), str(template))
    project = generate(template, tmp_path / "shop", ANSWERS | {"model": "hgb"})
    for rel, text in USER_FILES.items():
        (project / rel).write_text(textwrap.dedent(text).lstrip())
    (project / "requirements/user.txt").write_text(
        (project / "requirements/user.txt").read_text() + "joblib\n"  # already locked: no download
    )
    config = project / "conf/config.yaml"
    config.write_text(config.read_text().replace("- model: hgb", "- model: mine"))
    synthetic_csv(project / "data/raw/shop/train.csv")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "start, with our code")
    make = ["make", f"VENV={VENV}"]
    run([*make, "schema"], project)
    run([*make, "repro"], project, timeout=1200)

    features = (project / "reports/featurize/features.json").read_text()
    assert "num__tenure_months" in features  # OneToOneFeatureMixin keeps the names
    archive = project / "models/service.bento"
    bento = tmp_path / "bento"
    with tarfile.open(archive) as tar:
        tar.extractall(bento, filter="data")
    src = bento / "src"
    assert (src / "user/features.py").is_file() and (src / "user/models.py").is_file()
    requirements = (bento / "env/python/requirements.txt").read_text()
    assert "scikit-learn==" in requirements
    (stored,) = (bento / "models").glob(f"*-champion/*/{MODEL_FILE}")

    rows = project / "data/split/test.parquet"
    site = sysconfig.get_paths()["purelib"]
    outside = tmp_path / "outside"
    outside.mkdir()
    where = predict([str(src), site], stored, rows, outside / "bento.npy", outside)
    assert Path(where).resolve().is_relative_to(src.resolve())
    predict(
        [str(project), site], project / "models/model.joblib", rows, tmp_path / "p.npy", project
    )
    np.testing.assert_array_equal(np.load(outside / "bento.npy"), np.load(tmp_path / "p.npy"))

    # The same transformer in front of LightGBM (issue 25): the user's model file is
    # the shipped one with the featurize preset pointed at their own steps.
    for rel, text in LGBM_FILES.items():
        (project / rel).write_text(textwrap.dedent(text).lstrip())
    (project / "conf/model/mine_lgbm.yaml").write_text(
        (project / "conf/model/lightgbm.yaml")
        .read_text()
        .replace("featurize: trees", "featurize: mine_trees")
    )
    config.write_text(config.read_text().replace("- model: mine", "- model: mine_lgbm"))
    # An experiment, as a user tries another model: on 120 test rows the paired
    # gate cannot show LightGBM non-inferior to the registered champion, so a plain
    # `dvc repro` stops at register; the experiment records that and packages.
    run([*make, "params"], project)
    repro = run([str(VENV / "bin/dvc"), "exp", "run"], project, timeout=1200)
    assert "Running stage 'package'" in repro.stdout
    assert "lightgbm.LGBMClassifier" in (project / "params.yaml").read_text()
    features = (project / "reports/featurize/features.json").read_text()
    assert "num__tenure_months" in features
    lgbm_bento = tmp_path / "bento-lgbm"
    with tarfile.open(archive) as tar:
        tar.extractall(lgbm_bento, filter="data")
    src = lgbm_bento / "src"
    assert "lightgbm==" in (lgbm_bento / "env/python/requirements.txt").read_text()
    (stored,) = (lgbm_bento / "models").glob(f"*-champion/*/{MODEL_FILE}")
    where = predict([str(src), site], stored, rows, outside / "lgbm.npy", outside)
    assert Path(where).resolve().is_relative_to(src.resolve())
    predict(
        [str(project), site], project / "models/model.joblib", rows, tmp_path / "l.npy", project
    )
    bento_proba, project_proba = np.load(outside / "lgbm.npy"), np.load(tmp_path / "l.npy")
    np.testing.assert_array_equal(bento_proba, project_proba)
    assert not np.array_equal(bento_proba, np.load(outside / "bento.npy"))  # another model

    # A template release that changes template-owned files; ours stay as they are.
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "first run")
    ours = {
        rel: (project / rel).read_text()
        for rel in [*USER_FILES, *LGBM_FILES, "conf/model/mine_lgbm.yaml", "requirements/user.txt"]
    }
    ours["user/__init__.py"] = (project / "user/__init__.py").read_text()
    (template / "user/__init__.py").write_text('"""Changed upstream."""\n')
    (template / "requirements/user.txt").write_text("# changed upstream\n")
    mk = template / "Makefile"
    mk.write_text(mk.read_text().replace("\nhelp:\n", "\n# release 0.0.2\nhelp:\n"))
    release(template, "v0.0.2", "template release 0.0.2")
    copier("update", "--defaults", cwd=project)
    assert "# release 0.0.2\nhelp:" in (project / "Makefile").read_text()
    assert {rel: (project / rel).read_text() for rel in ours} == ours
    assert conflict_lines(project) == []
