"""A real Prometheus server scrapes the running services, loads the shipped rules, and answers PromQL.

Prometheus is Debian's `prometheus` binary (installed by `make test` with promtool). The test
writes a configuration like deploy/prometheus/prometheus.yml, with the same job names
(`switchboard-<service>`), pointed at the ports of the platform the suite started, scraping every
second, and with deploy/prometheus/rules loaded, then asks Prometheus over its HTTP API.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from shared.launcher.platform import SERVICES
from shared.launcher.servers import free_port, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"


def unassignable() -> str:
    """A skill no agent has: this module's tickets wait in the queue and take no agent's capacity
    from the other tests sharing the platform."""
    return f"ops-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def prometheus(running_platform, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("the prometheus binary is missing: `make test` installs Debian's prometheus package")
        pytest.skip("prometheus is not installed (`make promtool`, or apt-get install prometheus)")
    folder = tmp_path_factory.mktemp("prometheus")
    shutil.copytree(RULES, folder / "rules")
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": shipped["rule_files"],
        "scrape_configs": [
            {
                "job_name": f"switchboard-{service}",
                "static_configs": [{"targets": [f"127.0.0.1:{running_platform.platform.ports.of(service)}"]}],
            }
            for service in SERVICES
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", process, folder / "prometheus.log")
    finally:
        stop_process(process)
        log.close()


class Prometheus:
    def __init__(self, url: str, process: subprocess.Popen, log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    async def get(self, path: str, **params) -> dict:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            response = await client.get(path, params=params)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def wait_for(self, query: str, check, timeout: float = 60) -> list[dict]:
        """Polls an instant query until `check(result)` holds; fails with the last result."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        result: list[dict] = []
        while loop.time() < deadline:
            assert self.process.poll() is None, f"prometheus exited; see {self.log}:\n{self.log.read_text()[-2000:]}"
            try:
                result = (await self.get("/api/v1/query", query=query))["result"]
                if check(result):
                    return result
            except httpx.HTTPError:
                pass  # not listening yet
            await asyncio.sleep(0.5)
        pytest.fail(f"{query} never satisfied the check; last result: {result}")


async def test_prometheus_scrapes_every_service(prometheus):
    result = await prometheus.wait_for('up{job=~"switchboard-.+"} == 1', lambda r: len(r) == len(SERVICES))
    assert {series["metric"]["job"] for series in result} == {f"switchboard-{s}" for s in SERVICES}


async def test_a_request_shows_up_as_a_series_in_prometheus(prometheus, running_platform):
    ticket = await running_platform.submit_ticket(required_skills=[unassignable()])
    assert ticket["id"]
    query = (
        'switchboard_http_requests_total{job="switchboard-intake", method="POST", route="/v1/tickets", status="201"}'
    )
    result = await prometheus.wait_for(query, lambda r: r and float(r[0]["value"][1]) >= 1)
    assert result[0]["metric"]["instance"] == f"127.0.0.1:{running_platform.platform.ports.intake}"
    # The ticket's events are relayed by intake and consumed by the other services.
    await prometheus.wait_for(
        'sum(switchboard_events_published_total{job="switchboard-intake", topic="support.tickets.v1"})',
        lambda r: r and float(r[0]["value"][1]) >= 1,
    )


async def test_consumer_lag_is_measured_for_every_consuming_service(prometheus):
    result = await prometheus.wait_for(
        "max by (job, topic) (switchboard_consumer_lag_messages)", lambda r: len({s["metric"]["job"] for s in r}) >= 3
    )
    by_job = {}
    for series in result:
        by_job.setdefault(series["metric"]["job"], set()).add(series["metric"]["topic"])
    assert "support.tickets.v1" in by_job["switchboard-routing"]
    assert "support.tickets.v1" in by_job["switchboard-sla"]


async def test_the_shipped_rules_load_and_evaluate_without_errors(prometheus, running_platform):
    await running_platform.submit_ticket(required_skills=[unassignable()])
    await prometheus.wait_for("switchboard:slo_errors:ratio_rate5m", lambda r: len(r) == 1)
    groups = (await prometheus.get("/api/v1/rules"))["groups"]
    names = {group["name"] for group in groups}
    assert {"switchboard-slo-recording", "switchboard-slo-alerts", "switchboard-operations"} <= names
    broken = [
        (rule["name"], rule.get("lastError"))
        for group in groups
        for rule in group["rules"]
        if rule.get("health") == "err"
    ]
    assert not broken, f"rules failing on the real server: {broken}"


async def test_every_metric_the_services_export_is_documented(prometheus, running_platform):
    """deploy/README.md's table names every switchboard_* and faststream_* metric that is scraped."""
    import re

    await running_platform.submit_ticket(required_skills=[unassignable()])  # so the lazily labelled counters exist
    await prometheus.wait_for('up{job=~"switchboard-.+"} == 1', lambda r: len(r) == len(SERVICES))
    await asyncio.sleep(2)  # one more scrape
    names = await prometheus.get("/api/v1/label/__name__/values")
    exported = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for name in names
        # `_created` series are prometheus-client's timestamps of the counters and histograms themselves.
        if name.startswith(("switchboard_", "faststream_")) and not name.endswith("_created")
    }
    documented = set(re.findall(r"`((?:switchboard|faststream)_[a-z_]+)`", (ROOT / "deploy" / "README.md").read_text()))
    assert exported, "no Switchboard metric was scraped"
    assert not exported - documented, f"exported but not in deploy/README.md's metrics table: {sorted(exported - documented)}"
