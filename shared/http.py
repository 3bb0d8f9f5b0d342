"""HTTP conventions shared by every service's API: bearer-key auth, clear errors, size limits, RED metrics."""

import hmac
import time
from collections.abc import Callable, Sequence
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.access import Forbidden, KeyPolicy, RateLimited
from shared.metrics import PlatformMetrics

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


async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    """Every error answer carries `message`, as validation errors do, so clients read one field."""
    body = {"detail": error.detail}
    if isinstance(error.detail, str):
        body["message"] = error.detail
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


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


def install_http_conventions(app: FastAPI, metrics: PlatformMetrics, max_request_bytes: int) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")  # the template, never the ids in the path
        metrics.http_requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.http_duration.labels(request.method, template).observe(time.perf_counter() - started)
        return response
