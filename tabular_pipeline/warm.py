"""Run a stage in a process forked from a warm one: DVC's per-stage imports, paid once.

DVC runs every stage as a new process, and a stage spends 3-5 s importing
pandas, scikit-learn, MLflow, Great Expectations or Evidently before its first
line of work: a one-parameter ``dvc exp run`` paid that seven times (issue 17).
``dvc.yaml`` therefore runs each stage as::

    python -m tabular_pipeline.warm stages.<name>

which behaves exactly like ``python -m stages.<name>`` (same argv, cwd,
environment, stdin/stdout/stderr, exit status, signals), but the stage runs in
a child forked from a *server* that has already imported every third-party
module the project's code imports. The pattern is a preloader (Rails' spring,
Gradle's daemon); its known traps and how this one avoids them:

- **Stale code.** Only third-party modules are preloaded; every project module
  (``stages``, ``tabular_pipeline``, anything outside the environment's
  site-packages and stdlib) is dropped in the child and imported fresh from
  the stage's working directory. The server's socket name is a hash of the
  interpreter, the modification times of its ``sys.path`` folders (an install
  or upgrade changes them) and the environment, so a changed environment or
  variable gets a new server; a server exits when its folders change.
- **Fork after threads.** The server only imports, never computes, so no
  OpenMP or torch pool exists when it forks; numpy's and scipy's OpenBLAS and
  pyarrow's jemalloc threads have their own fork handlers. A server whose
  imports started a Python thread refuses to serve.
- **Hash seed.** The server runs with ``PYTHONHASHSEED=0`` (the ``drift``
  stage needs it); a stage asking for any other fixed seed runs cold.
- **Lifetime.** A client that finds no server starts one in the background
  and runs its own stage cold meanwhile, so nothing ever waits for a warm-up.
  A server exits after ``TABULAR_WARM_IDLE`` seconds (default 600) without a
  stage. If the client dies, its stage is terminated.
- **Off switch.** ``TABULAR_WARM=0`` runs every stage cold, as does ``CI``
  being set (a CI job is one cold run anyway, and measures memory per
  process), any platform but Linux, and any failure to reach a server before
  the stage has started. What it changes: the stage is not a child of DVC,
  so per-process-tree accounting (``bench/scale.py``'s peak RSS, ``ulimit``
  set after the server started, cgroups of a batch scheduler) does not see
  it; use ``TABULAR_WARM=0`` there.

``python -m tabular_pipeline.warm --status`` lists running servers and
``--stop`` stops this environment's (``make clean`` runs it; ``--stop --all``
stops every server of the user).

**One server per environment.** The key leaves out what cannot change an
import: DVC's per-run variables and its queue worker's logging settings,
make's (``MAKEFLAGS``, ``MAKELEVEL``...), the shell's and the terminal's
(``SHLVL``, ``PS1``, ``TERM``, ``COLUMNS``, ssh and tmux variables), a
repeated ``PATH`` folder, and the telemetry defaults the package sets anyway.
So ``make repro``, ``dvc repro`` in an activated shell, ``dvc exp run`` and a
queued sweep share one server. This is a deny-list on
purpose: any other variable (``OMP_NUM_THREADS``, ``MLFLOW_*``, ``LANG``...)
may be read at import time, and an unknown variable only costs a second server,
whereas an allow-list that missed one would serve modules imported under
another setting.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from tabular_pipeline import TELEMETRY_DEFAULTS

ENV_SWITCH = "TABULAR_WARM"
ENV_IDLE = "TABULAR_WARM_IDLE"
DEFAULT_IDLE_SECONDS = 600.0
HASH_SEED = "0"
# Variables that cannot change what an import does, so one server serves every
# value (a deny-list: an unknown variable still gets its own server, which costs
# memory, whereas a variable wrongly ignored would run a stage on modules
# imported under another setting). Set per run by DVC, and by its queue
# worker for its own logging (a queued sweep shares the server); make's own
# (`make repro` and a plain `dvc repro` share a server); the shell's, the
# terminal's and a remote session's (a second terminal, tmux or ssh shares it).
VOLATILE_ENV = frozenset(
    {
        "PYTHONHASHSEED",  # the server's is 0; a stage asking for another runs cold
        # make
        "MAKEFLAGS",
        "MAKELEVEL",
        "MFLAGS",
        "MAKEOVERRIDES",
        "MAKE_TERMOUT",
        "MAKE_TERMERR",
        "MAKE_RESTARTS",
        # the shell
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "PROMPT_COMMAND",
        "HISTFILE",
        "HISTSIZE",
        "HISTFILESIZE",
        "HISTCONTROL",
        "VIRTUAL_ENV_PROMPT",
        # the terminal
        "TERM",
        "COLORTERM",
        "COLUMNS",
        "LINES",
        "WINDOWID",
        "VTE_VERSION",
        "LS_COLORS",
        "TMUX",
        "TMUX_PANE",
        "STY",
        "WINDOW",
        # DVC's queue worker (celery) sets these for its own logging
        "CELERY_LOG_FILE",
        "CELERY_LOG_LEVEL",
        "CELERY_LOG_REDIRECT",
        "CELERY_LOG_REDIRECT_LEVEL",
    }
)
VOLATILE_PREFIXES = (
    "DVC_",
    "TERM_",
    "SSH_",
    "BASH_FUNC_",
    "XDG_SESSION_",
    "LC_TERMINAL",
    "_MP_FORK_",  # billiard's, in a queue worker's children: its own logging
)
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
MAX_MESSAGE = 1 << 20


# --------------------------------------------------------------------------- pure parts


def idle_seconds() -> float:
    return float(os.environ.get(ENV_IDLE, DEFAULT_IDLE_SECONDS))


def enabled(env: Mapping[str, str], platform: str = sys.platform) -> bool:
    """On by default on Linux, off under CI or ``TABULAR_WARM=0``."""
    switch = env.get(ENV_SWITCH, "").strip().lower()
    if switch in ("0", "false", "no", "off"):
        return False
    if not platform.startswith("linux"):
        return False
    if switch in ("1", "true", "yes", "on"):
        return True
    return env.get("CI", "").strip().lower() in ("", "0", "false")


def servable(env: Mapping[str, str]) -> bool:
    """A warm server hashes with seed 0: a stage asking for another fixed seed runs cold."""
    return env.get("PYTHONHASHSEED", HASH_SEED) == HASH_SEED


def volatile(name: str) -> bool:
    """Variables DVC, make, the shell or the terminal set: every server serves them all."""
    return name in VOLATILE_ENV or name.startswith(VOLATILE_PREFIXES)


def import_environment(env: Mapping[str, str], prefix: str = sys.prefix) -> dict[str, str]:
    """The part of ``env`` that can change what an import does, in a canonical form.

    Volatile variables go; the package's telemetry defaults count as set (it
    sets them at import, and the Makefile exports them); ``PATH``
    keeps each folder's first occurrence only (a repeat never changes a lookup:
    ``make`` prepends ``.venv/bin`` to an activated shell's PATH that has it);
    ``VIRTUAL_ENV`` naming the interpreter's own environment says nothing more.
    """
    stable = TELEMETRY_DEFAULTS | {k: v for k, v in env.items() if not volatile(k)}
    if "PATH" in stable:
        stable["PATH"] = os.pathsep.join(dict.fromkeys(stable["PATH"].split(os.pathsep)))
    venv = stable.get("VIRTUAL_ENV")
    if venv is not None and os.path.realpath(venv) == os.path.realpath(prefix):
        del stable["VIRTUAL_ENV"]
    return stable


def server_key(
    executable: str, path_entries: Iterable[str], env: Mapping[str, str], prefix: str = sys.prefix
) -> str:
    """What a server's preloaded state depends on: interpreter, installed files, environment."""
    digest = hashlib.sha256(os.path.realpath(executable).encode())
    for entry in path_entries:
        try:
            stamp = os.stat(entry).st_mtime_ns if entry else 0
        except OSError:
            stamp = -1
        digest.update(f"\0{entry}\0{stamp}".encode())
    digest.update(json.dumps(import_environment(env, prefix), sort_keys=True).encode())
    return digest.hexdigest()[:20]


def runtime_dir(env: Mapping[str, str]) -> Path:
    """A per-user folder for sockets, locks and server logs (short: sockets cap at 107 bytes)."""
    base = env.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"tabular-warm-{os.getuid()}"


def exit_status(status: int) -> tuple[str, int]:
    """A wait status as ("exit", code) or ("signal", number)."""
    if os.WIFSIGNALED(status):
        return "signal", os.WTERMSIG(status)
    return "exit", os.waitstatus_to_exitcode(status)


def system_exit_code(exc: SystemExit) -> int:
    """What the interpreter would exit with for ``exc`` (printing a message code as it does)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


# Modules the server never preloads: importing skrub changes the bytes scikit-learn
# objects pickle to (measured: the same fitted HGB pipeline pickles differently once
# skrub is imported), so a stage that does not use it (Adult: no date or many-valued
# column) must not find it loaded; a stage that uses it imports it either way.
NOT_PRELOADED = frozenset({"skrub"})


def preload_modules(
    project: Path, packages: Iterable[str] = ("stages", "tabular_pipeline")
) -> list[str]:
    """Third-party modules the project's code imports (sorted), read from its source."""
    from tabular_pipeline.imports import PROJECT_PACKAGES, imports_of

    own = set(PROJECT_PACKAGES) | set(packages)
    found: set[str] = set()
    for package in packages:
        for path in sorted((project / package).rglob("*.py")):
            for module, names in imports_of(project, path.relative_to(project)):
                top = module.split(".")[0]
                if not top or top in own or top in sys.stdlib_module_names or top == "__future__":
                    continue
                if top in NOT_PRELOADED:
                    continue
                found.add(module)
                found.update(f"{module}.{name}" for name in names if name != "*")
    return sorted(found)


def environment_roots() -> tuple[str, ...]:
    """Where the interpreter and its installed packages live (a venv's and its base's prefix)."""
    return tuple(sorted({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix)}))


def environment_entries(entries: Iterable[str], roots: tuple[str, ...]) -> list[str]:
    """The ``sys.path`` folders inside the environment: an install changes their mtime.

    Others (``PYTHONPATH``, the project) are left out: their modules are never
    preloaded, and their mtime changes whenever a stage writes a file there.
    """
    return [e for e in entries if e and os.path.realpath(e).startswith(roots)]


def project_module(module: Any, keep: tuple[str, ...]) -> bool:
    """True for a module loaded from outside the environment (the project's own code)."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return False
    return not os.path.realpath(file).startswith(keep)


def process_state() -> dict[str, Any]:
    """What a process inherits besides cwd, env and stdio: the child takes the client's."""
    import resource

    umask = os.umask(0)
    os.umask(umask)
    limits = {
        name: resource.getrlimit(getattr(resource, name))
        for name in dir(resource)
        if name.startswith("RLIMIT_")
    }
    ignored = [int(n) for n in FORWARDED_SIGNALS if signal.getsignal(n) is signal.SIG_IGN]
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    return {"umask": umask, "limits": limits, "ignored": ignored, "nice": nice}


def adopt_state(state: Mapping[str, Any]) -> list[str]:
    """Take the client's umask, limits, niceness and ignored signals; what could not be taken."""
    import resource

    problems = []
    os.umask(int(state["umask"]))
    for name, (soft, hard) in state["limits"].items():
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (ValueError, OSError, AttributeError) as exc:  # above the server's hard limit
            problems.append(f"{name}={soft}/{hard}: {exc}")
    delta = int(state["nice"]) - os.getpriority(os.PRIO_PROCESS, 0)
    if delta > 0:
        os.nice(delta)
    elif delta < 0:
        problems.append(f"nice {state['nice']}: a server cannot raise its children's priority")
    for number in state["ignored"]:
        signal.signal(number, signal.SIG_IGN)
    return problems


# --------------------------------------------------------------------------- client


def _run_cold(module: str, args: list[str]) -> None:
    import runpy

    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _spawn_server(folder: Path, key: str, env: dict[str, str]) -> None:
    """Start a server in the background unless one holds the key's lock (running or warming)."""
    import fcntl
    import subprocess

    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        return  # somebody else's folder: never trust its sockets
    if failed_recently(folder, key, idle_seconds()):
        return  # its log says why; retried after the idle time, or after an install
    with open(folder / f"{key}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        fcntl.flock(lock, fcntl.LOCK_UN)
    with open(folder / f"{key}.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "tabular_pipeline.warm", "--serve", key],
            env=env | {"PYTHONHASHSEED": HASH_SEED},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )


def socket_address(path: Path) -> str:
    """``path``, or the same file through ``/proc/self/fd`` when it is too long for AF_UNIX.

    Socket addresses are capped at 107 bytes; pytest's and DVC's temporary
    folders can be longer. The directory stays open for the process's life.
    """
    if len(os.fsencode(path)) < 100:
        return str(path)
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}"


def failed_recently(folder: Path, key: str, within: float) -> bool:
    """A server for ``key`` failed to start less than ``within`` seconds ago: do not retry yet."""
    import time

    try:
        return time.time() - (folder / f"{key}.failed").stat().st_mtime < within
    except OSError:
        return False


def _peer(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, array.array("i").itemsize * 3)
    pid, uid, _gid = array.array("i", creds)
    return pid, uid


def _connect(path: Path) -> socket.socket | None:
    """A connection to our own server at ``path``, or None (then the stage runs cold)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(socket_address(path))
        if _peer(sock)[1] != os.getuid():  # never hand our env and stdio to another user
            raise PermissionError(path)
    except OSError:
        sock.close()
        return None
    return sock


def _reraise_status(kind: str, number: int) -> None:
    if kind == "signal":
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        sys.exit(128 + number)
    sys.exit(number)


def client(module: str, args: list[str]) -> None:
    """Run ``module`` as ``__main__`` with ``args``: forked from a warm server when possible."""
    env = dict(os.environ)
    if not (enabled(env) and servable(env)):
        _run_cold(module, args)
        return
    entries = environment_entries(sys.path[1:], environment_roots())
    key = server_key(sys.executable, entries, env)
    folder = runtime_dir(env)
    sock = _connect(folder / f"{key}.sock")
    if sock is None:
        with contextlib.suppress(OSError):  # e.g. no writable runtime folder: just run cold
            _spawn_server(folder, key, env)
        _run_cold(module, args)
        return
    request = {"module": module, "args": args, "cwd": os.getcwd(), "env": env, **process_state()}
    pid = 0
    with sock:
        try:
            socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
            reply = sock.recv(64).decode().split()
            pid = int(reply[1]) if reply[:1] == ["pid"] else 0
        except (OSError, ValueError, IndexError):
            pid = 0
        if not pid:  # nothing ran: the server was going away
            _run_cold(module, args)
            return

        def forward(number: int, _frame: object) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

        for number in FORWARDED_SIGNALS:
            if signal.getsignal(number) is not signal.SIG_IGN:  # `nohup` stays in force
                signal.signal(number, forward)
        while True:
            try:
                reply = sock.recv(64).decode().split()
                break
            except InterruptedError:
                continue
    if len(reply) != 2 or reply[0] not in ("exit", "signal"):
        sys.stderr.write(
            f"ERROR warm: lost the stage process {pid} ({module}); rerun with TABULAR_WARM=0\n"
        )
        sys.exit(1)
    _reraise_status(reply[0], int(reply[1]))


# --------------------------------------------------------------------------- server


def _path_stamps(entries: Iterable[str]) -> list[int]:
    stamps = []
    for entry in entries:
        try:
            stamps.append(os.stat(entry).st_mtime_ns)
        except OSError:
            stamps.append(-1)
    return stamps


def _preload(project: Path, log: Any) -> None:
    import importlib
    import time

    start = time.perf_counter()
    loaded = 0
    for name in preload_modules(project):
        try:
            importlib.import_module(name)
            loaded += 1
        except Exception:
            continue
    log(f"preloaded {loaded} modules in {time.perf_counter() - start:.1f} s")


def _child(request: dict[str, Any], fds: list[int], keep: tuple[str, ...]) -> int:
    """Become ``python -m <module> <args>`` in the client's cwd, env and stdio; return its code."""
    import atexit
    import importlib
    import io
    import threading
    import traceback

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    # New stream objects over the client's descriptors, buffered as the
    # interpreter would at start-up: a tty gets line buffering, and
    # PYTHONUNBUFFERED (part of the server's key) none at all.
    unbuffered = bool(getattr(sys.__stdout__, "write_through", False))

    def text(fd: int, line_buffering: bool, errors: str | None = None) -> io.TextIOWrapper:
        raw = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)  # noqa: SIM115
        return io.TextIOWrapper(
            raw,  # an unbuffered FileIO under PYTHONUNBUFFERED, as `python -u` has
            encoding=sys.stdout.encoding,
            errors=errors,
            line_buffering=line_buffering,
            write_through=unbuffered,
        )

    sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), encoding=sys.stdin.encoding)  # noqa: SIM115
    sys.stdout = text(1, os.isatty(1))
    sys.stderr = text(2, True, "backslashreplace")
    signal.set_wakeup_fd(-1)
    for number in (*FORWARDED_SIGNALS, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for problem in adopt_state(request):
        sys.stderr.write(f"WARNING warm: the stage runs without the caller's {problem}\n")
    for name in [n for n, m in sys.modules.items() if project_module(m, keep)]:
        del sys.modules[name]
    sys.path[0] = request["cwd"]
    importlib.invalidate_caches()
    code = 0
    try:
        _run_cold(request["module"], list(request["args"]))
    except SystemExit as exc:
        code = system_exit_code(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # type: ignore[attr-defined] # join non-daemon threads, as exit does
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


def serve(key: str, idle_seconds: float) -> None:
    """Preload, then fork one child per request until idle (see the module docstring)."""
    import fcntl
    import gc
    import selectors
    import threading
    import time

    folder = runtime_dir(os.environ)
    lock = open(folder / f"{key}.lock", "a")  # noqa: SIM115 - held for the server's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server has this key
    lock.truncate(0)
    # `--stop` finds a server that is still preloading, and tells environments apart
    lock.write(f"{os.getpid()}\n{os.path.realpath(sys.prefix)}\n")
    lock.flush()

    def log(message: str) -> None:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} warm[{os.getpid()}] {message}\n")
        sys.stderr.flush()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `--stop`: clean up the socket
    entries = environment_entries(sys.path[1:], environment_roots())
    stamps = _path_stamps(entries)
    _preload(Path.cwd(), log)
    os.chdir("/")  # the cwd may be a temporary experiment folder; children chdir anyway
    if threading.active_count() > 1:
        raise RuntimeError("an import started a Python thread: forking it is unsafe, not serving")
    keep = environment_roots()
    for name in [n for n, m in sys.modules.items() if project_module(m, keep)]:
        del sys.modules[name]
    gc.collect()
    gc.freeze()  # keep the children's copy-on-write pages shared

    path = folder / f"{key}.sock"
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(socket_address(path))
    listener.listen(16)
    os.chmod(path, 0o600)
    bound = path.stat().st_ino
    (folder / f"{key}.failed").unlink(missing_ok=True)
    log(f"serving on {path}")
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    # A child's exit wakes the loop at once (its client is waiting on the status).
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector.register(wake_read, selectors.EVENT_READ)
    running: dict[int, Running] = {}
    last_active = time.monotonic()

    def stale() -> bool:
        return _path_stamps(entries) != stamps or not path.exists()

    try:
        while True:
            for item, _ in selector.select(timeout=1.0):
                if item.fileobj is wake_read:
                    with contextlib.suppress(BlockingIOError):
                        wake_read.recv(4096)
                elif item.fileobj is listener:
                    conn, _addr = listener.accept()
                    started = _start(conn, listener, running, keep, log)
                    if started:
                        pid, module = started
                        running[pid] = Running(conn, module, time.monotonic())
                        selector.register(conn, selectors.EVENT_READ, pid)
                    else:
                        conn.close()
                else:  # the client hung up before its stage ended: end the stage too
                    conn = item.fileobj  # type: ignore[assignment]
                    selector.unregister(conn)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(item.data, signal.SIGTERM)
            while running:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                done = running.pop(pid)
                conn = done.conn
                kind, number = exit_status(status)
                took = time.monotonic() - done.start
                log(f"{done.module} (pid {pid}): {kind} {number} after {took:.1f} s")
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(conn)
                with contextlib.suppress(OSError):
                    conn.send(f"{kind} {number}".encode())
                conn.close()
                last_active = time.monotonic()
            if running:
                continue
            if time.monotonic() - last_active > idle_seconds:
                log(f"idle for {idle_seconds:.0f} s, exiting")
                break
            if stale():
                log("the environment changed (install or socket removed), exiting")
                break
    finally:
        if path.exists() and path.stat().st_ino == bound:  # not a successor's socket
            path.unlink()
        listener.close()


class Running(NamedTuple):
    conn: socket.socket
    module: str
    start: float


def _start(
    conn: socket.socket,
    listener: socket.socket,
    running: dict[int, Running],
    keep: tuple[str, ...],
    log: Any,
) -> tuple[int, str] | None:
    """Fork a child for one request: (pid, module), or None if the request was refused."""
    try:
        peer_uid = _peer(conn)[1]
        payload, fds, _flags, _addr = socket.recv_fds(conn, MAX_MESSAGE, 3)
        if not payload:
            return None  # `--status` connects only to see who answers
        request = json.loads(payload)
    except (OSError, ValueError) as exc:
        log(f"bad request: {exc}")
        return None
    if peer_uid != os.getuid() or len(fds) != 3:
        log(f"refused a request from uid {peer_uid} with {len(fds)} descriptors")
        for fd in fds:
            os.close(fd)
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            listener.close()
            for other in running.values():
                other.conn.close()
            conn.close()
            code = _child(request, fds, keep)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            if code < 0:  # die of the signal, as an unhandled KeyboardInterrupt does
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            os._exit(code)
    for fd in fds:
        os.close(fd)
    try:
        conn.send(f"pid {pid}".encode())
    except OSError:
        os.kill(pid, signal.SIGTERM)
    return pid, str(request["module"])


# --------------------------------------------------------------------------- commands


class Server(NamedTuple):
    key: str
    pid: int
    serving: bool  # preloaded and listening (else still importing)
    environment: str  # the interpreter's sys.prefix


def _servers() -> list[Server]:
    """Every live server: whoever holds a key's lock."""
    import fcntl

    folder = runtime_dir(os.environ)
    found = []
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        with path.open() as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # held: a server is running
                lines = lock.read().split("\n")
                if lines[0].isdigit():
                    serving = path.with_suffix(".sock").exists()
                    environment = lines[1] if len(lines) > 1 else ""
                    found.append(Server(path.stem, int(lines[0]), serving, environment))
    return found


USAGE = "usage: python -m tabular_pipeline.warm <module> [args...] | --status | --stop [--all]"


def main(argv: list[str]) -> None:
    """``<module> [args]`` runs a stage; ``--serve KEY``/``--status``/``--stop``: servers.

    ``--stop`` stops the servers of this interpreter's environment (``make
    clean`` runs it); ``--stop --all`` every server of this user.
    """
    if argv[:1] == ["--serve"] and len(argv) == 2:
        try:
            serve(argv[1], idle_seconds())
        except Exception:
            # Clients run cold meanwhile; the marker stops each of them from
            # starting (and paying for) another server that fails the same way.
            (runtime_dir(os.environ) / f"{argv[1]}.failed").touch()
            raise
        return
    if argv in (["--status"], ["--stop"], ["--stop", "--all"]):
        mine = os.path.realpath(sys.prefix)
        for server in _servers():
            state = "serving" if server.serving else "preloading"
            if argv[0] == "--stop":
                if argv[1:] != ["--all"] and server.environment != mine:
                    continue
                os.kill(server.pid, signal.SIGTERM)
                state = "stopped"
            sys.stdout.write(f"{server.key}: pid {server.pid} {state} {server.environment}\n")
        return
    if not argv or argv[0].startswith("-"):
        sys.exit(USAGE)
    client(argv[0], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
