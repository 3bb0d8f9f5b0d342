"""The HTTP conventions every service's API shares: errors that say what is wrong, and size limits."""

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, EmailStr

from shared.http import KEYED, Problem, describe_validation_errors, install_http_conventions, problem_answers
from shared.logging import correlation_id
from shared.metrics import PlatformMetrics


class Customer(BaseModel):
    email: EmailStr
    name: str


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()

    @app.post("/customers")
    async def create(customer: Customer) -> Customer:
        return customer

    @app.get("/customers")
    async def listing() -> list[Customer]:
        return []

    @app.get("/customers/{customer_id}")
    async def get(customer_id: str) -> Customer:
        raise HTTPException(404, f"no customer {customer_id}")

    install_http_conventions(app, PlatformMetrics(CollectorRegistry()), max_request_bytes=2048)
    return TestClient(app)


def test_malformed_json_gets_422_saying_it_is_not_json_and_where(client):
    response = client.post("/customers", content=b'{"email": "ann@example.com", "name": ', headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.json()["message"].startswith("body: not valid JSON (at character 37)")


def test_a_wrong_field_is_named_and_its_value_never_echoed(client):
    response = client.post("/customers", json={"email": "secret-address-at-nowhere", "name": "Ann"})

    assert response.status_code == 422
    assert response.json()["message"].startswith("body.email: value is not a valid email address")
    assert "secret-address" not in response.text


def test_every_error_answer_carries_a_message(client):
    response = client.get("/customers/c-404")

    assert response.status_code == 404
    assert response.json() == {"detail": "no customer c-404", "message": "no customer c-404"}


def test_a_body_over_the_limit_gets_413_whether_or_not_it_declares_its_length(client):
    declared = client.post("/customers", json={"email": "ann@example.com", "name": "x" * 4096})
    streamed = client.post("/customers", content=iter([b"{" + b" " * 3000 + b"}"]), headers={"content-type": "application/json"})

    assert declared.status_code == streamed.status_code == 413
    assert declared.json()["message"] == "request body larger than 2048 bytes"


def test_errors_described_by_a_handler_of_its_own_need_only_a_location_and_a_message():
    assert describe_validation_errors([{"loc": ["to"], "msg": "the To header is malformed"}]) == "to: the To header is malformed"


def test_a_method_the_path_does_not_serve_gets_405_allowing_every_method_it_does(client):
    response = client.delete("/customers")

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"  # Starlette's own names only the first route's
    assert response.json()["message"] == "Method Not Allowed"


def test_error_answers_are_documented_with_the_one_problem_body_and_a_reason():
    answers = problem_answers(*KEYED, reasons={404: "no such customer"})

    assert sorted(answers) == [401, 403, 404, 429]
    assert all(answer["model"] is Problem for answer in answers.values())
    assert answers[404]["description"] == "no such customer"
    assert "Retry-After" in answers[429]["headers"]


def test_requests_are_counted_by_route_template_and_status_and_carry_their_correlation_id():
    """The route's template, never the ids in the path; a request whose handler fails counts as the 500 it gets."""
    registry = CollectorRegistry()
    seen_ids: list[str | None] = []
    app = FastAPI()

    @app.get("/customers/{customer_id}")
    async def get(customer_id: str) -> dict:
        seen_ids.append(correlation_id.get())
        return {"id": customer_id}

    @app.get("/broken")
    async def broken() -> dict:
        raise RuntimeError("a bug")

    install_http_conventions(app, PlatformMetrics(registry), max_request_bytes=2048)
    client = TestClient(app, raise_server_exceptions=False)

    assert client.get("/customers/c-1", headers={"X-Correlation-Id": "order-1042"}).status_code == 200
    assert client.get("/customers/c-2", headers={"X-Correlation-Id": "no spaces allowed"}).status_code == 200
    assert client.get("/broken").status_code == 500
    assert client.get("/nowhere").status_code == 404

    def count(route: str, status: str) -> float | None:
        return registry.get_sample_value(
            "switchboard_http_requests_total", {"method": "GET", "route": route, "status": status}
        )

    assert count("/customers/{customer_id}", "200") == 2
    assert count("/broken", "500") == 1
    assert count("unmatched", "404") == 1
    assert registry.get_sample_value(
        "switchboard_http_request_duration_seconds_count", {"method": "GET", "route": "/customers/{customer_id}"}
    ) == 2
    assert seen_ids == ["order-1042", None], "an id that does not look like one is not taken"
