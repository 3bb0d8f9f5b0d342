"""Scopes, rate limits and body sizes, as an operator configures them, on a platform of their own.

Scopes and limits are the platform's: every service applies them to its own routes."""

import asyncio
import json
import urllib.error
import urllib.request

import httpx
import pytest

from tests.support import started_platform

pytestmark = pytest.mark.integration

ADMIN_KEY, READER_KEY, LIMITED_KEY, DESK_KEY = "admin-key", "reader-key", "limited-key", "desk-key"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    settings = {
        "SWITCHBOARD_API_KEYS": f"{ADMIN_KEY},{READER_KEY},{LIMITED_KEY},{DESK_KEY}",
        "API_KEY_SCOPES": f"{READER_KEY}=tickets:read; {DESK_KEY}=agents",
        "RATE_LIMIT_PER_MINUTE": "60",  # a bucket of ten requests, refilling one a second
        "MAX_REQUEST_BYTES": "2048",
    }
    with started_platform(tmp_path_factory.mktemp("limits"), **settings) as running:
        yield running.platform


@pytest.fixture(scope="module")
def intake_url(platform):
    return platform.url("intake")


def client(url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


TICKET = {"channel": "web", "customer": {"id": "c-keys"}, "subject": "Scopes", "body": "Who may write?"}


async def test_a_read_only_key_reads_but_cannot_write(intake_url):
    async with client(intake_url, ADMIN_KEY) as admin, client(intake_url, READER_KEY) as reader:
        created = await admin.post("/v1/tickets", json=TICKET)
        read = await reader.get(f"/v1/tickets/{created.json()['id']}")
        refused = await reader.post("/v1/tickets", json=TICKET)

    assert created.status_code == 201 and read.status_code == 200
    assert refused.status_code == 403
    assert "tickets:write" in refused.json()["message"]


async def test_a_key_over_its_rate_limit_gets_429_with_retry_after_and_other_keys_are_unaffected(intake_url):
    async with client(intake_url, LIMITED_KEY) as limited, client(intake_url, ADMIN_KEY) as admin:
        answers = [await limited.get("/v1/tickets", params={"limit": 1}) for _ in range(15)]
        other = await admin.get("/v1/tickets", params={"limit": 1})

    statuses = [answer.status_code for answer in answers]
    assert statuses[:10] == [200] * 10, statuses  # the bucket holds ten seconds' worth
    assert 429 in statuses[10:]
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1 and "rate limit" in refused.json()["message"]
    assert other.status_code == 200


async def test_a_body_over_the_size_limit_gets_413_and_nothing_is_opened(intake_url):
    big = {**TICKET, "customer": {"id": "c-big"}, "body": "x" * 4096}
    async with client(intake_url, ADMIN_KEY) as admin:
        response = await admin.post("/v1/tickets", json=big)
        listed = await admin.get("/v1/tickets", params={"customer_id": "c-big"})

    assert response.status_code == 413
    assert "2048" in response.json()["message"]
    assert listed.json()["tickets"] == []


async def test_a_client_that_sends_its_whole_body_before_reading_still_gets_the_413(intake_url):
    """Python's urllib writes all 5 MB before it reads a byte of the answer."""
    request = urllib.request.Request(
        f"{intake_url}/v1/tickets", data=b"x" * 5_000_000, method="POST",
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )

    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=30)

    assert refused.value.code == 413
    assert json.loads(refused.value.read())["message"] == "request body larger than 2048 bytes"


async def test_a_connection_idle_longer_than_clients_keep_theirs_is_still_open_for_the_next_request(intake_url):
    """A server that closes idle connections first races clients reusing them: their request is dropped."""
    host, port = intake_url.removeprefix("http://").split(":")
    request = f"GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(host, int(port))

    async def status_of_a_request() -> bytes:
        writer.write(request)
        status = await asyncio.wait_for(reader.readline(), 10)
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        return status

    try:
        assert (await status_of_a_request()).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(6)  # longer than httpx keeps an idle connection, and than uvicorn's default
        assert (await status_of_a_request()).startswith(b"HTTP/1.1 200"), "the server closed the idle connection"
    finally:
        writer.close()


async def test_every_service_applies_the_scopes_of_its_routes(platform):
    agent = {"name": "Ada", "skills": {}, "capacity": 1, "status": "offline"}
    async with client(platform.url("routing"), READER_KEY) as reader, client(platform.url("routing"), DESK_KEY) as desk:
        reader_put = await reader.put("/v1/agents/ada", json=agent)
        desk_put = await desk.put("/v1/agents/ada", json=agent)
        reader_queues = await reader.get("/v1/queues")
        desk_queues = await desk.get("/v1/queues")
    async with client(platform.url("sla"), READER_KEY) as reader, client(platform.url("sla"), DESK_KEY) as desk:
        reader_policies, desk_policies = await reader.get("/v1/policies"), await desk.get("/v1/policies")
    async with client(platform.url("notify"), READER_KEY) as reader, client(platform.url("notify"), DESK_KEY) as desk:
        reader_prefs = await reader.put("/v1/customers/c-keys/preferences", json={"opt_out": []})
        desk_contact = await desk.put("/v1/agents/ada/contact", json={"channel": "email", "email": "ada@example.com"})

    assert (reader_put.status_code, desk_put.status_code) == (403, 200)
    assert "agents" in reader_put.json()["message"]
    assert (reader_queues.status_code, desk_queues.status_code) == (200, 403)
    assert (reader_policies.status_code, desk_policies.status_code) == (200, 403)
    assert reader_prefs.status_code == 403 and "tickets:write" in reader_prefs.json()["message"]
    assert desk_contact.status_code == 200
