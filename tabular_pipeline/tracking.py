"""MLflow tracking that always lands in the project's one store.

Queued experiments run in temporary copies under ``.dvc/tmp/exps``; DVC points
``DVC_ROOT`` at the parent repository for them, so the embedded SQLite store
and artifact folder resolve to the real project, not the throw-away copy.
Nothing here runs at import time: the tracking URI is set only by
:func:`configure`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
MODEL_HASH_TAG = "model_sha256"


def project_root() -> Path:
    """The repository the user works in, even from a DVC experiment temp copy."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / STORE_FILE}"


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri


@contextmanager
def store_lock(root: Path, uri: str) -> Iterator[None]:
    """Serialise access to the embedded SQLite store across parallel queued runs."""
    if not is_local_store(uri):
        yield
        return
    from filelock import FileLock

    with FileLock(str(root / f"{STORE_FILE}.lock"), timeout=600):
        yield


# MLflow's own defaults retry 7 times with a 120 s timeout: about 4 minutes
# before a dead server fails the stage. These apply unless the user set them.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


def check_server(uri: str) -> None:
    """Fail fast, in one line naming the URI, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    timeout = float(
        os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    )
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered: auth and paths are MLflow's business from here
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineError(
            f"MLflow tracking server {uri} is unreachable: {reason} (timeout {timeout:g} s); "
            "start it (`make mlflow-server`) or unset MLFLOW_TRACKING_URI to use the local store"
        ) from exc


def preflight(root: Path | None = None) -> str:
    """Check the tracking store before a stage spends minutes on work it could not log."""
    for var, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(var, value)
    uri = tracking_uri(root or project_root())
    check_server(uri)
    return uri


def configure(root: Path, experiment: str) -> str:
    """Point MLflow at the store and return the experiment id (created on first use)."""
    uri = preflight(root)
    import mlflow

    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    location = (root / ARTIFACT_DIR / experiment).as_uri() if is_local_store(uri) else None
    return str(mlflow.create_experiment(experiment, artifact_location=location))


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def run_tags(cwd: Path) -> dict[str, str]:
    """Provenance tags: the code commit and, when there is one, the DVC experiment."""
    tags = {"pipeline": "tabular-pipeline"}
    commit = git_commit(cwd)
    if commit:
        tags["git_commit"] = commit
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_baseline")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def find_run_for_model(experiment_id: str, model_sha: str) -> str | None:
    """The newest run that trained exactly this model file (so evaluate joins it)."""
    import mlflow

    runs: Any = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.{MODEL_HASH_TAG} = '{model_sha}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return str(runs[0].info.run_id) if runs else None


def flatten(prefix: str, value: Any) -> dict[str, float]:
    """Nested metric dicts to MLflow's flat names (``test.per_class.gt50K.recall``)."""
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for key, sub in value.items():
            safe = "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in str(key))
            out.update(flatten(f"{prefix}.{safe}" if prefix else safe, sub))
        return out
    if isinstance(value, bool) or value is None:
        return {}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    return {}


def pip_requirements(torch: bool = False, model: Any = None) -> list[str]:
    """Pinned runtime needs of the logged sklearn pipeline (plus torch for the torch model).

    Explicit on purpose: without it MLflow infers requirements by loading the
    model in a subprocess, which costs seconds on every log. With ``model``,
    the distributions of the classes it holds are added (LightGBM, XGBoost,
    CatBoost: a pickled model cannot load without its library).
    """
    import sys
    from importlib.metadata import packages_distributions, version

    from tabular_pipeline import imports

    packages = ["scikit-learn", "pandas", "numpy", "scipy"] + (["torch"] if torch else [])
    if model is not None:
        by_module = packages_distributions()
        for top in sorted({m.split(".")[0] for m in imports.object_modules(model)}):
            if top not in sys.stdlib_module_names and top not in imports.PROJECT_PACKAGES:
                packages += [d for d in by_module.get(top, []) if d not in packages]
    return [f"{pkg}=={version(pkg)}" for pkg in packages]


def package_dir() -> Path:
    """This package's source folder, shipped with models whose classes live in it."""
    return Path(__file__).resolve().parent


def log_history(history: list[dict[str, float]], step_key: str = "epoch") -> None:
    """Per-epoch values as MLflow metric history (one step per epoch), in one batch."""
    import mlflow
    from mlflow.entities import Metric

    run = mlflow.active_run()
    if run is None or not history:
        return
    now = int(time.time() * 1000)
    metrics = [
        Metric(key=f"curve.{key}", value=float(value), timestamp=now, step=int(row[step_key]))
        for row in history
        for key, value in row.items()
        if key != step_key
    ]
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run.info.run_id, metrics=metrics[start : start + 1000])


def log_training_run(
    experiment: str,
    run_name: str,
    pipeline: Any,
    model_path: Path,
    params: dict[str, Any],
    metrics: dict[str, Any],
    input_example: Any,
    history: list[dict[str, float]] | None = None,
    package_code: bool = False,
) -> str:
    """Log params, metrics and the servable model; return the run id.

    ``package_code`` ships this package with the model (MLflow ``code_paths``)
    and adds torch to its requirements, so the torch model loads where the
    repository is absent.
    """
    import mlflow
    from mlflow.models import infer_signature

    root = project_root()
    uri = tracking_uri(root)
    signature = infer_signature(input_example, pipeline.predict(input_example))
    with store_lock(root, uri):
        experiment_id = configure(root, experiment)
        tags = run_tags(Path.cwd()) | {MODEL_HASH_TAG: file_sha256(model_path)}
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            flat_params = flatten_params("", params)
            mlflow.log_params(flat_params)
            mlflow.log_metrics(flatten("", metrics))
            log_history(history or [])
            mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=signature,
                input_example=input_example,
                pip_requirements=pip_requirements(torch=package_code, model=pipeline),
                code_paths=[str(package_dir())] if package_code else None,
                # skops refuses HistGradientBoosting's TreePredictor; this
                # artifact is produced right here, so pickle's risk is ours.
                serialization_format="cloudpickle",
            )
            log.info("MLflow run %s in %s (experiment %r)", run.info.run_id, uri, experiment)
            return str(run.info.run_id)


def log_evaluation(
    experiment: str, model_path: Path, metrics: dict[str, Any], plots_dir: Path
) -> None:
    """Add test metrics and plot data to the run that trained this exact model file."""
    import mlflow

    root = project_root()
    uri = tracking_uri(root)
    sha = file_sha256(model_path)
    with store_lock(root, uri):
        experiment_id = configure(root, experiment)
        run_id = find_run_for_model(experiment_id, sha)
        if run_id is None:
            log.warning("no MLflow run logged model %s; starting a new run", sha[:12])
        tags = run_tags(Path.cwd()) | {MODEL_HASH_TAG: sha}
        with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, tags=tags) as run:
            mlflow.log_metrics(flatten("test", metrics))
            mlflow.log_artifacts(str(plots_dir), artifact_path="plots")
            log.info("MLflow run %s: test metrics and plots logged", run.info.run_id)


def flatten_params(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, sub in value.items():
            out.update(flatten_params(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    return {prefix: str(value)}


class TrialLogger:
    """A parent MLflow run for a study and one nested child run per trial.

    The store lock is taken per write, not for the whole study, so parallel
    queued experiments are not blocked for minutes.
    """

    def __init__(self, experiment: str, run_name: str, params: dict[str, Any]) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.params = params
        self.root = project_root()
        self.uri = tracking_uri(self.root)
        self.parent_id = ""

    def __enter__(self) -> TrialLogger:
        import mlflow

        with store_lock(self.root, self.uri):
            experiment_id = configure(self.root, self.experiment)
            self.experiment_id = experiment_id
            client = mlflow.MlflowClient()
            run = client.create_run(
                experiment_id, run_name=self.run_name, tags=run_tags(Path.cwd())
            )
            self.parent_id = run.info.run_id
            client.log_batch(self.parent_id, params=_params(flatten_params("", self.params)))
        log.info("MLflow run %s in %s: study with nested trial runs", self.parent_id, self.uri)
        return self

    def log_trial(
        self, number: int, values: dict[str, Any], value: float, worker: str = ""
    ) -> None:
        import mlflow
        from mlflow.entities import Metric

        client = mlflow.MlflowClient()
        tags = {"mlflow.parentRunId": self.parent_id, "trial": str(number)}
        if worker:  # distributed tuning: which worker ran it (docs/tuning.md)
            tags["worker"] = worker
        with store_lock(self.root, self.uri):
            run = client.create_run(self.experiment_id, run_name=f"trial-{number}", tags=tags)
            client.log_batch(
                run.info.run_id,
                metrics=[Metric("value", value, int(time.time() * 1000), 0)],
                params=_params(flatten_params("", values)),
            )
            client.set_terminated(run.info.run_id)

    def finish(self, best: dict[str, Any], summary: dict[str, Any]) -> None:
        import mlflow

        client = mlflow.MlflowClient()
        with store_lock(self.root, self.uri):
            client.log_batch(
                self.parent_id, params=_params(flatten_params("best", best) if best else {})
            )
            for key, value in flatten("", summary).items():
                client.log_metric(self.parent_id, key, value)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        import mlflow

        if self.parent_id:
            with store_lock(self.root, self.uri):
                mlflow.MlflowClient().set_terminated(
                    self.parent_id, status="FAILED" if exc_type else "FINISHED"
                )


def _params(values: dict[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(key, value) for key, value in values.items()]
