"""Stage register: gate the model, register it in MLflow, move the alias, write the card.

Under plain `dvc repro` a failed gate stops the pipeline (one line per
gate), so `package` never sees a rejected model. Under `dvc exp run` the
decision is recorded and the experiment completes; the alias moves only when
`register.promote_in_experiments` is true.
"""

import logging
import os
from pathlib import Path
from typing import Any

from tabular_pipeline import stage, tracking
from tabular_pipeline.config import (
    DriftConfig,
    EvaluateConfig,
    RegisterConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    load_data_config,
    load_params,
    parse_section,
)
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.evaluation.metrics import score
from tabular_pipeline.models.modeling import signature_example
from tabular_pipeline.registry import gates, mlflow_registry
from tabular_pipeline.reporting import lineage, model_card

log = logging.getLogger("register")


def main() -> None:
    params = load_params()
    data = load_data_config(params)
    split_dir = Path(parse_section(params, "split", SplitConfig).out_dir)
    model_path = Path(parse_section(params, "train", TrainConfig).model_out)
    ev_cfg = parse_section(params, "evaluate", EvaluateConfig)
    drift_cfg = parse_section(params, "drift", DriftConfig)
    cfg = parse_section(params, "register", RegisterConfig)
    track = parse_section(params, "tracking", TrackingConfig)

    metrics = stage.read_json(Path(ev_cfg.metrics_out))
    fairness = stage.read_json(Path(ev_cfg.fairness_out))
    metrics["ci"] = fairness.get("ci", {})
    drift = stage.read_json(Path(drift_cfg.metrics_out))
    drift_summary = stage.read_json(Path(drift_cfg.summary_out))
    test = stage.read_parquet(split_dir / "test.parquet")
    pipeline = stage.load_object(model_path)
    in_experiment = bool(os.environ.get("DVC_EXP_NAME"))

    import mlflow

    root = tracking.project_root()
    uri = tracking.tracking_uri(root)
    with tracking.store_lock(root, uri):
        experiment_id = tracking.configure(root, track.experiment)
        example = signature_example(test.drop(columns=[data.target]))
        ref = mlflow_registry.register(cfg.model_name, experiment_id, model_path, pipeline, example)
        current = mlflow_registry.champion(cfg.model_name, cfg.alias)
        champ_version = int(current.version) if current is not None else None
        champ_metrics: dict[str, Any] | None = None
        if champ_version == ref.version:
            champ_metrics = metrics  # already the champion: compared with itself
        elif champ_version is not None:
            log.info("re-scoring %s v%s on this test split", cfg.model_name, champ_version)
            champ = mlflow_registry.load_version(cfg.model_name, champ_version)
            champ_metrics = score(champ, test, data.target)

        decision = gates.decide(
            metrics,
            champ_metrics,
            dict(cfg.floors),
            dict(cfg.max_regression),
            drift | {"failure_lines": drift_summary["gate_failures"]}
            if cfg.require_drift_pass
            else None,
            cfg.max_fairness_gap,
            str(champ_version) if champ_version is not None else None,
            ceilings=dict(cfg.ceilings),
        )
        promote = decision.passed and (not in_experiment or cfg.promote_in_experiments)
        if not decision.passed:
            verdict = "rejected"
        elif promote:
            verdict = "promoted"
        else:
            verdict = "passed-not-promoted"
        failures = [g.detail for g in decision.failures]
        mlflow_registry.record_decision(ref, cfg.alias, promote, champ_version, verdict, failures)
        champion_after = ref.version if promote else champ_version

        record = {
            "promoted": champion_after == ref.version,
            "decision": verdict,
            "model_name": cfg.model_name,
            "version": ref.version,
            "champion_version_before": champ_version,
            "champion_version": champion_after,
            "champion_rescored": (
                None
                if champ_metrics is None or champ_version == ref.version
                else {
                    k: champ_metrics.get(k)
                    for k in sorted(cfg.max_regression)
                    if gates.applies(k, champ_metrics)
                }
            ),
            "gates": {g.name: g.as_dict() for g in decision.gates},
            "directions": decision.directions,
        }
        stage.write_json(Path(cfg.decision_out), record)
        stage.write_json(
            Path(cfg.registry_out),
            {
                "model_name": cfg.model_name,
                "version": ref.version,
                "model_uri": f"models:/{cfg.model_name}/{ref.version}",
                "alias": cfg.alias,
                "promoted": record["promoted"],
                tracking.MODEL_HASH_TAG: tracking.file_sha256(model_path),
            },
        )

        card = model_card.build(
            model_name=cfg.model_name,
            model_cfg=dict(params["model"]),
            seed=int(params["seed"]),
            registry={
                "model_name": cfg.model_name,
                "version": ref.version,
                "alias": cfg.alias,
                "is_alias_target": record["promoted"],
            },
            data=lineage.data_section(data, split_dir),
            text={
                "description": data.card.description,
                "intended_use": data.card.intended_use,
                "limitations": data.card.limitations,
                "citation": data.card.citation,
            },
            evaluation=metrics,
            fairness=fairness,
            drift={k: v for k, v in drift_summary.items() if k not in ("columns", "prediction")}
            | {"gate_passed": drift["gate_passed"]},
            drift_top=lineage.top_drifted(drift_summary, 5),
            decision={
                "decision": verdict,
                "promoted": record["promoted"],
                "gates": record["gates"],
                "directions": record["directions"],
                "failures": failures,
            },
            lineage=lineage.hashes(model_path, split_dir),
            versions=lineage.framework_versions(),
        )
        card_dir = Path(cfg.card_dir)
        lineage.write_card(card, card_dir)
        if ref.run_id:
            logged = model_card.with_run_lineage(card, ref.run_id, tracking.git_commit(Path.cwd()))
            with mlflow.start_run(run_id=ref.run_id, experiment_id=experiment_id):
                mlflow.set_tags(
                    {"register.decision": verdict, "register.version": str(ref.version)}
                )
                mlflow.log_dict(logged, "model_card/model_card.json")
                mlflow.log_text(model_card.to_markdown(logged), "model_card/model_card.md")

    for gate in decision.gates:
        log.info("gate %-22s %s: %s", gate.name, "ok  " if gate.passed else "FAIL", gate.detail)
    log.info("%s version %s: %s", cfg.model_name, ref.version, verdict)
    if decision.passed:
        return
    if in_experiment:
        log.warning("experiment: rejection recorded in %s; run continues", cfg.decision_out)
        return
    raise PipelineError(
        f"register: {cfg.model_name} version {ref.version} rejected, "
        f"alias {cfg.alias!r} unchanged:\n"
        + "\n".join(f"  - {g.detail}" for g in decision.failures)
    )


if __name__ == "__main__":
    stage.run(main)
