"""Idempotent registration and alias moves in the MLflow model registry.

The registry is a side effect outside DVC. Rules that keep it sane:

- A version is identified by the SHA-256 of the model file (tag
  ``model_sha256``), so registering the same file twice finds the existing
  version instead of creating another one (MLflow itself would duplicate).
- Only the alias (``champion`` by default) marks what serves; deprecated
  stages are never used.
- Every read-modify-write runs under the store lock of
  :mod:`tabular_pipeline.tracking`, so parallel queued experiments serialise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabular_pipeline import tracking

log = logging.getLogger(__name__)

DECISION_TAG = "gate_decision"
REASONS_TAG = "gate_failures"


@dataclass
class VersionRef:
    name: str
    version: int
    run_id: str | None
    created: bool


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def ensure_registered_model(name: str) -> None:
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Registered by the tabular-pipeline `register` stage."
        )


def find_version(name: str, model_sha: str) -> Any | None:
    """The registered version of exactly this model file, if any (oldest first)."""
    versions = _client().search_model_versions(f"name = '{name}'")
    same = [v for v in versions if v.tags.get(tracking.MODEL_HASH_TAG) == model_sha]
    return min(same, key=lambda v: int(v.version)) if same else None


def logged_model_uri(experiment_id: str, run_id: str) -> str | None:
    """The ``models:/m-...`` URI of the model the train run logged."""
    import mlflow

    models = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
    return str(models[0].model_uri) if models else None


def register(
    name: str,
    experiment_id: str,
    model_path: Path,
    pipeline: Any,
    input_example: Any,
) -> VersionRef:
    """Register this model file once; later calls return the same version."""
    import mlflow

    sha = tracking.file_sha256(model_path)
    ensure_registered_model(name)
    found = find_version(name, sha)
    if found is not None:
        log.info("model %s… is already %s version %s", sha[:12], name, found.version)
        return VersionRef(name, int(found.version), found.run_id, created=False)
    run_id = tracking.find_run_for_model(experiment_id, sha)
    uri = logged_model_uri(experiment_id, run_id) if run_id else None
    if uri is None:
        # train ran against another store (or it was restored from DVC's run
        # cache): log this exact file now so the version has an artifact.
        from mlflow.models import infer_signature

        log.warning("no logged model for %s… in this store: logging it now", sha[:12])
        tags = tracking.run_tags(Path.cwd()) | {tracking.MODEL_HASH_TAG: sha}
        with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, tags=tags) as run:
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=infer_signature(input_example, pipeline.predict(input_example)),
                input_example=input_example,
                pip_requirements=tracking.pip_requirements(model=pipeline),
                serialization_format="cloudpickle",
            )
            run_id, uri = run.info.run_id, info.model_uri
    version = mlflow.register_model(uri, name, tags={tracking.MODEL_HASH_TAG: sha})
    log.info("registered %s version %s from run %s", name, version.version, run_id)
    return VersionRef(name, int(version.version), run_id, created=True)


def champion(name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_version(name: str, version: int) -> Any:
    import mlflow

    return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def predictions(pipeline: Any, frame: Any, target: str, classes: list[str] | None = None) -> Any:
    """A fitted pipeline's per-row predictions on ``frame`` (``resampling.Scored``).

    ``classes``: the probability columns in this order (another version's
    class order), so two models' probabilities pair column by column.
    """
    from tabular_pipeline.errors import PipelineError
    from tabular_pipeline.evaluation import resampling
    from tabular_pipeline.models.modeling import predict_proba, predict_values

    if not hasattr(pipeline, "classes_"):
        return resampling.regression(frame[target], predict_values(pipeline, frame, target))
    proba, own = predict_proba(pipeline, frame, target)
    if classes is not None and own != classes:
        if sorted(own) != sorted(classes):
            raise PipelineError(
                f"register.compare: the champion's classes {own} differ from the candidate's "
                f"{classes}; the two cannot be compared row by row (a label change: retire the "
                "champion or relabel)"
            )
        proba, own = proba[:, [own.index(c) for c in classes]], list(classes)
    return resampling.classification(frame[target], proba, own)


def rescore(
    name: str, version: int, test: Any, target: str, classes: list[str] | None = None
) -> Any:
    """A registered version's per-row predictions on today's test split."""
    log.info("re-scoring %s v%s on this test split", name, version)
    return predictions(load_version(name, version), test, target, classes)


def record_decision(
    ref: VersionRef,
    alias: str,
    promote: bool,
    previous: int | None,
    decision: str,
    failures: list[str],
) -> None:
    """Tag the version with the outcome; move the alias and tag the old champion on promote."""
    client = _client()
    client.set_model_version_tag(ref.name, str(ref.version), DECISION_TAG, decision)
    client.set_model_version_tag(
        ref.name, str(ref.version), REASONS_TAG, "; ".join(failures) or "none"
    )
    if not promote:
        return
    if previous is not None and previous != ref.version:
        client.set_model_version_tag(
            ref.name, str(previous), f"replaced_as_{alias}_by", str(ref.version)
        )
    client.set_registered_model_alias(ref.name, alias, str(ref.version))
    log.info("%s alias %r -> version %s", ref.name, alias, ref.version)


def log_card(card: dict[str, Any], ref: VersionRef, experiment_id: str, verdict: str) -> None:
    """The card's MLflow copy, on the run that trained the version, with run lineage."""
    if not ref.run_id:
        return
    import mlflow

    from tabular_pipeline.reporting import model_card

    logged = model_card.with_run_lineage(card, ref.run_id, tracking.git_commit(Path.cwd()))
    with mlflow.start_run(run_id=ref.run_id, experiment_id=experiment_id):
        mlflow.set_tags({"register.decision": verdict, "register.version": str(ref.version)})
        mlflow.log_dict(logged, "model_card/model_card.json")
        mlflow.log_text(model_card.to_markdown(logged), "model_card/model_card.md")
