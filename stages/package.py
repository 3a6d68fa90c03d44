"""Stage package: build the BentoML service from the trained pipeline, as an archive."""

import logging
import tempfile
from pathlib import Path

from tabular_pipeline import stage
from tabular_pipeline.config import (
    FeaturizeConfig,
    RegisterConfig,
    TrainConfig,
    load_data_config,
    load_params,
    parse_section,
)
from tabular_pipeline.data.reader import revision_error
from tabular_pipeline.data.task import task_of_model
from tabular_pipeline.errors import PipelineError
from tabular_pipeline.explain.settings import ExplainConfig
from tabular_pipeline.serving import package
from tabular_pipeline.serving.runtime import ServingConfig
from tabular_pipeline.serving.schema import build_field_specs
from tabular_pipeline.serving.settings import PackageConfig, ServeConfig

log = logging.getLogger("package")


def fetch_challenger(model_out: str, rev: str, dest: Path) -> Path:
    """The pipeline file as committed at ``rev`` (through DVC: cache or remote)."""
    import dvc.api

    try:
        with dvc.api.open(model_out, rev=rev, mode="rb") as src:
            dest.write_bytes(src.read())
    except Exception as exc:  # DVC raises many types for a missing rev/output/cache
        raise revision_error("package.challenger.rev", model_out, rev, exc) from exc
    return dest


def main() -> None:
    params = load_params()
    data = load_data_config(params)
    model_path = Path(parse_section(params, "train", TrainConfig).model_out)
    featurize = parse_section(params, "featurize", FeaturizeConfig)
    cfg = parse_section(params, "package", PackageConfig)
    serve = parse_section(params, "serve", ServeConfig)
    explain = parse_section(params, "explain", ExplainConfig)

    package.check_promoted(Path(parse_section(params, "register", RegisterConfig).decision_out))
    pipeline = stage.load_object(model_path)
    specs = build_field_specs(pipeline.steps[0][1], data)
    package.check_features(
        specs, stage.read_json(Path(featurize.features_out)), model_path, featurize.features_out
    )
    name = package.safe_name(cfg.name)
    with tempfile.TemporaryDirectory(prefix="challenger-") as tmp:
        challenger = (
            fetch_challenger(str(model_path), cfg.challenger.rev, Path(tmp) / "challenger.joblib")
            if cfg.challenger.rev
            else None
        )
        task = task_of_model(pipeline)
        if challenger is not None and task_of_model(stage.load_object(challenger)) != task:
            raise PipelineError(
                f"package.challenger.rev={cfg.challenger.rev!r}: that model is not a {task} "
                "model like the champion; both variants must answer in the same shape"
            )
        variants, files = package.variants(name, model_path, challenger, cfg.challenger.share)
        config = ServingConfig(
            name=name,
            target=data.target,
            classes=[str(c) for c in getattr(pipeline, "classes_", [])],
            task=task,
            fields=specs,
            variants=variants,
            serve=serve,
            # What /explain's explainer needs besides the model (built at start-up).
            explain={
                "background": stage.read_json(Path(explain.background_out)),
                "seed": int(params["seed"]),
                "permutations": explain.permutations,
            },
        )
        tag, shipped = package.build_archive(config, files, Path(cfg.out), Path.cwd())
    log.info(
        "bento %s -> %s (%d fields, %d project files, variants: %s)",
        tag,
        cfg.out,
        len(specs),
        len(shipped.files),
        ", ".join(f"{v.name}={v.sha256[:12]}" for v in variants),
    )


if __name__ == "__main__":
    stage.run(main)
