"""Seeded, sequential Optuna search for the ``tune`` stage.

The search space is declared in config per estimator class
(``tune.search_space.<ClassName>``). Each entry is one of::

    lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    max_leaf_nodes: {type: int, low: 15, high: 63}
    hidden_sizes: {type: categorical, choices: [[128, 128], [256, 256]]}

A TPE sampler seeded from params and one trial at a time make a rerun give
the same trials (the models themselves are deterministic). The best values
go to a small YAML file that ``train`` declares as DVC params, so
``dvc params diff`` and ``dvc exp show`` show the tuned values.

With ``tune.storage`` the study lives in a database that several worker
processes, here or on other machines, ask trials from (docs/tuning.md):
the same ask/tell loop, an exact trial budget, heartbeats so a dead
worker's trial is given to another, and the stage's outputs built from
every worker's trials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tabular_pipeline.errors import PipelineError

if TYPE_CHECKING:  # a disabled tune stage never touches a frame
    import pandas as pd

log = logging.getLogger(__name__)

# tune.metric names -> keys of evaluation.metrics.score()
METRIC_KEYS = {"error": "error_rate"}


def check_space(space: dict[str, Any], model: str) -> None:
    """Fail early, naming the key, on a malformed search space."""
    if not space:
        raise PipelineError(
            f"params.yaml: tune.search_space has no entry for {model}; add one or set "
            "tune.enabled: false"
        )
    for name, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        where = f"params.yaml: tune.search_space.{model}.{name}"
        if kind in ("float", "int"):
            if "low" not in spec or "high" not in spec or spec["low"] > spec["high"]:
                raise PipelineError(f"{where}: needs low <= high, got {spec}")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise PipelineError(f"{where}: needs a non-empty 'choices' list")
        else:
            raise PipelineError(f"{where}: type must be float, int or categorical, got {kind!r}")


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one set of values; list-valued choices (layer sizes) go through JSON strings."""
    values: dict[str, Any] = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            values[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(
                name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False))
            )
        else:
            choices = [json.dumps(c) for c in spec["choices"]]
            values[name] = json.loads(trial.suggest_categorical(name, choices))
    return values


def run_study(
    objective: Callable[[dict[str, Any]], float],
    space: dict[str, Any],
    n_trials: int,
    seed: int,
    on_trial: Callable[[int, dict[str, Any], float], None] | None = None,
    metric: str = "value",
) -> pd.DataFrame:
    """Minimise ``objective`` over ``space`` in memory; a row per trial (number, value, params)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=int(seed))
    )
    run_trials(study, objective, space, n_trials, on_trial=on_trial, metric=metric)
    return trials_frame(study, space)


def run_trials(
    study: Any,
    objective: Callable[[dict[str, Any]], float],
    space: dict[str, Any],
    n_trials: int,
    *,
    on_trial: Callable[[int, dict[str, Any], float], None] | None = None,
    metric: str = "value",
    worker: str = "",
    wait: bool = False,
    check: Callable[[], None] | None = None,
) -> None:
    """Ask and tell until the study holds ``n_trials`` finished or in-flight trials.

    The budget is exact, not "at least": trial numbers are handed out by the
    storage in order, so when workers ask at the same moment for the last
    place, the later number sees the earlier one running and is dropped
    (FAIL, user attr ``skipped``) before it samples. ``wait`` (the stage's
    own worker) then waits for the other workers' trials in flight, so the
    outputs include them. A trial whose worker died stops sending heartbeats
    and is failed after ``GRACE_S``; its place goes to a new trial.
    """
    from optuna.trial import TrialState

    label = f"worker {worker}: " if worker else ""
    beating = _heartbeat_interval(study) is not None
    waited = 0.0
    while True:
        if beating:
            _fail_stale(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        done, running = states.count(TrialState.COMPLETE), states.count(TrialState.RUNNING)
        if done + running >= n_trials:
            if not (wait and running):
                return
            if check is not None:
                check()
            if waited % 30 == 0:
                log.info("%swaiting for %d trial(s) in flight on other workers", label, running)
            time.sleep(POLL_S)
            waited += POLL_S
            continue
        with warnings_ignored():
            trial = study.ask()
        live = (TrialState.COMPLETE, TrialState.RUNNING)
        ahead = [
            t for t in study.get_trials(deepcopy=False, states=live) if t.number < trial.number
        ]
        if len(ahead) >= n_trials:  # another worker asked first for the last place
            trial.set_user_attr("skipped", "over budget")
            study.tell(trial, state=TrialState.FAIL)
            continue
        if worker:
            trial.set_user_attr("worker", worker)
        values = suggest(trial, space)
        try:
            with _heartbeat(study, trial):
                value = float(objective(values))
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
        best = study.best_trial
        log.info(
            "%strial %d/%d: %s %.5f (best %.5f, trial %d) %s",
            label,
            trial.number + 1,
            n_trials,
            metric,
            value,
            best.value,
            best.number + 1,
            json.dumps(values),
        )
        if on_trial is not None:
            on_trial(trial.number, values, value)


def run_shared_study(
    study: Any,
    objective: Callable[[dict[str, Any]], float],
    space: dict[str, Any],
    n_trials: int,
    *,
    workers: LocalWorkers,
    log_trial: Callable[[int, dict[str, Any], float, str], None],
    metric: str = "value",
) -> pd.DataFrame:
    """The stage's part in a shared study: run trials as worker 1 beside the
    started local ``workers``, wait for every trial in flight and for the
    workers, and return all finished trials, whichever worker ran them.

    ``log_trial`` sees every finished trial once: worker 1's as they finish,
    the others' (and those of a reused study) at the end, because other
    workers never touch MLflow (a remote machine may not reach the store).
    """
    live: set[int] = set()

    def log_live(number: int, values: dict[str, Any], value: float) -> None:
        log_trial(number, values, value, "1")
        live.add(number)

    run_trials(
        study,
        objective,
        space,
        n_trials,
        on_trial=log_live,
        metric=metric,
        worker="1",
        wait=True,
        check=workers.check,
    )
    workers.join()
    trials = trials_frame(study, space)
    ran_by = trial_workers(study)
    for row in trials.to_dict("records"):
        number = int(row["trial"])
        if number not in live:
            values = {k: v for k, v in row.items() if k in space}
            log_trial(number, values, float(row["value"]), ran_by.get(number, ""))
    return trials


def trials_frame(study: Any, space: dict[str, Any]) -> pd.DataFrame:
    """The study's finished trials by number, whichever worker ran them."""
    import pandas as pd
    from optuna.trial import TrialState

    rows = []
    for t in sorted(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number
    ):
        values = {
            name: json.loads(t.params[name]) if spec["type"] == "categorical" else t.params[name]
            for name, spec in space.items()
        }
        rows.append({"trial": t.number, "value": t.value} | values)
    return pd.DataFrame(rows)


def trial_workers(study: Any) -> dict[int, str]:
    """Which worker ran each finished trial (set only on a shared storage)."""
    from optuna.trial import TrialState

    return {
        t.number: str(t.user_attrs.get("worker", ""))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }


# -- shared storage ----------------------------------------------------------------------
POLL_S = 1.0  # how often the stage checks for other workers' trials in flight
HEARTBEAT_S = 10  # a running trial's worker writes a heartbeat this often ...
GRACE_S = 120  # ... and a trial without one for this long is failed (its worker died)
CONNECT_TIMEOUT_S = 20  # PostgreSQL connect timeout, SQLite busy timeout


def mask_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def resolve_storage(url: str, root: Path) -> str:
    """A relative SQLite path names a file in the project, not in DVC's experiment temp copy."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        path = url[len(prefix) :]
        if path and path != ":memory:" and not Path(path).is_absolute():
            return prefix + str(root / path)
    return url


def open_storage(url: str, configured: str | None = None) -> Any:
    """Connect (creating Optuna's tables on first use); one line naming the URL on failure.

    ``configured`` is the value as params.yaml spells it, when ``url`` is its
    resolved form (a relative SQLite path made absolute).
    """
    import optuna

    masked = mask_url(configured or url)
    where = f"params.yaml: tune.storage {masked}"
    if configured and configured != url:
        where += f" ({mask_url(url)})"
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        raise PipelineError(
            f"{where}: not a database URL (e.g. sqlite:///tune.db or postgresql://user@host/optuna)"
        )
    dialect = scheme.split("+", 1)[0]
    connect_args: dict[str, Any] = {}
    if dialect == "sqlite":
        connect_args = {"timeout": CONNECT_TIMEOUT_S}
    elif dialect == "postgresql":
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        with warnings_ignored():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs={"connect_args": connect_args},
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
            )
    except ImportError as exc:
        raise PipelineError(
            f"{where}: no database driver for {scheme} ({exc}); install it in the venv "
            "(for PostgreSQL: psycopg2-binary)"
        ) from exc
    except Exception as exc:  # sqlalchemy: bad URL, unreachable host, bad credentials
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = mask_url(reason)
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        raise PipelineError(f"{where}: cannot open it: {reason}") from exc


def _password(url: str) -> str:
    found = re.search(r"://[^:/@]*:([^@/]*)@", url)
    return found.group(1) if found else ""


def study_fingerprint(parts: dict[str, Any]) -> str:
    """A short hash of what the objective depends on, so a changed model,
    search space, metric or input data gets a fresh study, never stale trials."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def default_study_name(data_name: str, model: str, seed: int, fingerprint: str) -> str:
    return f"{data_name}-{model}-seed{seed}-{fingerprint}"


def open_study(
    storage: Any, name: str, seed: int, fingerprint: str, *, create: bool, worker: str = "1"
) -> Any:
    """The stage creates (or reloads) the study; workers only join an existing one.

    Each worker samples with its own seed (a shared seed would make every
    worker's first random trials identical), and so does a run that resumes
    a study (a larger ``tune.n_trials``), or it would repeat the first
    points. The constant liar keeps TPE from proposing a point next to one
    still in flight.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create and name not in optuna.get_all_study_names(storage):
        raise PipelineError(
            f"tune.storage {mask_url(storage.url)} has no study {name!r}: start the tune stage "
            "first (`dvc repro` or `dvc exp run` on the main machine) with the same params and "
            "the same split/featurize outputs (`dvc pull`); the name includes their fingerprint"
        )
    study = optuna.create_study(
        storage=storage, study_name=name, direction="minimize", load_if_exists=True
    )
    made_for = study.user_attrs.get("fingerprint")
    if made_for is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif made_for != fingerprint:
        raise PipelineError(
            f"params.yaml: tune.study_name {name!r} in tune.storage {mask_url(storage.url)} "
            f"was made for another model, search space or data (fingerprint {made_for}, now "
            f"{fingerprint}): choose another name or set tune.study_name: null"
        )
    start = len(study.get_trials(deepcopy=False))
    with warnings_ignored():
        study.sampler = optuna.samplers.TPESampler(
            seed=worker_seed(seed, worker, start), constant_liar=True
        )
    return study


def worker_seed(seed: int, worker: str, start: int = 0) -> int:
    """The stage's own worker on a new study keeps the params seed (and so the
    in-memory study's trials); other workers and resumed studies derive one."""
    if worker in ("", "1") and start == 0:
        return int(seed)
    blob = f"{seed}-{worker}-{start}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big")


@contextmanager
def warnings_ignored() -> Iterator[None]:
    """Optuna flags heartbeats, fail_stale_trials and the constant liar as experimental,
    and warns on ``ask`` with a heartbeat storage (``_heartbeat`` does what it misses)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        yield


def _heartbeat_interval(study: Any) -> int | None:
    storage = getattr(study, "_storage", None)
    getter = getattr(storage, "get_heartbeat_interval", None)
    return getter() if getter is not None else None


def _fail_stale(study: Any) -> None:
    import optuna

    with warnings_ignored():
        optuna.storages.fail_stale_trials(study)


@contextmanager
def _heartbeat(study: Any, trial: Any) -> Iterator[None]:
    """Record a heartbeat while the objective runs, as ``study.optimize`` would."""
    interval = _heartbeat_interval(study)
    if interval is None:
        yield
        return
    storage = study._storage
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class LocalWorkers:
    """Extra worker processes on this machine (ids 2..n); killed if the stage fails."""

    def __init__(self, worker_cmd: list[str], n_workers: int) -> None:
        self.commands = [[*worker_cmd, f"--worker-id={k}"] for k in range(2, n_workers + 1)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LocalWorkers:
        for cmd in self.commands:
            self.procs.append(subprocess.Popen(cmd))
        return self

    def check(self) -> None:
        """Fail the stage as soon as a worker failed (its error is in the log above)."""
        for number, proc in enumerate(self.procs, start=2):
            code = proc.poll()
            if code not in (None, 0):
                raise PipelineError(f"tune worker {number} exited with code {code} (see above)")

    def join(self) -> None:
        for proc in self.procs:
            proc.wait()
        self.check()

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                if exc_type is not None:
                    proc.terminate()
                proc.wait()


def best_params(trials: pd.DataFrame, space: dict[str, Any]) -> dict[str, Any]:
    """Values of the best trial (first one on ties), as plain YAML-able types."""
    if trials.empty:
        return {}
    best = trials.loc[trials["value"].idxmin()]
    out: dict[str, Any] = {}
    for name, spec in space.items():
        value = best[name]
        if spec["type"] == "int":
            value = int(value)
        elif spec["type"] == "float":
            value = float(value)
        out[name] = value
    return out


def write_tuned(path: Path, target: str | None, values: dict[str, Any]) -> None:
    """The params file ``train`` reads: the estimator it was tuned for and its values."""
    from tabular_pipeline import stage

    payload = {"tuned_for": target or "", "model": values}
    stage.write_text(path, yaml.safe_dump(payload, sort_keys=True))


def apply_tuned(model_cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    """``model_cfg`` with the tuned values merged in, if they were tuned for this estimator."""
    if not path.exists():
        return model_cfg
    tuned = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values = tuned.get("model") or {}
    if not values:
        return model_cfg
    if tuned.get("tuned_for") != model_cfg.get("_target_"):
        log.warning(
            "%s was tuned for %s, not %s: ignored (run the tune stage)",
            path,
            tuned.get("tuned_for"),
            model_cfg.get("_target_"),
        )
        return model_cfg
    log.info("tuned values from %s: %s", path, json.dumps(values, sort_keys=True))
    return model_cfg | values
