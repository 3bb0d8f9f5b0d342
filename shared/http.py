"""HTTP conventions shared by every service's API: bearer-key auth, clear errors, size limits, RED metrics."""

import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.access import Forbidden, KeyPolicy, RateLimited
from shared.logging import correlated, safe_correlation_id
from shared.metrics import PlatformMetrics


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `query`, `path` or `header`, then the field.")
    msg: str
    type: str


class Problem(BaseModel):
    """The body of every error answer, whichever part of a service gives it."""

    message: str = Field(description="What is wrong, naming each wrong field.")
    detail: str | list[FieldProblem] | None = Field(
        default=None, description="The same; for input refused by the request's schema, one entry per wrong field."
    )


REASONS = {  # what the conventions below answer, on every route they guard
    400: "the body cannot be read (JSON that is not UTF-8, say)",
    401: "no API key, or one that is not in SWITCHBOARD_API_KEYS",
    403: "the API key lacks the route's scope",
    413: "the request body is larger than MAX_REQUEST_BYTES",
    422: "malformed input; `message` names each wrong field",
    429: "this API key's rate limit is spent; see Retry-After",
}
KEYED = (401, 403, 429)
"""The answers of a route guarded by `api_key_guard` and `scope_guard`."""
BODY = (400, 422)
"""The answers of a route that reads a JSON body."""


def problem_answers(*codes: int, reasons: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error answers `codes` and those `reasons` names, each with the `Problem`
    body, described by `reasons` or else by the conventions' own reason (`REASONS`)."""
    own = dict(reasons or {})
    answers: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem, "description": own.get(code) or REASONS[code]} for code in sorted({*codes, *own})
    }
    if 429 in answers:
        answers[429]["headers"] = {
            "Retry-After": {"description": "seconds until this key may send again", "schema": {"type": "integer"}}
        }
    return answers


_bearer = HTTPBearer(auto_error=False, description="An API key from SWITCHBOARD_API_KEYS.")


def api_key_guard(keys: Sequence[SecretStr]):
    """A FastAPI dependency that admits only requests bearing one of `keys`."""
    secrets = [key.get_secret_value().encode() for key in keys]

    async def require_api_key(request: Request) -> None:
        credentials: HTTPAuthorizationCredentials | None = await _bearer(request)
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        offered = credentials.credentials.encode()
        # Compare against every key, in constant time, so timing reveals nothing about them.
        if not any([hmac.compare_digest(offered, secret) for secret in secrets]):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "invalid API key", headers={"WWW-Authenticate": "Bearer"}
            )

    return require_api_key


def scope_guard(policy: KeyPolicy) -> Callable[[str], object]:
    """`dependencies=[needs("tickets:write")]`: 403 without the scope, 429 (with Retry-After) over the
    key's rate limit. Run after `api_key_guard`, so an unknown key still gets 401 first.

    It reads the key through `Security`, so the OpenAPI document says which routes take a bearer key.
    """

    def needs(scope: str):
        async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
            try:
                policy.check(credentials.credentials if credentials else "", scope)
            except Forbidden as forbidden:
                raise HTTPException(status.HTTP_403_FORBIDDEN, str(forbidden)) from None
            except RateLimited as limited:
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    str(limited),
                    headers={"Retry-After": str(max(1, round(limited.retry_after)))},
                ) from None

        return Depends(check)

    return needs


def describe_validation_errors(errors: Sequence[dict]) -> str:
    """`body.customer.email: value is not a valid email address; ...`; never echoes the input."""
    return "; ".join(_describe(error) for error in errors)


def _describe(error: dict) -> str:
    location = list(error["loc"])
    if error.get("type") == "json_invalid" and len(location) == 2 and location[0] == "body":
        # FastAPI puts the position of a JSON syntax error where a field name would be.
        return f"body: not valid JSON (at character {location[1]}); send a JSON object with Content-Type: application/json"
    return f"{'.'.join(str(part) for part in location)}: {error['msg']}"


async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    problems = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    return JSONResponse(
        {"message": describe_validation_errors(problems), "detail": problems},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Every error answer carries `message`, as validation errors do, so clients read one field."""
    body = {"detail": error.detail}
    if isinstance(error.detail, str):
        body["message"] = error.detail
    headers = error.headers
    if error.status_code == status.HTTP_405_METHOD_NOT_ALLOWED:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return JSONResponse(body, status_code=error.status_code, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path: Starlette's 405 names only the first route's."""
    methods: set[str] = set()
    for route in request.app.routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


DRAIN_AT_LEAST_BYTES = 16 * 1024 * 1024


class BodySizeLimit:
    """Refuses request bodies over `max_bytes` with 413, whether or not they declare a length.

    Before answering it reads the rest of a refused body (up to 16 MiB, or 16 times the limit if
    that is more) and drops it: a client that sends its whole body before it reads the answer, as
    Python's urllib does, would otherwise get a connection reset instead of the 413. A larger body
    is cut off; its connection is closed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = max(DRAIN_AT_LEAST_BYTES, 16 * max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._drain(receive, 0)
            await self._refuse(send)
            return
        received, refused = 0, False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                if message.get("more_body"):
                    await self._drain(receive, received)
                raise _BodyTooLarge
            return message

        async def refusing_send(message: Message) -> None:
            """FastAPI turns an error while reading the body into its own 400: answer 413 instead."""
            nonlocal refused
            if received <= self.max_bytes:
                await send(message)
            elif not refused:
                refused = True
                await self._refuse(send)

        try:
            await self.app(scope, limited_receive, refusing_send)
        except _BodyTooLarge:
            if not refused:
                await self._refuse(send)

    async def _drain(self, receive: Receive, received: int) -> None:
        """Read and drop the rest of the body, up to `drain_bytes` in all."""
        while received <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client hung up
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"message": f"request body larger than {self.max_bytes} bytes"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        )
        await response({"type": "http"}, _no_body, send)


class _BodyTooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class RequestMetrics:
    """Counts and times each request by method, route template (never the ids in the path) and status.

    Plain ASGI, like the other middlewares here: Starlette's `@app.middleware("http")` runs every
    request in a task group of its own, which cost about a tenth of intake's CPU under load.
    """

    def __init__(self, app: ASGIApp, metrics: PlatformMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500  # unless the app answers: an error that escapes it is answered 500 further out

        async def noting_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")  # the router notes the route in the scope
            self.metrics.http_requests.labels(scope["method"], template, str(status_code)).inc()
            self.metrics.http_duration.labels(scope["method"], template).observe(time.perf_counter() - started)


class CorrelatedRequests:
    """Logs and events caused by a request carry its `X-Correlation-Id`, when it looks like one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with correlated(safe_correlation_id(Headers(scope=scope).get("x-correlation-id"))):
            await self.app(scope, receive, send)


def install_http_conventions(app: FastAPI, metrics: PlatformMetrics, max_request_bytes: int) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(CorrelatedRequests)  # the outermost: the others' logs carry the id too
