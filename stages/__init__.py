"""DVC stage scripts, each run as ``python -m stages.<name>``.

Stage commands run whatever ``python`` is first on PATH. When that is not the
project's environment (``dvc repro`` without ``source .venv/bin/activate``),
the first stage would die on ``ModuleNotFoundError: pandas``. This check turns
that into one line that names the interpreter and the fix. It only looks the
modules up (no import), so it costs milliseconds, and any interpreter that has
the dependencies passes: a conda env, CI's venv, a queued experiment's worker.
"""

import importlib.util
import sys
from pathlib import Path

_REQUIRED = ("pandas", "pyarrow", "sklearn", "omegaconf", "yaml", "dvc", "mlflow")


def _check_interpreter() -> None:
    missing = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
    if not missing and sys.version_info[:2] == (3, 11):
        return
    venv = Path.cwd() / ".venv" / "bin" / "python"
    hint = (
        "run `source .venv/bin/activate` first, or use `make repro`"
        if venv.exists()
        else "run `make repro` (it creates .venv), or `make env && source .venv/bin/activate`"
    )
    problem = (
        f"cannot import {', '.join(missing)}"
        if missing
        else f"is Python {sys.version.split()[0]}, not 3.11"
    )
    sys.stderr.write(
        f"ERROR stage: the interpreter {sys.executable} {problem}: it is not this project's "
        f"environment. DVC runs stages with the first `python` on PATH; {hint}.\n"
    )
    sys.exit(1)


_check_interpreter()
