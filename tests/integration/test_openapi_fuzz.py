"""The services' OpenAPI documents, checked against the READMEs and the services: Schemathesis runs every
check, in every phase, against all four running services.

The run generates its requests from each `/openapi.json`, so it keeps the documents honest: every answer
must be a documented status with a documented body and media type; no input, well-formed or malformed,
may get a 5xx; input the schema refuses must be refused (4xx), and input it allows must be accepted, so
each schema is exactly as strict as its service.
"""

import json
import re
import time
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature
from tests.support import take_every_ticket_no_test_claims

pytestmark = pytest.mark.integration

README = Path(__file__).parents[2] / "services" / "intake" / "README.md"
SIGNED = {  # authenticated by a signature, not an API key
    ("POST", "/v1/inbound/email"),
    ("GET", "/v1/tickets/{ticket_id}/csat"),
    ("POST", "/v1/tickets/{ticket_id}/csat"),
    ("GET", "/v1/customers/{customer_id}/nps"),
    ("POST", "/v1/customers/{customer_id}/nps"),
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
    ("GET", "/v1/tickets/{ticket_id}/csat"): {403, 422},
    ("POST", "/v1/tickets/{ticket_id}/csat"): {403, 404, 409, 413, 422},
    ("GET", "/v1/customers/{customer_id}/nps"): {403, 409, 422},
    ("POST", "/v1/customers/{customer_id}/nps"): {403, 409, 413, 422},
}


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


SERVICES = ("intake", "routing", "sla", "notify", "insights")
RUN = SchemathesisConfig.from_str(
    """
# Every check is on (the default), none left out; the examples (there are none), coverage, fuzzing and
# stateful phases all run.
continue-on-failure = true

[cache]
enabled = false  # each run on its own: nothing learnt from an earlier one, nothing left in the work tree

[generation]
max-examples = 10  # per operation and phase: the five services in about a minute each on a busy machine
deterministic = true  # the same requests on every run, so CI is reproducible
database = "none"
with-security-parameters = false  # the run sends the platform's key (`headers`), and probes without it

[checks.negative_data_rejection]
# A body over MAX_REQUEST_BYTES is refused too.
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

# Schema-valid input the service may still refuse, for what no schema can say:
[[operations]]
include-path = "/v1/tickets"
include-method = "GET"
# `cursor` is a token the API gave out: the schema says its alphabet, not which tokens exist.
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-path = "/v1/tickets/{ticket_id}"
include-method = "PATCH"
# `If-Match` takes any version; the ticket's current one is state (412 otherwise), as is which status a
# ticket may move to (409).
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "412", "429"]

[[operations]]
include-path = "/v1/agents/{agent_id}/contact"
include-method = "PUT"
# Whether a webhook URL's host resolves, and to a public address, is known only when notify looks it up.
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

[[operations]]
include-path = "/v1/inbound/email"
include-method = "POST"
# A raw email is any bytes to a schema; whether it has a From address, and a body or a subject, is more than
# a schema can say of it, or of the JSON form's `from` (`Ann Lee <ann@example.com>`).
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""
)


def failures_of(run) -> list[str]:
    """Each failed check of an engine run, with a curl command that repeats it; and the run's errors."""
    found = []
    for event in run:
        if isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        repeat = check.failure_info.code_sample
                        found.append(f"[{event.phase}] {failure.title}: {failure.message}\n{repeat}")
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            found.append(f"error: {getattr(event, 'value', None) or getattr(event, 'exception', None)!r}")
    return found


def created(run_events, method: str, path: str) -> set[str]:
    """The ids in the answers to successful `method` requests whose path matches the regex `path`."""
    ids = set()
    for event in run_events:
        if isinstance(event, events.ScenarioFinished):
            for interaction in event.recorder.interactions.values():
                response, request = interaction.response, interaction.request
                if request.method == method and response is not None and response.status_code in (200, 201):
                    if re.search(path, request.uri):
                        answer = json.loads(response.content or b"{}")
                        ticket = answer.get("ticket") or answer
                        ids |= {ticket.get("id") or ticket.get("ticket_id")} - {None}
    return ids


@pytest.mark.parametrize("service", SERVICES)
def test_every_check_of_schemathesis_passes_on_every_service(running_platform, service):
    url = running_platform.platform.url(service)
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=RUN)
    schema.config.update(base_url=url, headers=running_platform.headers)

    run = list(from_schema(schema).execute())

    if service == "intake":
        solve(running_platform, created(run, "POST", r"/v1/tickets(/[^/]+/messages)?$"))
    if service == "routing":  # no fuzzed agent may take other tests' tickets
        with requests.Session() as routing:
            for agent_id in created(run, "PUT", r"/v1/agents/[^/]+$"):
                routing.patch(
                    f"{url}/v1/agents/{agent_id}", json={"status": "offline"}, headers=running_platform.headers
                )
        take_every_ticket_no_test_claims(running_platform)  # the fuzz may have sent it away with its tickets
    failures = failures_of(run)
    assert not failures, f"{len(failures)} failed checks on {service}:\n\n" + "\n\n".join(failures[:20])


def solve(running_platform, ticket_ids: set[str]) -> None:
    """Tickets a fuzz opened, solved so none waits in routing's queue for other tests' agents."""
    url = running_platform.platform.url("intake")
    with requests.Session() as intake:
        for ticket_id in ticket_ids:
            intake.patch(f"{url}/v1/tickets/{ticket_id}", json={"status": "solved"}, headers=running_platform.headers)


@pytest.fixture(scope="module")
def fuzz_session(running_platform):
    with SigningSession(running_platform.platform.service_environment("intake")["INBOUND_EMAIL_SIGNING_KEY"]) as session:
        yield session


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_signed_emails_fuzzed_past_the_signature_get_documented_answers(running_platform, fuzz_session, mode):
    """The run above cannot sign the email webhook, so it meets only the signature check: here the
    fuzzer's emails are signed, and reach the parsers."""
    url = running_platform.platform.url("intake")
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=RUN)
    schema.config.update(base_url=url)
    operation = schema["/v1/inbound/email"]["POST"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def fuzz(case):
        response = case.call_and_validate(session=fuzz_session)  # every check that applies to one request
        if response.status_code == 201:
            opened.add(response.json()["ticket_id"])

    opened: set[str] = set()
    try:
        fuzz()
    finally:
        solve(running_platform, opened)


async def test_every_service_documents_its_errors_and_metrics_and_refuses_in_its_schemas_what_it_refuses(
    running_platform,
):
    documents = {}
    for service in SERVICES:
        async with running_platform.client(service) as client:
            documents[service] = (await client.get("/openapi.json")).json()

    for service, document in documents.items():
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                answers = operation["responses"]
                expected = {"413"} | ({"401", "403", "429"} if "security" in operation else set())
                for code in expected:
                    assert answers[code]["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Problem"
                    }, f"{service}: {method} {path} does not document {code}"
        assert set(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    routing, notify = (documents[name]["components"]["schemas"] for name in ("routing", "notify"))
    assert routing["AgentProfile"]["properties"]["skills"]["additionalProperties"] is False
    assert notify["WantedPreferences"]["properties"]["opt_out"]["items"]["enum"] == [
        "acknowledgement", "agent_reply", "assignment", "csat_survey", "follow_up", "nps_survey", "sla_breached",
        "sla_warning",
    ]
    assert all(branch["required"] for branch in notify["ContactDetails"]["anyOf"]), "{} would be a contact"
