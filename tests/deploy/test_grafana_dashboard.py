"""The Grafana dashboard: well-formed, on the provisioned datasource, covering what SREs watch,
and every query valid PromQL on documented metrics.

The queries are parsed by promtool (as recording rules in a scratch file), so a typo in a panel
fails here rather than showing an empty graph. promtool comes from Debian's `prometheus` package,
which `make test` installs; without it that one test is skipped outside CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "switchboard.json"
DATASOURCE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
README = ROOT / "deploy" / "README.md"

# What the issue asks the dashboard to show, as words its panel titles must contain.
REQUIRED = {
    "ticket flow": "Tickets created",
    "queue depth": "Queue depth",
    "waiting times": "Wait from creation to assignment",
    "SLA attainment": "SLA attainment",
    "breaches": "SLA breaches",
    "notifications": "Notifications",
    "DLQ": "dead-letter",
    "outbox lag": "Outbox lag",
    "consumer lag": "Consumer lag",
    "RED: rate": "HTTP requests",
    "RED: errors": "5xx",
    "RED: duration": "latency",
    "handlers": "FastStream",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def test_the_dashboard_has_a_stable_uid_and_unique_panel_ids(dashboard: dict) -> None:
    assert dashboard["uid"] == "switchboard-overview"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"


def test_every_panel_uses_the_provisioned_datasource(dashboard: dict) -> None:
    uid = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]["uid"]
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == uid, f"panel {panel['title']!r} uses another datasource"
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"


def test_the_dashboard_shows_what_the_issue_asks_for(dashboard: dict) -> None:
    titles = " | ".join(panel["title"] for panel in panels(dashboard))
    missing = [need for need, words in REQUIRED.items() if words.lower() not in titles.lower()]
    assert not missing, f"no panel for {missing}; titles: {titles}"


def test_every_metric_on_the_dashboard_is_documented(dashboard: dict) -> None:
    documented = set(re.findall(r"`((?:switchboard|faststream)_[a-z_]+)`", README.read_text()))
    used = set()
    for expr in expressions(dashboard):
        for name in re.findall(r"\b((?:switchboard|faststream)_[a-z_]+)", expr):
            used.add(re.sub(r"_(bucket|count|sum)$", "", name))
    missing = used - documented
    assert not missing, f"the dashboard uses metrics not in deploy/README.md: {sorted(missing)}"


def test_every_query_is_valid_promql(dashboard: dict, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: `make test` installs Debian's prometheus package first")
        pytest.skip("promtool is not installed")
    rules = [
        # Grafana's variables, replaced by what they stand for at query time.
        {"record": f"dashboard:query_{index}", "expr": expr.replace("$__rate_interval", "1m").replace("$job", "switchboard-.+")}
        for index, expr in enumerate(expressions(dashboard))
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
