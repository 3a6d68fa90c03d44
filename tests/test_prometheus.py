"""The shipped Prometheus config and alert rules: promtool's checks and rule unit tests.

promtool comes from the system (Debian's `prometheus` package, which `.ci/run`
installs; `make test` installs nothing): without it these tests skip with the
reason (tests/tools.py). The scrape of a real served Bento is in
tests/test_serving_e2e.py.
"""

from __future__ import annotations

import re
import subprocess

import yaml

from tests import tools
from tests.conftest import ROOT
from tests.test_monitoring import EXPORTED, METRIC_NAME, SERVICE_METRICS

PROM = ROOT / "monitoring" / "prometheus"
needs_promtool = tools.needs("promtool")


def promtool(*args: str) -> str:
    out = subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


@needs_promtool
def test_config_and_rules_pass_promtool_checks() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert re.search(r"SUCCESS: \d+ rules found", promtool("check", "rules", "alerts.yml"))


@needs_promtool
def test_alert_rules_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_rules_use_the_service_and_textfile_metric_names() -> None:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {
        "TabularHighErrorRate",
        "TabularHighLatencyP99",
        "TabularVariantShareOff",
        "TabularNoTraffic",
        "TabularMonitoringGateFailed",
        "TabularLiveQualityDrop",
    } <= alerts
    used = {name for rule in rules for name in METRIC_NAME.findall(rule["expr"])}
    assert used <= SERVICE_METRICS | EXPORTED, used - SERVICE_METRICS - EXPORTED
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "alerts_test.yml").read_text()))
    assert alerts <= tested, alerts - tested
