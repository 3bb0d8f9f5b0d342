"""Planning's HTTP API (thin): history, forecast, staffing, simulations, and the staffing page."""

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.responses import HTMLResponse

from services.routing.planning.history import INTERVALS_MINUTES
from services.routing.planning.page import PAGE
from services.routing.planning.requests import SimulationRequest
from services.routing.planning.service import (
    KEPT_DAYS,
    InvalidPlanningInput,
    PlanningViews,
    SimulationJobs,
    TooManySimulations,
)
from shared.events import Channel
from shared.http import BODY, KEYED, problem_answers

Interval = Annotated[
    int | None, Query(ge=15, le=60, description="15, 30 or 60 minutes; default PLANNING_INTERVAL_MINUTES.")
]
Skills = Annotated[
    str | None, Query(max_length=500, pattern=r"^[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*$",
                      description="A skill set: comma-separated skills (the tickets that need exactly these).")
]
Weeks = Annotated[int | None, Query(ge=1, le=12, description="Same weekdays looked back at; default PLANNING_FORECAST_WEEKS.")]
DAY = r"^\d{4}-\d{2}-\d{2}$"
JobId = Annotated[str, Path(pattern=r"^[a-f0-9]{32}$")]
NO_JOB = {404: f"no such simulation (each is kept for {KEPT_DAYS} days)"}


def _invalid(error: InvalidPlanningInput) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error))


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidPlanningInput(f"date: {text} is not a day (YYYY-MM-DD)") from None


def _minutes(interval: int | None) -> int | None:
    if interval is not None and interval not in INTERVALS_MINUTES:
        raise InvalidPlanningInput("interval: 15, 30 or 60 (minutes)")
    return interval


def _numbers(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise InvalidPlanningInput("arrivals: comma-separated numbers, one per interval") from None
    if any(value < 0 or value != value or value == float("inf") for value in values):
        raise InvalidPlanningInput("arrivals: numbers of tickets cannot be negative")
    return values


def build_planning_routes(views: PlanningViews, jobs: SimulationJobs, require_api_key, needs) -> APIRouter:
    routes = APIRouter(tags=["planning"])
    api = APIRouter(
        prefix="/v1/planning", dependencies=[Depends(require_api_key)], responses=problem_answers(*KEYED, 422)
    )
    read, write = [needs("tickets:read")], [needs("agents")]

    @api.get("/history", dependencies=read)
    async def history(
        start: Annotated[str, Query(alias="from", description="ISO 8601 instant with its offset.")],
        end: Annotated[str, Query(alias="to", description="ISO 8601 instant with its offset.")],
        interval: Interval = None,
    ) -> dict:
        """Recorded per interval: arrivals, waits and handle times per channel and skill set; agents available and
        their occupancy (ticket-seconds held per second available)."""
        try:
            return await views.history(_instant(start, "from"), _instant(end, "to"), _minutes(interval))
        except InvalidPlanningInput as error:
            raise _invalid(error) from None

    @api.get("/forecast", dependencies=read)
    async def forecast(
        day: Annotated[str, Query(alias="date", pattern=DAY, description="The day (UTC) to forecast.")],
        interval: Interval = None,
        channel: Channel | None = None,
        skills: Skills = None,
        weeks: Weeks = None,
        trend: bool = False,
    ) -> dict:
        """Expected arrivals per interval: the seasonal mean of the same weekday, with the backtest's MAPE."""
        try:
            return await views.forecast(
                _day(day), _minutes(interval), channel.value if channel else None, skills, weeks=weeks, trend=trend
            )
        except InvalidPlanningInput as error:
            raise _invalid(error) from None

    @api.get("/staffing", dependencies=read)
    async def staffing(
        day: Annotated[
            str | None, Query(alias="date", pattern=DAY, description="Forecast this day (UTC); or give arrivals.")
        ] = None,
        arrivals: Annotated[str | None, Query(max_length=5000, description="Tickets per interval, comma-separated.")] = None,
        aht_seconds: Annotated[float | None, Query(gt=0, le=86400)] = None,
        target_seconds: Annotated[float, Query(gt=0, le=86400)] = 20,
        service_level: Annotated[float, Query(gt=0, lt=1)] = 0.8,
        max_occupancy: Annotated[float, Query(gt=0, le=1)] = 1.0,
        shrinkage: Annotated[float, Query(ge=0, lt=1)] = 0.0,
        concurrency: Annotated[int, Query(ge=1, le=20, description="Tickets an agent holds at once (chat).")] = 1,
        interval: Interval = None,
        channel: Channel | None = None,
        skills: Skills = None,
        weeks: Weeks = None,
        trend: bool = False,
        arrivals_from: Annotated[Literal["forecast", "recorded"], Query(
            description="With a date: its forecast, or the arrivals recorded that day (what it needed).")] = "forecast",
    ) -> dict:
        """Agents needed per interval for `service_level` of tickets within `target_seconds` (Erlang C)."""
        try:
            return await views.staffing(
                day=_day(day) if day is not None else None, arrivals=_numbers(arrivals) if arrivals is not None else None, aht_seconds=aht_seconds,
                interval_minutes=_minutes(interval), target_seconds=target_seconds, service_level=service_level,
                max_occupancy=max_occupancy, shrinkage=shrinkage, concurrency=concurrency,
                channel=channel.value if channel else None, skills=skills, weeks=weeks, trend=trend,
                recorded=arrivals_from == "recorded",
            )
        except InvalidPlanningInput as error:
            raise _invalid(error) from None

    @api.post("/simulations", status_code=status.HTTP_202_ACCEPTED, dependencies=write,
              responses=problem_answers(*BODY, 429))
    async def simulate(request: SimulationRequest) -> dict:
        """Start a what-if simulation through routing's own rules; follow it at `GET /v1/planning/simulations/{id}`."""
        try:
            job = await jobs.submit(request)
        except InvalidPlanningInput as error:
            raise _invalid(error) from None
        except TooManySimulations as busy:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(busy), headers={"Retry-After": "5"}) from None
        return job.view()

    @api.get("/simulations/{job_id}", dependencies=read, responses=problem_answers(reasons=NO_JOB))
    async def simulation(job_id: JobId) -> dict:
        """Progress, then the result: per interval waits (p50, p90), share within target, queue, occupancy, breaches."""
        job = await jobs.get(job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no simulation {job_id}")
        return job.view()

    @api.delete("/simulations/{job_id}", dependencies=write, responses=problem_answers(reasons=NO_JOB))
    async def cancel(job_id: JobId) -> dict:
        """Cancel a running simulation (it stops within a few thousand events); a finished one stays as it is."""
        job = await jobs.cancel(job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no simulation {job_id}")
        return job.view()

    @routes.get("/planning", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """The staffing page: no data in it; it asks for the key and sends it as a header."""
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store", "Content-Security-Policy": (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'")})

    routes.include_router(api)
    return routes


def _instant(text: str, name: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidPlanningInput(f"{name}: not an ISO 8601 instant") from None
    if instant.tzinfo is None:
        raise InvalidPlanningInput(f"{name}: give the offset (e.g. Z or +00:00)")
    return instant
