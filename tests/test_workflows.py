"""Structure of the GitHub Actions workflows in .github/workflows (parsed, no network)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CACHE_FILES = "hashFiles('requirements/lock.txt', 'pyproject.toml')"

Step = dict[str, Any]


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{name} is not a YAML mapping"
    return data


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The `on:` section; YAML 1.1 (PyYAML) reads the bare key `on` as boolean True."""
    on = workflow.get("on", workflow.get(True))
    assert on is not None, "workflow has no `on:` triggers"
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on


def only_job(workflow: dict[str, Any]) -> dict[str, Any]:
    jobs = workflow.get("jobs")
    assert isinstance(jobs, dict) and len(jobs) == 1, f"expected one job, got {jobs!r}"
    return next(iter(jobs.values()))


def steps(job: dict[str, Any]) -> list[Step]:
    found = job.get("steps")
    assert isinstance(found, list) and found, "job has no steps"
    return found


def index_of(all_steps: list[Step], pred: Any, what: str) -> int:
    hits = [i for i, step in enumerate(all_steps) if pred(step)]
    assert len(hits) == 1, f"expected exactly one step that {what}, found {len(hits)}"
    return hits[0]


def uses(action: str) -> Any:
    return lambda step: str(step.get("uses", "")).split("@")[0] == action


def runs(pattern: str) -> Any:
    return lambda step: re.search(pattern, str(step.get("run", ""))) is not None


def caches(path: str) -> Any:
    """An actions/cache step for ``path`` (test.yml also caches mypy's cache)."""
    return lambda step: uses("actions/cache")(step) and step.get("with", {}).get("path") == path


def env_of(workflow: dict[str, Any], job: dict[str, Any], step: Step) -> dict[str, Any]:
    return {**workflow.get("env", {}), **job.get("env", {}), **step.get("env", {})}


@pytest.fixture(scope="module")
def test_wf() -> dict[str, Any]:
    return load("test.yml")


@pytest.fixture(scope="module")
def pr_wf() -> dict[str, Any]:
    return load("pr-report.yml")


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.MULTILINE))


# --- shared setup ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test.yml", "pr-report.yml", "cache.yml", "monitor.yml"])
def test_common_setup(name: str) -> None:
    wf = load(name)
    job = only_job(wf)
    all_steps = steps(job)
    assert job["runs-on"] == "ubuntu-latest"
    # checkout comes first, then python, then the venv cache, before any make call
    assert str(all_steps[0].get("uses")) == "actions/checkout@v4"
    py = index_of(all_steps, uses("actions/setup-python"), "sets up python")
    assert all_steps[py]["uses"] == "actions/setup-python@v5"
    # quoted: an unquoted 3.11 is a float (and 3.10 would become "3.1")
    assert all_steps[py]["with"]["python-version"] == "3.11"
    cache = index_of(all_steps, caches(".venv"), "caches the venv")
    assert all_steps[cache]["uses"] == "actions/cache@v4"
    key = all_steps[cache]["with"]["key"]
    assert CACHE_FILES in key and "runner.os" in key
    first_make = min(i for i, s in enumerate(all_steps) if runs(r"\bmake\b")(s))
    assert py < cache < first_make
    # every step that runs make can fetch torch==...+cpu from the PyTorch index
    for step in all_steps:
        if runs(r"\bmake\b")(step):
            assert env_of(wf, job, step).get("PIP_EXTRA_INDEX_URL") == TORCH_CPU_INDEX
    # actions pinned to a version
    for step in all_steps:
        if "uses" in step:
            assert re.search(r"@v\d+$", step["uses"]), step["uses"]


def test_both_workflows_share_the_venv_cache_key(
    test_wf: dict[str, Any], pr_wf: dict[str, Any]
) -> None:
    def key(wf: dict[str, Any]) -> str:
        all_steps = steps(only_job(wf))
        return all_steps[index_of(all_steps, caches(".venv"), "caches the venv")]["with"]["key"]

    assert key(test_wf) == key(pr_wf)


def test_make_targets_used_by_workflows_exist() -> None:
    targets = make_targets()
    assert {"test", "repro", "report"} <= targets
    # the PR workflow uploads and comments from reports/pr, where `make report` writes
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--out reports/pr" in makefile


# --- test.yml -------------------------------------------------------------------------


def test_test_workflow_triggers_and_permissions(test_wf: dict[str, Any]) -> None:
    on = triggers(test_wf)
    assert set(on) == {"push", "pull_request"}
    assert on["push"]["branches"] == ["main"]
    assert test_wf["permissions"] == {"contents": "read"}
    concurrency = test_wf["concurrency"]
    assert concurrency["cancel-in-progress"] is True
    assert "github.ref" in concurrency["group"]


def test_test_workflow_runs_make_test(test_wf: dict[str, Any]) -> None:
    all_steps = steps(only_job(test_wf))
    i = index_of(all_steps, runs(r"^make test$"), "runs `make test`")
    assert i == len(all_steps) - 1


# --- pr-report.yml --------------------------------------------------------------------


def test_pr_workflow_triggers_and_permissions(pr_wf: dict[str, Any]) -> None:
    assert set(triggers(pr_wf)) == {"pull_request"}
    assert pr_wf["permissions"] == {"contents": "read", "pull-requests": "write"}
    concurrency = pr_wf["concurrency"]
    assert concurrency["cancel-in-progress"] is True
    assert "github.event.pull_request.number" in concurrency["group"]


def test_pr_workflow_fetches_full_history(pr_wf: dict[str, Any]) -> None:
    checkout = steps(only_job(pr_wf))[0]
    assert checkout["uses"] == "actions/checkout@v4"
    assert checkout["with"]["fetch-depth"] == 0


def test_pr_workflow_repro_report_upload_comment_in_order(pr_wf: dict[str, Any]) -> None:
    job = only_job(pr_wf)
    all_steps = steps(job)
    pull = index_of(all_steps, runs(r"dvc pull --run-cache"), "pulls from the DVC remote")
    repro = index_of(all_steps, runs(r"^make repro$"), "runs `make repro`")
    report = index_of(all_steps, runs(r"^make report BASE="), "runs `make report`")
    upload = index_of(all_steps, uses("actions/upload-artifact"), "uploads the artifact")
    comment = index_of(all_steps, runs(r"^gh pr comment "), "posts the comment")
    assert pull < repro < report < upload < comment
    # the pull only runs when the remote is configured, and never fails the job
    assert all_steps[pull]["if"] == "env.DVC_REMOTE_URL != ''"
    assert "make remote" in all_steps[pull]["run"] and "|| echo" in all_steps[pull]["run"]
    assert job["env"]["DVC_REMOTE_URL"] == "${{ secrets.DVC_REMOTE_URL }}"

    # the report compares against the PR's base branch, as fetched from origin
    report_step = all_steps[report]
    assert 'BASE="origin/${BASE_REF}"' in report_step["run"]
    assert env_of(pr_wf, job, report_step)["BASE_REF"] == "${{ github.base_ref }}"

    artifact = all_steps[upload]
    assert artifact["uses"] == "actions/upload-artifact@v4"
    assert artifact["with"]["name"] == "pipeline-report"
    assert artifact["with"]["path"] == "reports/pr"
    # CML is gone: unmaintained, and not installable from the npm registry
    assert not any("cml" in str(s.get("uses", "")) + str(s.get("run", "")) for s in all_steps)


def test_pr_workflow_edits_one_comment_with_gh(pr_wf: dict[str, Any]) -> None:
    job = only_job(pr_wf)
    all_steps = steps(job)
    step = all_steps[index_of(all_steps, runs(r"^gh pr comment "), "posts the comment")]
    args = step["run"].split()
    assert args[:4] == ["gh", "pr", "comment", '"${PR_NUMBER}"']
    assert "--edit-last" in args and "--create-if-none" in args
    assert args[args.index("--body-file") + 1] == "reports/pr/report.md"
    env = env_of(pr_wf, job, step)
    assert env["GH_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert env["PR_NUMBER"] == "${{ github.event.pull_request.number }}"
    # fork PRs get a read-only token: the comment step is skipped for them
    assert "github.event.pull_request.head.repo.full_name" in step["if"]


def test_cache_workflow_pushes_run_cache_on_main_only_with_a_remote() -> None:
    wf = load("cache.yml")
    assert triggers(wf)["push"]["branches"] == ["main"]
    job = only_job(wf)
    all_steps = steps(job)
    push = index_of(all_steps, runs(r"dvc push --run-cache"), "pushes the run cache")
    repro = index_of(all_steps, runs(r"^make repro$"), "runs `make repro`")
    assert repro < push
    for i in (push, repro):
        assert all_steps[i]["if"] == "env.DVC_REMOTE_URL != ''"
    assert {"remote", "repro", "env"} <= make_targets()


# --- monitor.yml ----------------------------------------------------------------------


def test_monitor_workflow_is_scheduled_and_dispatchable() -> None:
    wf = load("monitor.yml")
    on = triggers(wf)
    assert set(on) == {"schedule", "workflow_dispatch"}
    cron = on["schedule"][0]["cron"].split()
    # Not at minute 0: the top of the hour is when GitHub delays or drops scheduled runs.
    assert len(cron) == 5 and cron[0] != "0" and cron[0].isdigit()
    assert "logs_url" in on["workflow_dispatch"]["inputs"]
    assert wf["permissions"] == {"contents": "read", "issues": "write"}
    # The limits of scheduled runs are stated where a maintainer reads them.
    text = (WORKFLOWS / "monitor.yml").read_text(encoding="utf-8")
    for limit in ("default branch", "5 minutes", "60 days", "dropped"):
        assert limit in text, limit


def test_monitor_workflow_fetches_monitors_uploads_and_opens_an_issue() -> None:
    wf = load("monitor.yml")
    job = only_job(wf)
    all_steps = steps(job)
    restore = index_of(all_steps, runs(r"dvc pull split train"), "restores the reference")
    fetch = index_of(all_steps, runs(r"aws s3 sync"), "fetches the logs")
    monitor = index_of(all_steps, runs(r"make monitor LOGS=logs"), "runs `make monitor`")
    upload = index_of(all_steps, uses("actions/upload-artifact"), "uploads the report")
    issue = index_of(all_steps, runs(r"gh issue create"), "opens an issue")
    assert restore < fetch < monitor < upload < issue
    # Without a remote the reference is rebuilt; the fetch fails loudly without logs.
    assert "make repro" in all_steps[restore]["run"]
    assert "exit 1" in all_steps[fetch]["run"]
    assert job["env"]["LOGS_URL"] == "${{ inputs.logs_url || secrets.MONITOR_LOGS_URL }}"
    # A gate failure fails the step (pipefail through tee) and so the job.
    assert all_steps[monitor]["shell"] == "bash" and all_steps[monitor]["id"] == "monitor"
    assert "| tee reports/monitor.log" in all_steps[monitor]["run"]
    artifact = all_steps[upload]
    assert artifact["if"] == "always()" and artifact["with"]["name"] == "monitoring-report"
    assert "reports/monitor" in artifact["with"]["path"].split()
    step = all_steps[issue]
    assert step["if"] == "failure() && steps.monitor.outcome == 'failure'"
    assert env_of(wf, job, step)["GH_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert {"monitor", "remote", "repro", "env"} <= make_targets()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "tabular_pipeline.monitoring.cli" in makefile
