"""What every stage script shares: logging, params, clean failure."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tabular_pipeline.errors import PipelineError

log = logging.getLogger("tabular_pipeline")

NOISY = ("great_expectations", "mlflow", "alembic", "urllib3", "git", "matplotlib", "numexpr")


def run(main: Callable[[], None]) -> None:
    """Run a stage: one readable line and exit 1 on bad input, traceback only for bugs."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Warns on every cloudpickle save; see tracking.log_training_run for why we use it.
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    try:
        main()
    except PipelineError as exc:
        log.error("%s", exc)
        sys.exit(1)


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def read_parquet(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise PipelineError(f"{path}: missing input (run the upstream stage first)")
    return pd.read_parquet(path)


def save_object(obj: Any, path: Path) -> None:
    import joblib

    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(obj, path)


def load_object(path: Path) -> Any:
    import joblib

    if not path.exists():
        raise PipelineError(f"{path}: missing input (run the upstream stage first)")
    return joblib.load(path)
