"""Stage compose: conf/ -> params.yaml, the way `dvc exp run` composes it."""

import logging
import sys
from pathlib import Path

from tabular_pipeline import compose, sections, stage
from tabular_pipeline.config import load_params

log = logging.getLogger("compose")
MARKER = Path("reports/compose.json")


def main() -> None:
    root = Path.cwd()
    settings = compose.hydra_settings(root)
    experiment = compose.running_dvc_experiment()
    if experiment:
        # `dvc exp run` already composed conf/ plus the -S overrides into
        # params.yaml; composing again here would drop the overrides.
        log.info("DVC experiment %s: keeping params.yaml as DVC composed it", experiment)
    else:
        overrides = sys.argv[1:]
        path = compose.compose_params(root, settings, overrides)
        log.info("composed %s/%s.yaml -> %s", settings.config_dir, settings.config_name, path.name)
    sections.check_all(load_params())
    stage.write_json(MARKER, compose.marker(settings))


if __name__ == "__main__":
    stage.run(main)
