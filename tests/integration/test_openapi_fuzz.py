"""Intake's OpenAPI document, checked against the README and fuzzed with Schemathesis on the running service.

The fuzz generates its requests from `/openapi.json`, so it also keeps the document honest: every
answer must be a documented status with a documented body, and no input, well-formed or malformed,
may get a 5xx; malformed input must get a 4xx.
"""

import re
import time
import uuid
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "services" / "intake" / "README.md"
SIGNED = {  # authenticated by a signature, not an API key
    ("POST", "/v1/inbound/email"),
    ("GET", "/v1/tickets/{ticket_id}/csat"),
    ("POST", "/v1/tickets/{ticket_id}/csat"),
}
ERRORS = {  # every /v1 route, with the error answers the README promises for it
    ("POST", "/v1/tickets"): {401, 403, 409, 413, 422, 429},
    ("GET", "/v1/tickets"): {401, 403, 422, 429},
    ("GET", "/v1/tickets/{ticket_id}"): {401, 403, 404, 429},
    ("PATCH", "/v1/tickets/{ticket_id}"): {401, 403, 404, 409, 412, 413, 422, 429},
    ("POST", "/v1/tickets/{ticket_id}/messages"): {401, 403, 404, 409, 413, 422, 429},
    ("GET", "/v1/tickets/{ticket_id}/messages"): {401, 403, 404, 429},
    ("GET", "/v1/customers/{customer_id}"): {401, 403, 404, 429},
    ("POST", "/v1/inbound/email"): {401, 409, 413, 422},
    ("GET", "/v1/tickets/{ticket_id}/csat"): {403, 404, 409, 422},
    ("POST", "/v1/tickets/{ticket_id}/csat"): {403, 404, 409, 413, 422},
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
UNSTAFFED = f"fuzz-{uuid.uuid4().hex[:8]}"  # a skill no agent has: the fuzz's own ticket takes no one's capacity


def unnamed(path: str) -> str:
    """`/v1/tickets/{ticket_id}` → `/v1/tickets/{}`: the README calls path parameters `{id}`."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def readme_routes() -> set[tuple[str, str]]:
    rows = re.findall(r"^\| `(GET|POST|PATCH|PUT|DELETE) (/v1/[^`?]+)", README.read_text(), re.MULTILINE)
    return {(method, unnamed(path)) for method, path in rows}


async def test_the_openapi_document_has_every_route_with_its_body_and_error_answers(running_platform):
    async with running_platform.client("intake") as intake:
        document = (await intake.get("/openapi.json")).json()
    operations = {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        if path.startswith("/v1/")
        for method, operation in methods.items()
    }

    assert {(method, unnamed(path)) for method, path in ERRORS} == readme_routes()
    assert set(operations) == set(ERRORS)
    for (method, path), operation in operations.items():
        answers = operation["responses"]
        missing = {code for code in ERRORS[method, path] if "content" not in answers.get(str(code), {})}
        assert not missing, f"{method} {path} does not document (with a body) its answers {sorted(missing)}"
        if method in ("POST", "PATCH"):
            bodies = operation["requestBody"]["content"]
            assert bodies and all("schema" in body for body in bodies.values()), f"{method} {path}: no body schema"
        assert ("security" in operation) != ((method, path) in SIGNED), f"{method} {path}: wrong authentication"
        if "429" in answers:
            assert "Retry-After" in answers["429"]["headers"]
    assert set(operations["POST", "/v1/tickets"]["responses"]["201"]["headers"]) >= {"Location", "ETag"}


def raw_submission(metadata: bytes) -> dict:
    """A ticket sent as bytes, with JSON that Python's encoder would not write (NaN, a lone surrogate)."""
    body = b'{"channel": "api", "customer": {"id": "c"}, "subject": "s", "body": "b", "metadata": ' + metadata + b"}"
    return {"content": body, "headers": {"Content-Type": "application/json"}}


def submission(**fields) -> dict:
    return {"json": {"channel": "api", "customer": {"id": "c"}, "subject": "s", "body": "b", **fields}}


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [  # what once got a 500
        ("POST", "/v1/tickets", submission(metadata={"n": 2**63})),
        ("POST", "/v1/tickets", submission(channel="phone", metadata={"duration_seconds": 10**20})),
        ("POST", "/v1/tickets", submission(metadata={"n\x00": 1})),
        ("POST", "/v1/tickets", raw_submission(b'{"n": NaN}')),
        ("POST", "/v1/tickets", raw_submission(b'{"k": "\\ud800"}')),
        ("PATCH", "/v1/tickets/TKT-nope", {"json": {"status": "open"}, "headers": {"If-Match": "\xb2".encode("latin-1")}}),
        ("POST", "/v1/inbound/email", {"content": b"x", "headers": {TIMESTAMP_HEADER: "\xb2".encode("latin-1"),
                                                                     SIGNATURE_HEADER: "sha256=0"}}),
    ],
)
async def test_input_that_once_got_a_server_error_gets_a_4xx_that_says_what_is_wrong(
    running_platform, method, path, kwargs
):
    async with running_platform.client("intake") as intake:
        response = await intake.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["message"]


def test_a_signed_email_with_a_malformed_header_gets_a_422_naming_the_header(running_platform, fuzz_session):
    mail = b"From: ann@example.com\r\nTo: <\r\nSubject: Hello\r\n\r\nHello"  # the stdlib's parser raised on `To: <`
    url = running_platform.platform.url("intake")
    response = fuzz_session.post(f"{url}/v1/inbound/email", data=mail, headers={"Content-Type": "message/rfc822"})
    assert response.status_code == 422 and response.json()["message"] == "the To header is malformed"


class SigningSession(requests.Session):
    """Signs the email webhooks the fuzzer sent without a signature, so the fuzz reaches the email parsers."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        if request.path_url.startswith("/v1/inbound/email") and SIGNATURE_HEADER not in request.headers:
            body = request.body or b""
            timestamp = int(time.time())
            request.headers[TIMESTAMP_HEADER] = str(timestamp)
            request.headers[SIGNATURE_HEADER] = webhook_signature(self.key, timestamp, body.encode() if isinstance(body, str) else body)
        return super().send(request, **kwargs)


@pytest.fixture(scope="module")
def intake_api(running_platform):
    url = running_platform.platform.url("intake")
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.update(base_url=url)
    schema.config.generation.update(with_security_parameters=False)  # the session sends the platform's key
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]  # a body over the size limit: refused too
    return schema


@pytest.fixture(scope="module")
def fuzz_session(running_platform):
    with SigningSession(running_platform.platform.service_environment("intake")["INBOUND_EMAIL_SIGNING_KEY"]) as session:
        session.headers.update(running_platform.headers)
        yield session


@pytest.fixture(scope="module")
async def known_ids(running_platform) -> dict[str, str]:
    """A real ticket and customer, so the fuzz gets past the 404 too."""
    ticket = await running_platform.submit_ticket(required_skills=[UNSTAFFED])
    return {"ticket_id": ticket["id"], "customer_id": ticket["customer"]["id"]}


@pytest.fixture(scope="module")
async def opened(running_platform):
    """Tickets the fuzz opened; solved at the end, so none waits in routing's queue for other tests' agents."""
    ids: set[str] = set()
    yield ids
    async with running_platform.client("intake") as intake:
        for ticket_id in ids:
            await intake.patch(f"/v1/tickets/{ticket_id}", json={"status": "solved"})


def tickets_in(response: requests.Response) -> set[str]:
    """The ids of the tickets a successful POST answered with (opened, or a follow-up started)."""
    if response.request.method != "POST" or response.status_code not in (200, 201):
        return set()
    answer = response.json()
    ticket = answer.get("ticket") or answer
    return {ticket.get("id") or ticket.get("ticket_id")} - {None}


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
@pytest.mark.parametrize(("method", "path"), ERRORS)
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(
    intake_api, fuzz_session, known_ids, opened, method, path, mode
):
    operation = intake_api[path][method]
    known = {name: value for name, value in known_ids.items() if f"{{{name}}}" in path}
    cases = operation.as_strategy(generation_mode=mode)
    if known:
        cases = st.one_of(cases, operation.as_strategy(generation_mode=mode, path_parameters=known))
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    @given(case=cases)
    @settings(
        max_examples=40,  # ~800 requests in all: within the rate limit's burst, and quick on a busy machine
        deadline=None,
        derandomize=True,  # the same requests on every run, so CI is reproducible
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def fuzz(case):
        response = case.call_and_validate(session=fuzz_session, checks=checks)
        opened.update(tickets_in(response))

    fuzz()
