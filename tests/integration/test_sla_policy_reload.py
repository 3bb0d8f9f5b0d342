"""An edited policy file reaches the clocks already running: after a restart, the replica holding the timer
lease reconciles them in the background, keeping the time elapsed, as a priority change would."""

import asyncio
import textwrap
from datetime import timedelta

import pytest

from shared import topics
from tests.integration.test_sla_clocks import clocks, created, of_type, parse, publish, sla_events, ticket_id
from tests.support import eventually, started_platform

pytestmark = pytest.mark.integration

BEFORE = textwrap.dedent(
    """\
    policies:
      - name: standard
        targets:
          resolution: 1h
    """
)
AFTER = textwrap.dedent(
    """\
    policies:
      - name: standard
        warnings: [0.9]
        targets:
          first_reply: 30m
          resolution: 2h
    """
)


async def test_after_the_policy_file_changes_running_clocks_take_the_new_targets_and_keep_their_elapsed_time(tmp_path):
    policies = tmp_path / "policies.yaml"
    policies.write_text(BEFORE)
    with started_platform(tmp_path, SLA_POLICIES_PATH=str(policies), SLA_TIMER_LEASE_SECONDS="1") as running:
        platform = running.platform
        ticket = ticket_id()
        opened = created(ticket).model_copy(update={"created_at": created(ticket).created_at - timedelta(minutes=10)})
        await publish(running, opened)
        await sla_events(running, ticket, lambda es: of_type(es, "clock_started", "resolution"), timeout=60)
        assert set(await clocks(running, ticket)) == {"resolution"}, "the old file has no first_reply"

        await asyncio.to_thread(platform.terminate, "sla")
        policies.write_text(AFTER)
        await asyncio.to_thread(platform.respawn, "sla")

        async with asyncio.timeout(20):
            while (view := await clocks(running, ticket))["resolution"]["target_seconds"] != 7200:
                await asyncio.sleep(0.2)
        resolution = view["resolution"]
        assert (resolution["policy"], resolution["state"]) == ("standard", "running")
        assert parse(resolution["started_at"]) == opened.created_at
        # The ten minutes before the change count: due two hours after creation, not after the restart.
        assert parse(resolution["due_at"]) == opened.created_at + timedelta(hours=2)
        assert 600 <= resolution["elapsed_seconds"] < 660
        first = view["first_reply"]
        assert parse(first["started_at"]) == opened.created_at, "a metric the new file adds starts from creation"
        assert parse(first["due_at"]) == opened.created_at + timedelta(minutes=30)

        await eventually(lambda: running.outbox_drained("sla"))  # what the restart decided is published
        events = [e for e in await running.events_to_end(topics.SLA) if e["subject"] == ticket]
        # The restarted process re-publishes its recent outbox at start, so count event ids, not records.
        assert len({e["id"] for e in of_type(events, "clock_started", "first_reply")}) == 1
        assert len({e["id"] for e in of_type(events, "clock_started", "resolution")}) == 1, "retargeting announces nothing"
        log = (platform.logs / "sla.log").read_text()
        assert "SLA clocks reconciled with the changed policy file: 1 tickets, 2 clocks changed, 1 events" in log
