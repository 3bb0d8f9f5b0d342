"""API key scopes and per-key rate limits."""

from collections import defaultdict

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.intake.api import build_routes
from services.intake.settings import IntakeSettings
from shared.access import Forbidden, KeyPolicy, RateLimited, parse_scopes
from shared.http import scope_guard


def test_scopes_are_parsed_and_mistakes_refused():
    assert parse_scopes("a=tickets:read tickets:write; b=tickets:read,agents;") == {
        "a": frozenset({"tickets:read", "tickets:write"}),
        "b": frozenset({"tickets:read", "agents"}),
    }
    with pytest.raises(ValueError, match="entry 1: unknown scopes tickets:delete"):
        parse_scopes("a=tickets:delete")
    with pytest.raises(ValueError, match="entry 2 is not"):
        parse_scopes("a=agents; b")


def test_a_key_without_the_scope_is_forbidden_and_an_unlisted_key_has_every_scope():
    policy = KeyPolicy(parse_scopes("reader=tickets:read"), per_minute=0)

    policy.check("reader", "tickets:read")
    policy.check("anyone-else", "tickets:write")
    with pytest.raises(Forbidden, match="tickets:write"):
        policy.check("reader", "tickets:write")


def test_each_key_has_its_own_bucket_which_refills_over_time():
    now = [0.0]
    policy = KeyPolicy({}, per_minute=60, clock=lambda: now[0])  # 1/s, bursts of 10

    for _ in range(10):
        policy.check("a", "tickets:read")
    with pytest.raises(RateLimited) as limited:
        policy.check("a", "tickets:read")
    policy.check("b", "tickets:read")
    assert 0 < limited.value.retry_after <= 1
    now[0] = 2.0
    policy.check("a", "tickets:read")


def test_the_routes_answer_403_without_the_scope_and_429_with_retry_after_over_the_limit():
    settings = IntakeSettings(api_key_scopes="reader=tickets:read", rate_limit_per_minute=6)
    needs = scope_guard(KeyPolicy(settings.scopes(), settings.rate_limit_per_minute))
    app = FastAPI()
    app.include_router(build_routes(None, defaultdict(lambda: None), settings, lambda: None, needs))
    client = TestClient(app)
    reader = {"Authorization": "Bearer reader"}

    forbidden = client.patch("/v1/tickets/TKT-1", json={"status": "open"}, headers=reader)
    assert forbidden.status_code == 403 and "tickets:write" in forbidden.json()["detail"]
    answers = [client.patch("/v1/tickets/TKT-1", json={"status": "open"}, headers=reader) for _ in range(12)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and limited[0].headers["Retry-After"].isdigit()


def test_malformed_scopes_stop_a_service_at_start():
    with pytest.raises(ValueError, match="API_KEY_SCOPES"):
        IntakeSettings(api_key_scopes="reader=tickets:everything")
