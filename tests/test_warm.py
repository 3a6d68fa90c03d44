"""The warm stage runner: a stage forked from a preloaded server behaves like `python -m`.

Pure parts on tiny inputs; then real servers (real fork, real socket) on a
scratch project whose probe stage imports only the stdlib, so a server starts
in well under a second. Every server lives in the test's own runtime folder
and is stopped afterwards. The byte-identical check on the real pipeline is
in tests/test_e2e.py (the fresh-clone repro runs warm).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tabular_pipeline import warm

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import os, sys, time
from pathlib import Path

print("argv", sys.argv[1:])
print("cwd", os.getcwd())
print("var", os.environ.get("PROBE_VAR"), os.environ.get("DVC_EXP_NAME"))
print("stdin", sys.stdin.read().strip())
print("version", Path("version.txt").read_text().strip() if Path("version.txt").exists() else "-")
print("parent", os.getppid())
print("streams", type(sys.stdout.buffer).__name__, sys.stdout.write_through, sys.stdout.encoding)
print("to stderr", file=sys.stderr)
mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode == "state":
    import resource, signal
    umask = os.umask(0)
    print("state", oct(umask), resource.getrlimit(resource.RLIMIT_FSIZE)[0],
          signal.getsignal(signal.SIGHUP) is signal.SIG_IGN)
if mode == "sleep":
    Path("pid.txt").write_text(str(os.getpid()))
    time.sleep(60)
if mode == "raise":
    raise ValueError("probe failed on purpose")
if mode == "message":
    sys.exit("probe: a message exit")
sys.exit(int(mode) if mode.isdigit() else 0)
"""


# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("env", "platform", "expected"),
    [
        ({}, "linux", True),
        ({"CI": "true"}, "linux", False),
        ({"CI": "false"}, "linux", True),
        ({"CI": "true", "TABULAR_WARM": "1"}, "linux", True),
        ({"TABULAR_WARM": "0"}, "linux", False),
        ({"TABULAR_WARM": "off"}, "linux", False),
        ({"TABULAR_WARM": "1"}, "darwin", False),
    ],
)
def test_enabled_by_default_on_linux_but_not_under_ci(
    env: dict[str, str], platform: str, expected: bool
) -> None:
    assert warm.enabled(env, platform) is expected


def test_only_hash_seed_zero_or_none_is_servable() -> None:
    assert warm.servable({}) and warm.servable({"PYTHONHASHSEED": "0"})
    assert not warm.servable({"PYTHONHASHSEED": "1"})
    assert not warm.servable({"PYTHONHASHSEED": "random"})


def test_server_key_follows_environment_and_installs_but_not_per_run_variables(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    env = {"PATH": "/bin", "LANG": "C.UTF-8"}
    key = warm.server_key(sys.executable, [str(site)], env)
    per_run = env | {"DVC_EXP_NAME": "exp-1", "PWD": "/x", "PYTHONHASHSEED": "0"}
    assert warm.server_key(sys.executable, [str(site)], per_run) == key
    assert warm.server_key(sys.executable, [str(site)], env | {"OMP_NUM_THREADS": "1"}) != key
    (site / "newpkg").mkdir()  # an install changes the folder's mtime
    os.utime(site, ns=(0, 123_456_789))
    assert warm.server_key(sys.executable, [str(site)], env) != key


def test_make_shell_and_terminal_variables_share_a_server(tmp_path: Path) -> None:
    """make repro, dvc repro in an activated shell, another terminal, a queue worker: one key."""
    venv = tmp_path / "venv"
    shell = {"PATH": f"/usr/bin{os.pathsep}/bin", "LANG": "C.UTF-8", "HOME": "/home/u"}
    activated = shell | {
        "PATH": f"{venv}/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        "VIRTUAL_ENV": str(venv),
        "VIRTUAL_ENV_PROMPT": "(venv) ",
        "PS1": "(venv) $ ",
        "TERM": "xterm-256color",
        "COLUMNS": "120",
        "SHLVL": "2",
        "_": f"{venv}/bin/dvc",
    }
    key = warm.server_key(sys.executable, [], activated, prefix=str(venv))
    # make prepends .venv/bin again and exports its own and the telemetry variables
    under_make = activated | {
        "PATH": f"{venv}/bin{os.pathsep}{activated['PATH']}",
        "MAKEFLAGS": "-j2 --jobserver-auth=fifo:/tmp/x",
        "MAKELEVEL": "1",
        "MFLAGS": "-j2",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "SHLVL": "3",
    }
    other_terminal = {k: v for k, v in activated.items() if k not in ("TERM", "COLUMNS")} | {
        "TMUX": "/tmp/tmux-0/default,1,0",
        "TMUX_PANE": "%1",
        "SSH_CONNECTION": "10.0.0.1 22 10.0.0.2 5555",
        "TERM_PROGRAM": "tmux",
        "OLDPWD": "/",
    }
    # DVC's queue worker (celery, billiard) adds its logging settings
    queue_worker = activated | {
        "CELERY_LOG_FILE": "",
        "CELERY_LOG_LEVEL": "20",
        "CELERY_LOG_REDIRECT": "1",
        "CELERY_LOG_REDIRECT_LEVEL": "WARNING",
        "_MP_FORK_LOGLEVEL_": "20",
        "_MP_FORK_LOGFILE_": "",
        "DVC_EXP_NAME": "radio-poss",
        "DVC_ROOT": "/p",
    }
    for env in (under_make, other_terminal, queue_worker):
        assert warm.server_key(sys.executable, [], env, prefix=str(venv)) == key
    # What an import may read still starts its own server.
    for change in (
        {"OMP_NUM_THREADS": "1"},
        {"LANG": "de_DE.UTF-8"},
        {"MLFLOW_DISABLE_TELEMETRY": "false"},  # the user's own value beats the default
        {"PATH": f"/opt/bin{os.pathsep}{activated['PATH']}"},  # another folder first
        {"VIRTUAL_ENV": str(tmp_path / "other")},
        {"PYTHONPATH": "/src"},
    ):
        assert warm.server_key(sys.executable, [], activated | change, prefix=str(venv)) != key


def test_exit_status_reads_codes_and_signals() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert warm.exit_status(os.waitpid(pid, 0)[1]) == ("exit", 3)
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    os.kill(pid, signal.SIGTERM)
    assert warm.exit_status(os.waitpid(pid, 0)[1]) == ("signal", signal.SIGTERM)


def test_system_exit_code_matches_the_interpreter(capsys: pytest.CaptureFixture[str]) -> None:
    assert warm.system_exit_code(SystemExit()) == 0
    assert warm.system_exit_code(SystemExit(2)) == 2
    assert warm.system_exit_code(SystemExit("boom")) == 1
    assert capsys.readouterr().err == "boom\n"


def test_preload_modules_are_the_third_party_imports_of_the_project(tmp_path: Path) -> None:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "a.py").write_text(
        "import json\nimport pandas as pd\nfrom sklearn.metrics import roc_auc_score\n"
        "from tabular_pipeline import stage\n"
        "def f():\n    import evidently.presets\n"
    )
    (tmp_path / "tabular_pipeline").mkdir()
    (tmp_path / "tabular_pipeline" / "b.py").write_text("from . import c\nimport yaml\n")
    assert warm.preload_modules(tmp_path) == [
        "evidently.presets",
        "pandas",
        "sklearn.metrics",
        "sklearn.metrics.roc_auc_score",
        "yaml",
    ]


def test_project_modules_are_those_outside_the_environment(tmp_path: Path) -> None:
    keep = warm.environment_roots()
    assert not warm.project_module(os, keep)  # stdlib
    assert not warm.project_module(pytest, keep)  # site-packages
    assert not warm.project_module(sys, keep)  # built in: no file
    assert warm.project_module(warm, keep)  # this checkout


# --------------------------------------------------------------------------- real servers


@pytest.fixture
def probe_project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project with one stdlib-only probe stage, and an env with a private runtime folder."""
    project = tmp_path / "project"
    (project / "stages").mkdir(parents=True)
    (project / "stages" / "__init__.py").write_text("")
    (project / "stages" / "probe.py").write_text(PROBE)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = os.environ | {
        "TABULAR_WARM": "1",
        "XDG_RUNTIME_DIR": str(runtime),
        "TABULAR_WARM_IDLE": "60",
    }
    yield project, env
    subprocess.run(
        [sys.executable, "-m", "tabular_pipeline.warm", "--stop"],
        cwd=project,
        env=env,
        capture_output=True,
    )


def probe(
    project: Path, env: dict[str, str], *args: str, stdin: str = "", **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tabular_pipeline.warm", "stages.probe", *args],
        cwd=project,
        env=env | extra,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def server_pid(
    project: Path, env: dict[str, str], python: str = sys.executable, timeout: float = 30.0
) -> int:
    """The pid of the (single) running server, waiting for it to start serving."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            [python, "-m", "tabular_pipeline.warm", "--status"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        if " serving" in out:
            return int(out.split(": pid ")[1].split()[0])
        time.sleep(0.2)
    raise AssertionError(f"no warm server started in {timeout} s")


def started_server(project: Path, env: dict[str, str]) -> int:
    """Run the probe once (cold: it starts a server) and wait for that server; its pid."""
    probe(project, env)
    return server_pid(project, env)


def server_log(env: dict[str, str]) -> str:
    folder = warm.runtime_dir(env)
    return "".join(p.read_text() for p in folder.glob("*.log"))


def field(out: str, name: str) -> str:
    return next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(name + " "))


def test_a_warm_stage_behaves_like_python_dash_m(
    probe_project: tuple[Path, dict[str, str]],
) -> None:
    project, env = probe_project
    first = probe(project, env, "3", "x y", stdin="hello", PROBE_VAR="one")
    pid = server_pid(project, env)  # the first call ran cold and started it
    assert field(first.stdout, "parent") != str(pid)
    second = probe(project, env, "3", "x y", stdin="hello", PROBE_VAR="one")
    assert field(second.stdout, "parent") == str(pid)  # forked by the server
    assert field(second.stdout, "streams") == field(first.stdout, "streams")  # same buffering
    for out in (first, second):
        assert out.returncode == 3
        assert field(out.stdout, "argv") == "['3', 'x y']"
        assert field(out.stdout, "cwd") == str(project)
        assert field(out.stdout, "var") == "one None"
        assert field(out.stdout, "stdin") == "hello"
        assert out.stderr == "to stderr\n"
    # A per-run variable reaches the stage without a new server; code edits are seen.
    (project / "version.txt").write_text("2")
    (project / "stages" / "probe.py").write_text("print('edited')\n" + PROBE)
    third = probe(project, env, PROBE_VAR="one", DVC_EXP_NAME="exp-1")
    assert field(third.stdout, "parent") == str(pid)
    assert field(third.stdout, "var") == "one exp-1" and field(third.stdout, "version") == "2"
    assert third.stdout.startswith("edited\n")
    assert "stages.probe (pid" in server_log(env) and "exit 3" in server_log(env)


def test_failures_print_and_exit_as_the_interpreter_does(
    probe_project: tuple[Path, dict[str, str]],
) -> None:
    project, env = probe_project
    pid = started_server(project, env)
    raised = probe(project, env, "raise")
    assert field(raised.stdout, "parent") == str(pid)
    assert raised.returncode == 1
    assert "Traceback" in raised.stderr
    assert raised.stderr.rstrip().endswith("ValueError: probe failed on purpose")
    message = probe(project, env, "message")
    assert message.returncode == 1 and message.stderr.endswith("probe: a message exit\n")


def test_the_stage_takes_the_callers_umask_limits_and_ignored_signals(
    probe_project: tuple[Path, dict[str, str]],
) -> None:
    """What `prlimit`, `umask` or `nohup` in a stage's cmd set must hold in the forked stage."""
    import resource

    project, env = probe_project
    pid = started_server(project, env)

    def restricted() -> None:
        os.umask(0o027)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    out = subprocess.run(
        [sys.executable, "-m", "tabular_pipeline.warm", "stages.probe", "state"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=restricted,
        timeout=60,
    )
    assert field(out.stdout, "parent") == str(pid)
    assert field(out.stdout, "state") == "0o27 100000 True"
    plain = probe(project, env, "state")  # and nothing leaks into the next stage
    fsize = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    hup = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert field(plain.stdout, "state") == f"{oct(current_umask())} {fsize} {hup}"


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def sleeping_warm_stage(project: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """A client whose stage (forked by a serving server) sleeps: (client, stage pid)."""
    started_server(project, env)
    client = subprocess.Popen(
        [sys.executable, "-m", "tabular_pipeline.warm", "stages.probe", "sleep"],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    return client, wait_for_pid(project / "pid.txt")


def default_signals() -> None:
    """A shell starts background jobs with SIGINT ignored, and an ignored signal stays
    ignored in the stage (as `nohup` must): give the client a terminal's dispositions."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_signals_reach_the_stage_and_its_status_comes_back(
    probe_project: tuple[Path, dict[str, str]], number: int
) -> None:
    project, env = probe_project
    client, stage = sleeping_warm_stage(project, env)
    assert stage != client.pid
    client.send_signal(number)
    _out, err = client.communicate(timeout=30)
    assert client.returncode == -number  # as if the stage had been the client
    if number == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert not alive(stage)


def test_a_killed_client_takes_its_stage_with_it(
    probe_project: tuple[Path, dict[str, str]],
) -> None:
    project, env = probe_project
    client, stage = sleeping_warm_stage(project, env)
    client.kill()
    client.wait()
    deadline = time.monotonic() + 10
    while alive(stage) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(stage)


def test_environment_entries_leave_out_the_project_and_pythonpath(tmp_path: Path) -> None:
    roots = (str(tmp_path / "env") + os.sep,)
    entries = [str(tmp_path / "env/lib/site-packages"), str(tmp_path / "project"), ""]
    assert warm.environment_entries(entries, roots) == [entries[0]]


def test_pythonpath_modules_are_imported_fresh_in_every_stage(
    probe_project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    project, env = probe_project
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "helper.py").write_text("VALUE = 'one'\n")
    env = env | {"PYTHONPATH": str(lib)}
    (project / "stages" / "probe.py").write_text("import helper\nprint('helper', helper.VALUE)\n")
    pid = started_server(project, env)
    (lib / "helper.py").write_text("VALUE = 'two'\n")
    out = probe(project, env)
    assert out.stdout == "helper two\n"
    assert "stages.probe (pid" in server_log(env) and server_pid(project, env) == pid


def test_server_exits_when_idle_or_when_its_installs_change(tmp_path: Path) -> None:
    """A throwaway venv (stdlib only): an install into it must retire its server."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    project = tmp_path / "project"
    (project / "stages").mkdir(parents=True)
    (project / "stages" / "__init__.py").write_text("")
    (project / "stages" / "probe.py").write_text("print('ran')\n")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = os.environ | {
        "TABULAR_WARM": "1",
        "XDG_RUNTIME_DIR": str(runtime),
        "PYTHONPATH": str(ROOT),  # tabular_pipeline.warm itself
    }
    site = next((venv / "lib").glob("python3*/site-packages"))

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [python, "-m", "tabular_pipeline.warm", "stages.probe"]
        return subprocess.run(cmd, cwd=project, env=env | extra, capture_output=True, text=True)

    def gone(pid: int) -> bool:
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return not alive(pid)

    try:
        assert run().stdout == "ran\n"
        pid = server_pid(project, env, python)
        assert run().stdout == "ran\n"
        (site / "a_new_package").mkdir()  # what an install does to site-packages
        assert gone(pid)
        assert "the environment changed" in server_log(env)
        assert not list(warm.runtime_dir(env).glob("*.sock"))
        # The next run starts a server for the new state, which then idles out.
        assert run(TABULAR_WARM_IDLE="3").stdout == "ran\n"
        pid = server_pid(project, env, python)
        assert gone(pid) and "idle for 3 s, exiting" in server_log(env)
    finally:
        subprocess.run(
            [python, "-m", "tabular_pipeline.warm", "--stop"], cwd=project, env=env, check=False
        )


def test_off_switch_and_other_hash_seeds_run_cold_without_a_server(
    probe_project: tuple[Path, dict[str, str]],
) -> None:
    project, env = probe_project
    for extra in ({"TABULAR_WARM": "0"}, {"PYTHONHASHSEED": "7"}):
        out = probe(project, env, **extra)
        assert out.returncode == 0 and field(out.stdout, "var") == "None None"
    time.sleep(0.5)
    assert not warm.runtime_dir(env).exists() or not list(warm.runtime_dir(env).iterdir())


def wait_for_pid(path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return _state(pid) not in ("Z", "X", "")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_a_runtime_folder_others_can_write_to_is_never_used(tmp_path: Path) -> None:
    """Another user could plant a socket there and read every stage's environment."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    warm._spawn_server(folder, "k", dict(os.environ))
    assert list(folder.iterdir()) == []  # no lock, no log, no server


def test_long_runtime_folders_still_get_a_socket(tmp_path: Path) -> None:
    import socket

    folder = tmp_path / ("x" * 120)
    folder.mkdir()
    path = folder / "server.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(warm.socket_address(path))
        listener.listen(1)
        assert path.exists()
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as client:
            client.connect(warm.socket_address(path))
            conn, _ = listener.accept()
            client.send(b"hi")
            assert conn.recv(2) == b"hi"
            conn.close()


def test_a_server_whose_imports_start_a_thread_refuses_and_is_not_retried(
    probe_project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """Forking a process with a running Python thread is unsafe: the server must not serve."""
    project, env = probe_project
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "threadstarter.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    )
    (project / "stages" / "probe.py").write_text("import threadstarter\nprint('ran')\n")
    env = env | {"PYTHONPATH": str(lib)}
    assert probe(project, env).stdout == "ran\n"  # cold, and starts a server
    folder = warm.runtime_dir(env)
    deadline = time.monotonic() + 30
    while not list(folder.glob("*.failed")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "an import started a Python thread" in server_log(env)
    assert probe(project, env).stdout == "ran\n"  # cold again, no new server
    time.sleep(1.0)
    assert server_log(env).count("Traceback") == 1
