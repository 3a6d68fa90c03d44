"""Stage register: gate the model, register it in MLflow, move the alias, write the card.

Under plain `dvc repro` a failed gate stops the pipeline (one line per
gate), so `package` never sees a rejected model. Under `dvc exp run` the
decision is recorded and the experiment completes; the alias moves only when
`register.promote_in_experiments` is true. The policy lives in
`tabular_pipeline.registry.promotion`; this script reads, calls and writes.
"""

import logging
import os
from pathlib import Path

from tabular_pipeline import stage, tracking
from tabular_pipeline.config import (
    CvConfig,
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
from tabular_pipeline.evaluation import resampling
from tabular_pipeline.explain.settings import ExplainConfig
from tabular_pipeline.models.modeling import signature_example
from tabular_pipeline.registry import gates, mlflow_registry, promotion
from tabular_pipeline.reporting import model_card

log = logging.getLogger("register")


def main() -> None:
    params = load_params()
    data = load_data_config(params)
    split_cfg = parse_section(params, "split", SplitConfig)
    split_dir = Path(split_cfg.out_dir)
    cv_cfg = parse_section(params, "cv", CvConfig)
    model_path = Path(parse_section(params, "train", TrainConfig).model_out)
    ev_cfg = parse_section(params, "evaluate", EvaluateConfig)
    drift_cfg = parse_section(params, "drift", DriftConfig)
    cfg = parse_section(params, "register", RegisterConfig)
    track = parse_section(params, "tracking", TrackingConfig)

    fairness = stage.read_json(Path(ev_cfg.fairness_out))
    metrics = stage.read_json(Path(ev_cfg.metrics_out)) | {
        "ci": fairness.get("ci", {}),
        "sampling": fairness.get("sampling", {}),
    }
    drift = stage.read_json(Path(drift_cfg.metrics_out))
    drift_summary = stage.read_json(Path(drift_cfg.summary_out))
    explain_summary = stage.read_json(
        Path(parse_section(params, "explain", ExplainConfig).summary_out)
    )
    test = stage.read_parquet(split_dir / "test.parquet")
    pipeline = stage.load_object(model_path)
    in_experiment = bool(os.environ.get("DVC_EXP_NAME"))

    root = tracking.project_root()
    with tracking.store_lock(root, tracking.tracking_uri(root)):
        experiment_id = tracking.configure(root, track.experiment)
        example = signature_example(test.drop(columns=[data.target]))
        registered = mlflow_registry.register(
            cfg.model_name, experiment_id, model_path, pipeline, example
        )
        current = mlflow_registry.champion(cfg.model_name, cfg.alias)
        champion_version = int(current.version) if current is not None else None
        same_model = champion_version == registered.version
        compare = cfg.compare
        compared = gates.compared(dict(compare.margins), metrics)
        task = "regression" if "rmse" in metrics else "classification"
        resampling.check_metrics(compared, task, "register.compare.margins")
        differences, comparison = None, None
        if champion_version is not None:
            # Both models' per-row predictions on the same test rows: the champion
            # re-scored on today's split (itself when this version is the champion).
            new_rows = mlflow_registry.predictions(pipeline, test, data.target)
            old_rows = (
                new_rows
                if same_model
                else mlflow_registry.rescore(
                    cfg.model_name,
                    champion_version,
                    test,
                    data.target,
                    list(new_rows.classes) or None,
                )
            )
            groups, resampled = promotion.resampling_units(test, data.group_column)
            differences = {
                name: d.as_dict()
                for name, d in resampling.paired(
                    new_rows,
                    old_rows,
                    compared,
                    compare.n_resamples,
                    compare.confidence,
                    compare.seed,
                    groups=groups,
                    where="register.compare",
                ).items()
            }
            comparison = promotion.comparison_record(compare, compared, resampled, champion_version)
        champion = promotion.champion_metrics(
            champion_version,
            registered.version,
            metrics,
            lambda version: {k: d["old"] for k, d in (differences or {}).items()},
        )
        decision = gates.decide(
            metrics=metrics,
            differences=differences,
            floors=dict(cfg.floors),
            margins=dict(compare.margins),
            drift=promotion.drift_evidence(drift, drift_summary, cfg.require_drift_pass),
            max_fairness_gap=cfg.max_fairness_gap,
            champion_version=None if champion_version is None else str(champion_version),
            ceilings=dict(cfg.ceilings),
            mode=compare.mode,
            same_model=same_model,
        )
        verdict, promote = promotion.verdict(
            decision.passed, in_experiment, cfg.promote_in_experiments
        )
        headline, details = promotion.records(
            decision=decision,
            verdict=verdict,
            promote=promote,
            model_name=cfg.model_name,
            version=registered.version,
            champion_before=champion_version,
            champion=champion,
            compared=compared,
            comparison=comparison,
        )
        mlflow_registry.record_decision(
            registered, cfg.alias, promote, champion_version, verdict, details["failures"]
        )
        registry = {
            "model_name": cfg.model_name,
            "version": registered.version,
            "model_uri": f"models:/{cfg.model_name}/{registered.version}",
            "alias": cfg.alias,
            "promoted": headline["promoted"],
            tracking.MODEL_HASH_TAG: tracking.file_sha256(model_path),
        }
        stage.write_json(Path(cfg.decision_out), headline)
        stage.write_json(Path(cfg.details_out), details)
        stage.write_json(Path(cfg.registry_out), registry)
        card = model_card.from_artifacts(
            params=params,
            data=data,
            registry={k: registry[k] for k in ("model_name", "version", "alias")}
            | {"is_alias_target": headline["promoted"]},
            split_dir=split_dir,
            model_path=model_path,
            evaluation=metrics,
            fairness=fairness,
            drift=drift,
            drift_summary=drift_summary,
            decision={
                "decision": verdict,
                "promoted": headline["promoted"],
                "gates": details["gates"],
                "directions": details["directions"],
                "failures": details["failures"],
                "compare": details["compare"],
            },
        )
        card["explanations"] = model_card.explanations(explain_summary)
        card["split"] = model_card.split_section(stage.read_json(Path(split_cfg.summary_out)))
        card["cross_validation"] = stage.read_json(Path(cv_cfg.metrics_out))
        model_card.write(card, Path(cfg.card_dir))
        mlflow_registry.log_card(card, registered, experiment_id, verdict)

    for gate in decision.gates:
        log.info("gate %-22s %s: %s", gate.name, "ok  " if gate.passed else "FAIL", gate.detail)
    log.info("%s version %s: %s", cfg.model_name, registered.version, verdict)
    if decision.passed:
        return
    if in_experiment:
        log.warning("experiment: rejection recorded in %s; run continues", cfg.details_out)
        return
    raise PipelineError(
        f"register: {cfg.model_name} version {registered.version} rejected, "
        f"alias {cfg.alias!r} unchanged:\n"
        + "\n".join(f"  - {g.detail}" for g in decision.failures)
    )


if __name__ == "__main__":
    stage.run(main)
