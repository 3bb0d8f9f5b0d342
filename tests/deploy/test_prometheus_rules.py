"""The Prometheus configuration and alert rules, checked by promtool, Prometheus's own tool.

`promtool check config` validates deploy/prometheus/prometheus.yml and the rule files it loads;
`promtool test rules` runs the rule unit tests in deploy/prometheus/tests/. promtool comes from
Debian's `prometheus` package, which `make test` installs when it is missing; without it these
tests fail under CI (CI=true) and are skipped elsewhere.

Beyond promtool: every alert says how bad it is (`severity`) and links a runbook section that
exists, and every metric the rules use is documented in deploy/README.md's metrics table.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
README = ROOT / "deploy" / "README.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: `make test` installs Debian's prometheus package first")
        pytest.skip("promtool is not installed (`make promtool`, or apt-get install prometheus)")
    return path


def run(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def alerts() -> list[dict]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_there_are_rules_and_rule_tests() -> None:
    assert RULES, "deploy/prometheus/rules/ has no rule files"
    assert RULE_TESTS, "deploy/prometheus/tests/ has no rule unit tests"


def test_promtool_checks_the_config_and_the_rules_it_loads() -> None:
    output = run("check", "config", str(CONFIG))
    for path in RULES:
        assert path.name in output, f"prometheus.yml does not load {path.relative_to(ROOT)} (rule_files)"


def test_promtool_checks_the_rules() -> None:
    run("check", "rules", *map(str, RULES))


def test_promtool_rule_unit_tests_pass() -> None:
    output = run("test", "rules", *[path.name for path in RULE_TESTS], cwd=PROMETHEUS_DIR / "tests")
    assert "SUCCESS" in output


def test_every_alert_is_unit_tested_firing() -> None:
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test") or []:
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    untested = {rule["alert"] for rule in alerts()} - tested
    assert not untested, f"alerts with no unit test that shows them firing: {sorted(untested)}"


def test_the_burn_rate_alerts_use_the_agreed_windows_and_factors() -> None:
    by_name = {rule["alert"]: " ".join(rule["expr"].split()) for rule in alerts()}
    for slo in ("switchboard:assignment_latency_slo_errors", "switchboard:slo_errors"):
        page = [expr for expr in by_name.values() if f"{slo}:ratio_rate1h" in expr and "14.4" in expr]
        assert page, f"no page alert on {slo} over 1h"
        for window in ("1h", "5m", "6h", "30m"):
            assert f"{slo}:ratio_rate{window}" in page[0], f"the page alert on {slo} does not use the {window} window"
        assert "6 *" in page[0], f"the page alert on {slo} has no 6x burn over 6h and 30m"
        ticket = [expr for expr in by_name.values() if f"{slo}:ratio_rate3d" in expr]
        assert ticket and f"{slo}:ratio_rate6h" in ticket[0], f"no 1x ticket alert on {slo} over 3d and 6h"


def test_every_alert_has_a_severity_and_a_runbook_that_exists() -> None:
    anchors = {slug(line.lstrip("#").strip()) for line in README.read_text().splitlines() if line.startswith("#")}
    for rule in alerts():
        assert rule.get("labels", {}).get("severity") in ("page", "ticket"), f"{rule['alert']}: severity page|ticket"
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), f"{rule['alert']} has no summary"
        runbook = annotations.get("runbook", "")
        assert runbook.startswith("deploy/README.md#"), f"{rule['alert']} has no runbook link into deploy/README.md"
        assert runbook.split("#", 1)[1] in anchors, f"{rule['alert']}: deploy/README.md has no section {runbook!r}"


def test_every_metric_the_rules_use_is_documented() -> None:
    documented = set(re.findall(r"`(switchboard_[a-z_]+)`", README.read_text()))
    for path in RULES:
        used = set(re.findall(r"\b(switchboard_[a-z_]+?)(?:_bucket|_count|_sum)?\b", path.read_text()))
        used = {name for name in used if not name.endswith(("_bucket", "_count", "_sum"))}
        missing = used - documented
        assert not missing, f"{path.name} uses metrics not in deploy/README.md's table: {sorted(missing)}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_amtool_checks_the_alertmanager_config() -> None:
    """amtool (Debian's prometheus-alertmanager) is optional: `make test` does not install it."""
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (apt-get install prometheus-alertmanager)")
    config = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    result = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
