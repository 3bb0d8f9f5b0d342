"""Insights' REST API: the reports (behind an API key with `tickets:read`) and the live board (`GET /`).

Every report takes the same time range (`from`, `to`: instants of ticket creation, [from, to); a time
without an offset is read in `tz`) and the same filters; they are checked here, and a bad one is a
422 saying what is wrong.
"""

import csv
import io
import json
from datetime import datetime
from importlib import resources
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, StreamingResponse

from services.insights import domain
from services.insights.service import COLUMNS, Insights
from services.insights.service import Query as ReportQuery
from shared.clock import now_ms, to_ms
from shared.http import KEYED, problem_answers

Dimension = Annotated[str | None, Query(min_length=1, max_length=200)]
CURSOR_PATTERN = r"^\d{13}\|.{1,200}$"
LATEST_MS = 221_845_392_000_000  # 9000-01-01: any zone can still show it


def build_routes(insights: Insights, require_api_key, needs, *, max_range_days: int, default_range_days: int) -> APIRouter:
    routes = APIRouter()
    reports = APIRouter(
        prefix="/v1/reports",
        tags=["reports"],
        dependencies=[Depends(require_api_key), needs("tickets:read")],
        responses=problem_answers(*KEYED, 422),
    )

    def report_query(
        from_: Annotated[
            datetime | None, Query(alias="from", description="Created at or after; default: `to` minus 30 days.")
        ] = None,
        to: Annotated[datetime | None, Query(description="Created before; default: now.")] = None,
        tz: Annotated[str, Query(max_length=64, description="IANA zone for days, weeks, hours and times shown.")] = "UTC",
        channel: Dimension = None,
        priority: Dimension = None,
        team: Dimension = None,
        agent: Dimension = None,
        policy: Dimension = None,
        tier: Dimension = None,
    ) -> ReportQuery:
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "tz: unknown time zone; use an IANA name such as Europe/Berlin"
            ) from None
        try:
            end = to_ms(_in_zone(to, zone)) if to else now_ms()
            start = to_ms(_in_zone(from_, zone)) if from_ else end - default_range_days * domain.DAY_MS
        except (OverflowError, ValueError):
            start = end = -1
        if not (0 <= start and end <= LATEST_MS):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "from and to must lie between 1970 and 9000")
        if start >= end:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "from must be before to")
        if end - start > max_range_days * domain.DAY_MS:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"the range from..to is {(end - start) / domain.DAY_MS:.1f} days; at most {max_range_days} days are allowed",
            )
        named = {"channel": channel, "priority": priority, "team": team, "agent": agent, "policy": policy, "tier": tier}
        return ReportQuery(start, end, zone, {name: value for name, value in named.items() if value is not None})

    ReportOf = Annotated[ReportQuery, Depends(report_query)]

    @reports.get("/summary")
    async def summary(
        query: ReportOf,
        group_by: Annotated[
            Literal[*domain.GROUPS] | None, Query(description="Omitted: one group of everything.")  # type: ignore[valid-type]
        ] = None,
        split_by_wait_time: Annotated[
            str | None, Query(max_length=100, description="e.g. `60,300,900` (seconds to first assignment).")
        ] = None,
    ) -> dict:
        """Figures per group: created and solved, reply and resolution times, SLA attainment, reopens, CSAT and NPS."""
        try:
            thresholds = domain.split_thresholds(split_by_wait_time)
        except ValueError as wrong:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(wrong)) from None
        groups = await insights.summary(query, group_by, thresholds)
        return {**_echo(query), "group_by": group_by, "groups": groups}

    @reports.get("/tickets", responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
    async def tickets(
        request: Request,
        query: ReportOf,
        metric: Literal["first_reply", "resolution"] | None = None,
        outcome: Literal["achieved", "breached", "running"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[
            str | None, Query(pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page.")
        ] = None,
    ):
        """The facts behind a figure, oldest first; with `Accept: text/csv` every row, streamed, without pages."""
        if (metric is None) != (outcome is None):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "metric and outcome go together: give both or neither"
            )
        chosen = (metric, outcome) if metric else None
        if "text/csv" in request.headers.get("accept", ""):
            return StreamingResponse(
                _csv(insights.export(query, chosen)),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="tickets.csv"'},
            )
        rows, next_cursor = await insights.tickets(query, chosen, cursor, limit)
        return {**_echo(query), "tickets": rows, "next_cursor": next_cursor}

    @reports.get("/at-risk")
    async def at_risk(query: ReportOf, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict:
        """Running clocks that have had a warning and are not fulfilled, soonest due first (`from`/`to` do not apply)."""
        return {"tz": query.zone.key, "tickets": await insights.at_risk(query.filters, query.zone, limit)}

    @routes.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def board() -> HTMLResponse:
        return HTMLResponse(BOARD_HTML, headers={"Cache-Control": "no-store"})

    routes.include_router(reports)
    return routes


BOARD_HTML = resources.files("services.insights").joinpath("board.html").read_text()


def _in_zone(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.replace(tzinfo=zone) if instant.tzinfo is None else instant


def _echo(query: ReportQuery) -> dict:
    return {
        "from": domain.local_iso(query.from_ms, query.zone),
        "to": domain.local_iso(query.to_ms, query.zone),
        "tz": query.zone.key,
        "filters": query.filters,
    }


async def _csv(rows):
    """One line at a time: the export never holds more than the database cursor's batch."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    async for row in rows:
        writer.writerow(_cell(row[column]) for column in COLUMNS)
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _cell(value) -> object:
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else value

