"""What every stage script shares: logging, params, clean failure."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabular_pipeline.errors import PipelineError

if TYPE_CHECKING:  # pandas costs ~0.6 s to import: compose and a disabled tune never need it
    import pandas as pd

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
    except OSError as exc:
        # Disk full, read-only or forbidden output: the user's environment, not a bug.
        if exc.errno not in WRITE_ERRORS:
            raise
        where = exc.filename or "an output"
        log.error("cannot write %s: %s; dvc.lock is unchanged", _relative(where), exc.strerror)
        sys.exit(1)


WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _relative(path: str | Path) -> str:
    """Outputs named as in dvc.yaml, not as the temp file that failed."""
    p = Path(str(path))
    if p.name.startswith(".") and p.name.endswith(".tmp"):
        p = p.with_name(p.name[1:].rsplit(".", 2)[0])
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside ``path``, renamed over it on success.

    DVC deletes outputs before a stage runs but does not make them atomic: a
    stage killed mid-write would leave a half file that looks like an output.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed run
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and (not exc.filename or str(tmp) in str(exc.filename)):
            exc.filename = str(path)  # name the output, not the temp file (or nothing)
        raise


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_parquet(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.exists():
        raise PipelineError(f"{path}: missing input (run the upstream stage first)")
    return pd.read_parquet(path)


def save_object(obj: Any, path: Path) -> None:
    import joblib

    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        joblib.dump(obj, fh)


def load_object(path: Path) -> Any:
    import joblib

    if not path.exists():
        raise PipelineError(f"{path}: missing input (run the upstream stage first)")
    try:
        return joblib.load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise PipelineError(
            f"{path}: cannot load ({type(exc).__name__}: {exc}); the file is damaged or from "
            f"another version: restore it with `dvc checkout {path}` or rebuild it with "
            "`dvc repro -f` on the stage that writes it"
        ) from exc
