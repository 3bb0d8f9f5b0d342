"""Intake's REST API: thin handlers that parse, call one use case, and answer.

Some routes authenticate by signature instead of an API key: the inbound email webhook (signed by
the mail provider's relay) and the CSAT and NPS survey links (signed by notify), since none of their
callers holds a key.
"""

import json
import time
from typing import Annotated, Literal, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator, model_validator

from services.intake import survey_pages
from services.intake.domain import (
    CHANNEL_METADATA,
    InvalidSubmission,
    InvalidTransition,
    Message,
    NotRatable,
    Ticket,
    TicketClosedForReplies,
)
from services.intake.email_inbound import InvalidEmail, JsonEmail, parse_json, parse_raw
from services.intake.repository import IntakeTransaction, InvalidCursor
from services.intake.service import (
    ConcurrentEdit,
    IdempotencyConflict,
    Intake,
    ReplayedWebhook,
    SurveyAnswered,
    TicketNotFound,
    VersionMismatch,
)
from services.intake.settings import IntakeSettings
from shared.events import AuthorType, Customer, CustomerTier, Priority, TicketStatus, TicketSubmit
from shared.http import BODY, KEYED, Problem, describe_validation_errors, problem_answers
from shared.signing import BadSignature, verify_csat, verify_nps, verify_webhook


Id = Annotated[str, Path(max_length=100, description="A ticket's or customer's id.")]


def _given(name: str, kind: str = "string") -> dict:
    """A schema saying that the field `name` is there and not null."""
    return {"required": [name], "properties": {name: {"type": kind}}}


class SubmittedCustomer(Customer):
    """Upserted by `id`, else by `email`: one of them is needed."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [_given("id"), _given("email")]})


def _metadata_by_channel(schema: dict) -> None:
    """Each channel's own `metadata` (`CHANNEL_METADATA`), as one `oneOf` branch per `channel`."""
    schema["oneOf"] = []
    for channel, kind in CHANNEL_METADATA.items():
        metadata = kind.model_json_schema()
        branch = {"properties": {"channel": {"const": channel}, "metadata": metadata}}
        schema["oneOf"].append({**branch, "required": ["metadata"]} if metadata.get("required") else branch)


class TicketSubmission(TicketSubmit):
    """The `support.ticket.submit.v1` payload, the same as the Kafka command's."""

    # The schema also says what intake checks beyond the field types (a customer's id or email, each
    # channel's own metadata), so that clients, and fuzzers, can send what intake takes.
    model_config = ConfigDict(json_schema_extra=_metadata_by_channel)

    customer: SubmittedCustomer

    @field_validator("metadata")
    @classmethod
    def _unicode(cls, metadata: dict) -> dict:
        """Python's JSON decoder lets lone surrogates (`"\\ud800"`) through, which no UTF-8 store or answer can
        hold; typed text fields refuse them, free-form metadata values are checked here."""
        for name, value in metadata.items():
            if isinstance(value, str) and any("\ud800" <= char <= "\udfff" for char in value):
                raise ValueError(f"{name!r} is not valid Unicode (it has a lone surrogate)")  # repr escapes one
        return metadata


_CUSTOMERS_NOTE = {  # what `_customers_write_publicly` refuses, said in the schema
    "properties": {"author_type": {"const": "customer"}, "public": {"const": False}},
    "required": ["public"],
}


class NewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"not": _CUSTOMERS_NOTE})

    author_type: AuthorType
    author_id: str | None = Field(default=None, min_length=1, max_length=100)
    body: str = Field(min_length=1, max_length=100_000)
    public: bool = Field(default=True, strict=True, description="false: an internal note, never shown to the customer.")

    @model_validator(mode="after")
    def _customers_write_publicly(self) -> "NewMessage":
        if self.author_type is AuthorType.CUSTOMER and not self.public:
            raise ValueError("internal notes (public: false) are for agents only")
        return self


class TicketEdit(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"anyOf": [_given("status"), _given("priority"), _given("tags", "array")]}
    )

    status: TicketStatus | None = None
    priority: Priority | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=50)]] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _something(self) -> "TicketEdit":
        if self.status is None and self.priority is None and self.tags is None:
            raise ValueError("send at least one of status, priority, tags")
        return self


class MessageAnswer(BaseModel):
    ticket: Ticket
    message: Message | None = Field(description="None when the reply started a follow-up ticket instead.")
    follow_up_of: str | None = None


class TicketPage(BaseModel):
    tickets: list[Ticket]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class TicketSummary(BaseModel):
    id: str
    subject: str
    status: TicketStatus
    priority: Priority
    created_at: str


class CustomerView(BaseModel):
    id: str
    email: str | None = None
    name: str | None = None
    tier: CustomerTier | None = None
    language: str | None = None
    timezone: str | None = None
    last_agent_id: str | None = None
    tickets: list[TicketSummary]


class EmailAnswer(BaseModel):
    ticket_id: str
    message_id: str | None
    action: Literal["created", "threaded", "follow_up"]


class CsatAnswer(BaseModel):
    ticket_id: str
    score: int
    message: str


class NpsAnswer(BaseModel):
    survey_id: str
    customer_id: str
    ticket_id: str
    score: int
    message: str


class CsatBody(BaseModel):
    """A CSAT rating, posted as JSON or by the survey page's form."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=survey_pages.COMMENT_MAX_CHARS)


class NpsBody(BaseModel):
    """An answer to the NPS survey, posted as JSON or by the survey page's form."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=0, le=10)
    comment: str | None = Field(default=None, max_length=survey_pages.COMMENT_MAX_CHARS)


SurveyBody = TypeVar("SurveyBody", CsatBody, NpsBody)


def _form_schema(survey: survey_pages.Survey) -> dict:
    """What the survey's page posts; an empty comment is none."""
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": survey.scores[0], "maximum": survey.highest},
            "comment": {"type": "string", "maxLength": survey_pages.COMMENT_MAX_CHARS},
        },
        "required": ["score"],
        "additionalProperties": False,
    }


async def _answer_from_json(request: Request, body: type[SurveyBody]) -> SurveyBody:
    """The answer a JSON client posted, refused as FastAPI refuses a JSON body it reads itself."""
    try:
        sent = await request.json()
    except json.JSONDecodeError as invalid:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", invalid.pos), "msg": "JSON decode error"}]
        ) from None
    except ValueError:  # not UTF-8, say
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the body cannot be read as JSON") from None
    return _answer(sent, body)


async def _answer_from_form(request: Request, body: type[SurveyBody]) -> SurveyBody:
    """The answer a survey page's form posted. Read here, since FastAPI reads forms only with
    python-multipart, and one route takes either body."""
    try:
        fields = parse_qsl((await request.body()).decode(), keep_blank_values=True, strict_parsing=True)
    except ValueError:  # not UTF-8, or not `name=value&...`
        raise RequestValidationError(
            [{"type": "form_invalid", "loc": ("body",), "msg": "not a form-encoded body (name=value&...)"}]
        ) from None
    sent: dict[str, str] = {}
    for name, value in fields:
        if name in sent:
            raise RequestValidationError([{"type": "form_repeated", "loc": ("body", name), "msg": "given twice"}])
        sent[name] = value.replace("\r\n", "\n")  # a browser sends a textarea's line breaks as CRLF
    if not sent.get("comment"):
        sent.pop("comment", None)
    return _answer(sent, body)


def _answer(sent: object, body: type[SurveyBody]) -> SurveyBody:
    """`sent` as an answer, or the 422 FastAPI gives a body it validated itself."""
    try:
        return body.model_validate(sent)
    except ValidationError as invalid:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in invalid.errors(include_url=False)]
        ) from None


class StatusConflict(Problem):
    allowed: list[TicketStatus] | None = Field(default=None, description="The statuses the ticket may move to now.")


_REASONS = {
    401: "the webhook signature is missing, wrong or stale",
    403: "the survey link's signature is wrong or expired",
    404: "no such ticket or customer",
    409: "conflict: a reused key, a replayed webhook, a closed ticket, a ticket not solved yet, a survey already answered",
    412: "If-Match is not the ticket's current version",
    503: "the signing key is not configured",
}


def _doc(*codes: int) -> dict:
    """The error answers `codes`, as this API gives them."""
    return problem_answers(*codes, reasons={code: reason for code, reason in _REASONS.items() if code in codes})


def _header(name: str, description: str, kind: str = "string") -> dict:
    return {name: {"description": description, "schema": {"type": kind}}}


_ETAG = _header("ETag", 'the ticket\'s version, `"<version>"`; send it as If-Match to change the ticket safely')
_REPLAYED = _header("Idempotent-Replayed", "`true` when this is the answer to an earlier, identical request")


def _problem(code: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"detail": message, "message": message, **extra}, status_code=code)


_FORM = "application/x-www-form-urlencoded"


def _content_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def _accepts_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _etag(ticket: Ticket, response: Response) -> Ticket:
    response.headers["ETag"] = f'"{ticket.version}"'
    return ticket


IF_MATCH_PATTERN = r'^(W/)?"?[0-9]{1,18}"?$'
_IF_MATCH_SCHEMA = {"type": "string", "pattern": IF_MATCH_PATTERN}  # absent when not sent, never null


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    return int(if_match.removeprefix("W/").strip('"'))  # its pattern is checked on the way in


def build_routes(
    intake: Intake, reads: IntakeTransaction, settings: IntakeSettings, require_api_key, needs
) -> APIRouter:
    """`reads`: intake's repositories outside any transaction (`UnitOfWork.reads`), for the GETs."""
    read, write = [needs("tickets:read")], [needs("tickets:write")]
    routes = APIRouter()
    keyed = APIRouter(
        prefix="/v1",
        tags=["tickets"],
        dependencies=[Depends(require_api_key)],
        responses=problem_answers(*KEYED, 422),  # every route takes a path or query parameter
    )
    signed = APIRouter(prefix="/v1", tags=["signed callbacks"], responses=_doc(422, 503))

    @keyed.post(
        "/tickets",
        status_code=status.HTTP_201_CREATED,
        response_model=Ticket,
        responses={
            **_doc(*BODY, 409),
            201: {"headers": {**_ETAG, **_REPLAYED, **_header("Location", "the ticket's URL")}},
        },
        dependencies=write,
    )
    async def submit_ticket(
        submission: TicketSubmission,
        response: Response,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
    ) -> Ticket:
        """Open a ticket from any channel; it is triaged (see `triage_reasons`) unless the caller decided."""
        try:
            submitted = await intake.submit(submission, idempotency_key=idempotency_key)
        except IdempotencyConflict:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "Idempotency-Key was already used for a different submission"
            ) from None
        except InvalidSubmission as invalid:
            return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, str(invalid))
        response.headers["Location"] = f"/v1/tickets/{submitted.ticket.id}"
        if submitted.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return _etag(submitted.ticket, response)

    @keyed.get("/tickets", response_model=TicketPage, dependencies=read)
    async def list_tickets(
        status_: Annotated[TicketStatus | None, Query(alias="status")] = None,
        assignee_id: Annotated[str | None, Query(max_length=100)] = None,
        customer_id: Annotated[str | None, Query(max_length=100)] = None,
        priority: Priority | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=400, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    ) -> TicketPage | JSONResponse:
        """Newest first, filtered; follow `next_cursor` for more."""
        filters = {"status": status_, "assignee_id": assignee_id, "customer.id": customer_id, "priority": priority}
        try:
            page, next_cursor = await reads.tickets.page(filters, limit=limit, after=cursor)
        except InvalidCursor as invalid:
            return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, f"query.cursor: {invalid}")
        return TicketPage(tickets=page, next_cursor=next_cursor)

    @keyed.get(
        "/tickets/{ticket_id}", response_model=Ticket, responses={**_doc(404), 200: {"headers": _ETAG}}, dependencies=read
    )
    async def get_ticket(ticket_id: Id, response: Response) -> Ticket:
        ticket = await reads.tickets.get(ticket_id)
        if ticket is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
        return _etag(ticket, response)

    @keyed.patch(
        "/tickets/{ticket_id}",
        response_model=Ticket,
        responses={
            **_doc(*BODY, 404, 412),
            409: {"model": StatusConflict, "description": "the status cannot change so; `allowed` says to what it can"},
            200: {"headers": _ETAG},
        },
        dependencies=write,
    )
    async def edit_ticket(
        ticket_id: Id,
        changes: TicketEdit,
        response: Response,
        if_match: Annotated[str | None, Header(pattern=IF_MATCH_PATTERN), WithJsonSchema(_IF_MATCH_SCHEMA)] = None,
    ) -> Ticket | JSONResponse:
        """Change status, priority or tags. With `If-Match: "<version>"`, a concurrent edit gets 412."""
        try:
            ticket = await intake.edit(
                ticket_id,
                status=changes.status,
                priority=changes.priority,
                tags=changes.tags,
                expected_version=_version(if_match),
            )
        except TicketNotFound as missing:
            return _problem(status.HTTP_404_NOT_FOUND, str(missing))
        except InvalidTransition as invalid:
            return _problem(status.HTTP_409_CONFLICT, str(invalid), allowed=invalid.allowed)
        except (VersionMismatch, ConcurrentEdit) as stale:
            return _problem(status.HTTP_412_PRECONDITION_FAILED, str(stale) if isinstance(stale, VersionMismatch)
                            else "the ticket changed meanwhile; reload it and try again")
        return _etag(ticket, response)

    @keyed.post(
        "/tickets/{ticket_id}/messages",
        status_code=status.HTTP_201_CREATED,
        response_model=MessageAnswer,
        responses=_doc(*BODY, 404, 409),
        dependencies=write,
    )
    async def add_message(ticket_id: Id, new: NewMessage) -> MessageAnswer | JSONResponse:
        """A reply or an internal note. A customer's reply reopens a recently solved ticket, else starts a follow-up."""
        try:
            added = await intake.add_message(
                ticket_id, author_type=new.author_type, author_id=new.author_id, body=new.body, public=new.public
            )
        except TicketNotFound as missing:
            return _problem(status.HTTP_404_NOT_FOUND, str(missing))
        except TicketClosedForReplies as closed:
            return _problem(status.HTTP_409_CONFLICT, str(closed))
        except ConcurrentEdit:
            return _problem(status.HTTP_409_CONFLICT, "the ticket is changing too often; try again")
        return MessageAnswer(ticket=added.ticket, message=added.message, follow_up_of=added.follow_up_of)

    @keyed.get("/tickets/{ticket_id}/messages", response_model=list[Message], responses=_doc(404), dependencies=read)
    async def list_messages(ticket_id: Id) -> list[Message]:
        if await reads.tickets.get(ticket_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no ticket {ticket_id}")
        return await reads.messages.of_ticket(ticket_id)

    @keyed.get(
        "/customers/{customer_id}", response_model=CustomerView, tags=["customers"], responses=_doc(404), dependencies=read
    )
    async def get_customer(customer_id: Id) -> CustomerView:
        profile = await reads.customers.get(customer_id)
        if profile is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no customer {customer_id}")
        theirs, _ = await reads.tickets.page({"customer.id": customer_id}, limit=200, after=None)
        return CustomerView(
            **{**profile, "id": profile["_id"]},
            tickets=[
                TicketSummary(id=t.id, subject=t.subject, status=t.status, priority=t.priority,
                              created_at=t.created_at.isoformat())
                for t in theirs
            ],
        )

    @signed.post(
        "/inbound/email",
        response_model=EmailAnswer,
        status_code=status.HTTP_201_CREATED,
        responses={
            **_doc(401, 409),
            200: {"description": "the same Message-ID again: the first answer", "headers": _REPLAYED},
        },
        openapi_extra={
            "requestBody": {
                "content": {
                    "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": JsonEmail.model_json_schema(by_alias=True)},
                }
            }
        },
    )
    async def inbound_email(
        request: Request,
        response: Response,
        x_switchboard_timestamp: Annotated[str | None, Header(max_length=20)] = None,
        x_switchboard_signature: Annotated[str | None, Header(max_length=200)] = None,
    ) -> EmailAnswer | JSONResponse:
        """An email (raw RFC 5322, or JSON), signed with INBOUND_EMAIL_SIGNING_KEY: a new ticket or a threaded reply."""
        if settings.inbound_email_signing_key is None:
            return _problem(status.HTTP_503_SERVICE_UNAVAILABLE, "inbound email is not configured")
        raw = await request.body()
        try:
            digest = verify_webhook(
                settings.inbound_email_signing_key.get_secret_value(),
                x_switchboard_timestamp,
                x_switchboard_signature,
                raw,
                now=time.time(),
                tolerance=settings.inbound_email_tolerance_seconds,
            )
        except BadSignature as bad:
            return _problem(status.HTTP_401_UNAUTHORIZED, str(bad))
        try:
            if (request.headers.get("content-type") or "").startswith("application/json"):
                email = parse_json(JsonEmail.model_validate_json(raw))
            else:
                email = parse_raw(raw)
        except ValidationError as invalid:
            problems = [{"loc": ["body", *e["loc"]], "msg": e["msg"]} for e in invalid.errors(include_url=False)]
            return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, describe_validation_errors(problems))
        except InvalidEmail as invalid:
            return _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, str(invalid))
        expires_ms = (int(x_switchboard_timestamp) + settings.inbound_email_tolerance_seconds + 60) * 1000
        try:
            received = await intake.receive_email(email, signature=digest, signature_expires_ms=expires_ms)
        except ReplayedWebhook as replayed:
            return _problem(status.HTTP_409_CONFLICT, str(replayed))
        if received.replayed:
            response.status_code = status.HTTP_200_OK
            response.headers["Idempotent-Replayed"] = "true"
        return EmailAnswer(ticket_id=received.ticket_id, message_id=received.message_id, action=received.action)

    SurveyId = Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]
    SurveyTicket = Annotated[str, Query(min_length=1, max_length=100)]
    Expires = Annotated[int, Query(ge=0)]
    Signature = Annotated[str, Query(min_length=64, max_length=64, pattern=r"^[0-9a-fA-F]{64}$")]
    _HTML = {"text/html": {"schema": {"type": "string"}}}
    _ANSWERED = {  # a page to a browser (the link followed, or the form posted), else the Problem
        409: {**_doc(409)[409], "content": _HTML, "description": "the survey was answered already"}
    }
    _REFUSED = {code: {**answer, "content": _HTML} for code, answer in _doc(403, 503).items()}  # the same

    def _answer_body(survey: survey_pages.Survey, body: type[BaseModel]) -> dict:
        """The POST's body, documented: JSON, or the form the survey's page posts."""
        content = {"application/json": {"schema": body.model_json_schema()}, _FORM: {"schema": _form_schema(survey)}}
        return {"requestBody": {"required": True, "content": content}}

    @signed.get(
        "/tickets/{ticket_id}/csat",
        response_model=None,
        tags=["csat"],
        responses={**_REFUSED, 200: {"content": _HTML, "description": "the survey's form"}},
    )
    async def csat_from_link(
        ticket_id: Id,
        request: Request,
        score: Annotated[int, Query(ge=1, le=5)],
        expires: Expires,
        signature: Signature,
    ):
        """The survey link notify mails, one per score. It rates nothing: it shows a form, `score`
        preselected, that POSTs the rating, so a mail scanner fetching every link cannot rate for the customer."""
        if (refused := _refused_csat_link(ticket_id, expires, signature, as_page=_accepts_html(request))) is not None:
            return refused
        page = survey_pages.question(
            survey_pages.CSAT, signed={"expires": expires, "signature": signature}, score=score,
            about=f"Your request {ticket_id} was solved.",
        )
        return HTMLResponse(page, headers=survey_pages.HEADERS)

    _NOT_TAKEN = {code: {**answer, "content": _HTML} for code, answer in _doc(404, 409).items()}  # a page to a form

    @signed.post(
        "/tickets/{ticket_id}/csat",
        response_model=CsatAnswer,
        tags=["csat"],
        responses={
            **_doc(*BODY),
            **_REFUSED,
            **_NOT_TAKEN,
            200: {"content": _HTML, "description": "the rating: JSON, or a thank-you page to a posted form"},
        },
        openapi_extra=_answer_body(survey_pages.CSAT, CsatBody),
    )
    async def csat_answer(ticket_id: Id, request: Request, expires: Expires, signature: Signature):
        """The rating, authorised by the link's signature: JSON `{"score", "comment"}`, or the survey page's
        form (form-encoded), which gets a page back. One rating per solved ticket: a later one replaces it."""
        from_form = _content_type(request) == _FORM
        rating = await _answer_from_form(request, CsatBody) if from_form else await _answer_from_json(request, CsatBody)
        if (refused := _refused_csat_link(ticket_id, expires, signature, as_page=from_form)) is not None:
            return refused
        try:
            await intake.rate(ticket_id, rating.score, rating.comment)
        except TicketNotFound as missing:
            return _not_taken(status.HTTP_404_NOT_FOUND, str(missing), as_page=from_form)
        except NotRatable as early:
            return _not_taken(status.HTTP_409_CONFLICT, str(early), as_page=from_form)
        if from_form:
            return HTMLResponse(survey_pages.thanks(survey_pages.CSAT, rating.score), headers=survey_pages.HEADERS)
        return CsatAnswer(ticket_id=ticket_id, score=rating.score, message="Thank you for your feedback.")

    def _refused_csat_link(ticket_id: str, expires: int, signature: str, *, as_page: bool) -> Response | None:
        if settings.csat_signing_key is None:
            return _link_refused(status.HTTP_503_SERVICE_UNAVAILABLE, "CSAT is not configured", as_page=as_page)
        try:
            verify_csat(settings.csat_signing_key.get_secret_value(), ticket_id, expires, signature, now=time.time())
        except BadSignature as bad:
            return _link_refused(status.HTTP_403_FORBIDDEN, str(bad), as_page=as_page)
        return None

    def _link_refused(code: int, reason: str, *, as_page: bool) -> Response:
        """A browser (the link opened, or the survey's form posted) gets a page that says why, not JSON."""
        if as_page:
            return HTMLResponse(survey_pages.link_refused(reason), code, headers=survey_pages.HEADERS)
        return _problem(code, reason)

    def _not_taken(code: int, reason: str, *, as_page: bool) -> Response:
        if as_page:
            return HTMLResponse(survey_pages.not_taken(reason), code, headers=survey_pages.HEADERS)
        return _problem(code, reason)

    @signed.get(
        "/customers/{customer_id}/nps",
        response_model=None,
        tags=["nps"],
        responses={**_REFUSED, **_ANSWERED, 200: {"content": _HTML, "description": "the survey's form"}},
    )
    async def nps_from_link(
        customer_id: Id,
        request: Request,
        survey: SurveyId,
        ticket_id: SurveyTicket,
        score: Annotated[int, Query(ge=0, le=10)],
        expires: Expires,
        signature: Signature,
    ):
        """The relationship survey's link notify mails ("how likely are you to recommend us", 0..10). It
        answers nothing: it shows a form, `score` preselected, that POSTs the answer, so a mail scanner
        fetching every link cannot answer for the customer."""
        as_page = _accepts_html(request)
        if (refused := _refused_nps_link(customer_id, survey, ticket_id, expires, signature, as_page=as_page)) is not None:
            return refused
        if await reads.nps_answers.answered(survey):
            return _answered_already(survey, as_page=as_page)
        page = survey_pages.question(
            survey_pages.NPS,
            signed={"survey": survey, "ticket_id": ticket_id, "expires": expires, "signature": signature},
            score=score,
        )
        return HTMLResponse(page, headers=survey_pages.HEADERS)

    @signed.post(
        "/customers/{customer_id}/nps",
        response_model=NpsAnswer,
        tags=["nps"],
        responses={
            **_doc(*BODY),
            **_REFUSED,
            **_ANSWERED,
            200: {"content": _HTML, "description": "the answer: JSON, or a thank-you page to a posted form"},
        },
        openapi_extra=_answer_body(survey_pages.NPS, NpsBody),
    )
    async def nps_answer(
        customer_id: Id,
        request: Request,
        survey: SurveyId,
        ticket_id: SurveyTicket,
        expires: Expires,
        signature: Signature,
    ):
        """The answer, authorised by the link's signature: JSON `{"score", "comment"}`, or the survey page's
        form (form-encoded), which gets a page back."""
        from_form = _content_type(request) == _FORM
        answer = await _answer_from_form(request, NpsBody) if from_form else await _answer_from_json(request, NpsBody)
        if (refused := _refused_nps_link(customer_id, survey, ticket_id, expires, signature, as_page=from_form)) is not None:
            return refused
        try:
            await intake.answer_nps(
                survey_id=survey, customer_id=customer_id, ticket_id=ticket_id, score=answer.score,
                comment=answer.comment,
            )
        except SurveyAnswered:
            return _answered_already(survey, as_page=from_form)
        if from_form:
            return HTMLResponse(survey_pages.thanks(survey_pages.NPS, answer.score), headers=survey_pages.HEADERS)
        return NpsAnswer(
            survey_id=survey, customer_id=customer_id, ticket_id=ticket_id, score=answer.score,
            message="Thank you for your answer.",
        )

    def _refused_nps_link(
        customer_id: str, survey: str, ticket_id: str, expires: int, signature: str, *, as_page: bool
    ) -> Response | None:
        if settings.csat_signing_key is None:
            return _link_refused(status.HTTP_503_SERVICE_UNAVAILABLE, "surveys are not configured", as_page=as_page)
        try:
            verify_nps(
                settings.csat_signing_key.get_secret_value(), survey, customer_id, ticket_id, expires, signature,
                now=time.time(),
            )
        except BadSignature as bad:
            return _link_refused(status.HTTP_403_FORBIDDEN, str(bad), as_page=as_page)
        return None

    def _answered_already(survey: str, *, as_page: bool) -> Response:
        if as_page:
            return HTMLResponse(survey_pages.answered_already(), status.HTTP_409_CONFLICT, headers=survey_pages.HEADERS)
        return _problem(status.HTTP_409_CONFLICT, str(SurveyAnswered(survey)))

    routes.include_router(keyed)
    routes.include_router(signed)
    return routes
