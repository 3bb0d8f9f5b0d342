"""Planning's use cases: history, forecast and staffing read from what routing recorded; what-if simulations as jobs.

Reads go outside any transaction (`UnitOfWork.reads`). A simulation is CPU work: it runs in a thread of
the replica that took it, checks for cancellation every few thousand events, and at most `max_running`
run at once per replica; the job itself is stored, so any replica answers for it.
"""

import asyncio
import json
import logging
import math
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from services.routing.domain import RoutingConfig, WaitingTicket
from services.routing.planning import erlang
from services.routing.planning.history import ALL, Interval, available_during, bucket_of, intervals, skill_set
from services.routing.planning.forecast import forecast_day
from services.routing.planning.repository import PlanningRepository
from services.routing.planning.requests import SimulationRequest
from services.routing.planning.simulation import (
    Arrival,
    Cancelled,
    Latency,
    RosterAgent,
    Scenario,
    Shift,
    Simulation,
    handle_sampler,
    poisson_arrivals,
    recorded_latency,
    report,
)
from shared.clock import from_ms, now_ms, to_ms, utc_now
from shared.mongo import UnitOfWork

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
MAX_HISTORY_DAYS = 31
KEPT_DAYS = 7  # how long a simulation's result stays to be read
KEPT_MS = KEPT_DAYS * 24 * 3600 * 1000
HEARTBEAT_SECONDS = 1.0
STALE_AFTER_MS = 15_000  # a running job with no heartbeat for this long lost its replica


class InvalidPlanningInput(ValueError):
    """Bad input the answer must name (a 422)."""


class TooManySimulations(Exception):
    pass


@dataclass(frozen=True)
class PlanningLimits:
    interval_minutes: int = 15
    forecast_weeks: int = 4
    max_tickets: int = 100_000
    max_agents: int = 2_000
    max_days: float = 2.0
    max_running: int = 2


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class PlanningViews:
    def __init__(self, uow: UnitOfWork, limits: PlanningLimits) -> None:
        self._uow = uow
        self._limits = limits

    @property
    def _records(self) -> PlanningRepository:
        return self._uow.reads.planning

    async def history(self, start: datetime, end: datetime, interval_minutes: int | None) -> dict:
        interval = interval_minutes or self._limits.interval_minutes
        if end <= start:
            raise InvalidPlanningInput("to must be after from")
        if end - start > timedelta(days=MAX_HISTORY_DAYS):
            raise InvalidPlanningInput(f"at most {MAX_HISTORY_DAYS} days at once")
        rows = await self._intervals(start, end, interval)
        return {"from": start.isoformat(), "to": end.isoformat(), "interval_minutes": interval,
                "intervals": [row.view(interval * 60) for row in rows]}

    async def _intervals(self, start: datetime, end: datetime, interval: int) -> list[Interval]:
        records = self._records
        start_ms, end_ms = bucket_of(start), to_ms(end)
        documents = await records.buckets(start_ms, end_ms)
        now = utc_now()
        open_stretches = [
            increment
            for since in await records.available_since_ms()
            for increment in available_during(max(from_ms(since), start), min(now, end))
        ]
        return intervals(documents, interval, open_stretches)

    async def forecast(
        self, day: date, interval_minutes: int | None, channel: str | None, skills: str | None, *, weeks: int | None,
        trend: bool,
    ) -> dict:
        return (await self._forecast(day, interval_minutes, channel, skills, weeks=weeks, trend=trend))[0]

    async def _forecast(
        self, day: date, interval_minutes: int | None, channel: str | None, skills: str | None, *, weeks: int | None,
        trend: bool,
    ) -> tuple[dict, float | None]:
        """The forecast's answer, and the mean handle time recorded over the days it read."""
        interval = interval_minutes or self._limits.interval_minutes
        weeks = weeks or self._limits.forecast_weeks
        per_day = 24 * 60 // interval
        # Each day the forecast reads is backtested from the weeks before it: twice the weeks back.
        by_day, handle = await self._daily_arrivals(
            day_start(day) - timedelta(weeks=weeks * 2), day_start(day), interval, channel, skills
        )
        first = await self._records.first_bucket_ms()
        result = forecast_day(day, lambda d: by_day.get(d, [0.0] * per_day),
                              from_ms(first).date() if first is not None else None, weeks=weeks, trend=trend)
        arrivals = result.arrivals or [0.0] * per_day
        return {
            "date": day.isoformat(),
            "interval_minutes": interval,
            "channel": channel,
            "skills": skills,
            "method": f"seasonal mean of the same weekday over the last {weeks} weeks" + (", with trend" if trend else ""),
            "days_used": [d.isoformat() for d in result.days_used],
            "backtest": {"days": [d.isoformat() for d in result.backtest_days],
                         "mape_percent": round(result.mape, 1) if result.mape is not None else None},
            "intervals": [{"start": (day_start(day) + timedelta(minutes=interval * i)).isoformat(),
                           "arrivals": round(value, 2)} for i, value in enumerate(arrivals)],
        }, handle

    async def _daily_arrivals(
        self, start: datetime, end: datetime, interval: int, channel: str | None, skills: str | None
    ) -> tuple[dict[date, list[float]], float | None]:
        """Recorded arrivals per interval of each day in [start, end) of the channel and skill set asked for
        (every one when not asked), and their mean handle time."""
        per_day = 24 * 60 // interval
        documents = await self._records.buckets(to_ms(start), to_ms(end))
        wanted = [d for d in documents if d["channel"] != ALL
                  and (channel is None or d["channel"] == channel)
                  and (skills is None or d["skills"] == skill_set(skills.split(",")))]
        by_day: dict[date, list[float]] = {}
        for document in wanted:
            at = from_ms(document["bucket_ms"])
            slot = (at.hour * 60 + at.minute) // interval
            by_day.setdefault(at.date(), [0.0] * per_day)[slot] += document.get("arrivals", 0)
        handled = sum(d.get("handled", 0) for d in wanted)
        return by_day, sum(d.get("handle_seconds", 0.0) for d in wanted) / handled if handled else None

    async def staffing(
        self, *, day: date | None, arrivals: list[float] | None, aht_seconds: float | None, interval_minutes: int | None,
        target_seconds: float, service_level: float, max_occupancy: float, shrinkage: float, concurrency: int,
        channel: str | None, skills: str | None, weeks: int | None, trend: bool, recorded: bool = False,
    ) -> dict:
        """Agents needed per interval for the given arrivals, or for a day's: forecast, or as recorded (`recorded`:
        what the day needed, against the agents it had)."""
        interval = interval_minutes or self._limits.interval_minutes
        if (day is None) == (arrivals is None):
            raise InvalidPlanningInput("give either date, or arrivals (with aht_seconds)")
        available: list[float | None] = []
        basis: dict = {}
        if day is not None:
            if recorded:
                by_day, handle = await self._daily_arrivals(day_start(day), day_start(day) + DAY, interval, channel, skills)
                arrivals = by_day.get(day, [0.0] * (24 * 60 // interval))
                basis = {"method": "the arrivals recorded that day"}
            else:
                forecast, handle = await self._forecast(day, interval, channel, skills, weeks=weeks, trend=trend)
                arrivals = [row["arrivals"] for row in forecast["intervals"]]
                basis = {key: forecast[key] for key in ("method", "days_used", "backtest")}
            if aht_seconds is None:
                if handle is None:
                    raise InvalidPlanningInput("no handle time recorded for that date: give aht_seconds")
                aht_seconds = handle
            recorded = await self._intervals(day_start(day), day_start(day) + DAY, interval)
            by_start = {row.start_ms: row.available_seconds / (interval * 60) for row in recorded}
            available = [round(by_start[ms], 2) if (ms := to_ms(day_start(day)) + i * interval * 60_000) in by_start
                         else None for i in range(len(arrivals))]
        elif aht_seconds is None:
            raise InvalidPlanningInput("aht_seconds is required with arrivals")
        rows = []
        for index, count in enumerate(arrivals):
            try:
                need = erlang.agents_needed(
                    count, interval * 60, aht_seconds, target_seconds=target_seconds,
                    service_level_goal=service_level, max_occupancy=max_occupancy, shrinkage=shrinkage,
                    concurrency=concurrency,
                )
            except erlang.TooMuchTraffic as too_much:
                raise InvalidPlanningInput(f"interval {index + 1}: {too_much}") from None
            row = {"arrivals": round(count, 2), "traffic_erlangs": round(need.traffic, 3), "agents": need.agents,
                   "agents_with_shrinkage": need.scheduled, "service_level": round(need.service_level, 4),
                   "probability_of_waiting": round(need.probability_of_waiting, 4),
                   "mean_wait_seconds": round(need.mean_wait_seconds, 1), "occupancy": round(need.occupancy, 3)}
            if day is not None:
                row = {"start": (day_start(day) + timedelta(minutes=interval * index)).isoformat(), **row,
                       "agents_available": available[index]}
            rows.append(row)
        return {
            "date": day.isoformat() if day else None, "interval_minutes": interval, "aht_seconds": round(aht_seconds, 1),
            "target_seconds": target_seconds, "service_level": service_level, "max_occupancy": max_occupancy,
            "shrinkage": shrinkage, "concurrency": concurrency,
            "model": "Erlang C (M/M/N)" if concurrency == 1 else f"Erlang C over {concurrency} slots per agent",
            **basis, "intervals": rows,
        }



# --- simulations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A simulation job as any replica sees it, from its stored document."""

    id: str
    status: str
    progress: float
    created_at: datetime
    result: dict | None = None
    error: str | None = None

    @classmethod
    def of(cls, document: dict, now: int) -> "Job":
        status, error = document["status"], document.get("error")
        if status == "running" and document["heartbeat_ms"] < now - STALE_AFTER_MS:
            status, error = "failed", "the replica running it stopped before it finished"
        result = document.get("result")
        return cls(
            id=document["_id"], status=status, progress=document["progress"], created_at=from_ms(document["created_ms"]),
            result=json.loads(result) if result else None, error=error,
        )

    def view(self) -> dict:
        view = {"id": self.id, "status": self.status, "progress": round(self.progress, 3),
                "created_at": self.created_at.isoformat()}
        if self.error:
            view["error"] = self.error
        if self.result is not None:
            view["result"] = self.result
        return view


class SimulationJobs:
    """Runs simulations in this replica's threads and keeps each job in MongoDB: its progress and
    a heartbeat every second, then its result (as JSON: agent ids are keys in it). Any replica answers
    for a job and can cancel it (the replica running it sees the request at its next heartbeat), and
    a job whose replica died shows as failed once its heartbeat is `STALE_AFTER_MS` old."""

    def __init__(self, uow: UnitOfWork, config: RoutingConfig, limits: PlanningLimits) -> None:
        self._uow = uow
        self._config = config
        self._limits = limits
        self._running: dict[str, tuple[threading.Event, asyncio.Task]] = {}

    async def submit(self, request: SimulationRequest) -> Job:
        if len(self._running) >= self._limits.max_running:
            raise TooManySimulations(f"{self._limits.max_running} simulations are running; try again when one is done")
        scenario = await self.scenario(request)
        now = now_ms()
        document = {"_id": uuid.uuid4().hex, "status": "running", "progress": 0.0, "created_ms": now,
                    "heartbeat_ms": now, "expires_ms": now + KEPT_MS, "cancel_asked": False}

        async def add(tx) -> None:
            await tx.planning.forget_simulations(now)
            await tx.planning.add_simulation(document)

        await self._uow.run(add)
        cancel = threading.Event()
        task = asyncio.create_task(self._run(document["_id"], scenario, cancel))
        self._running[document["_id"]] = (cancel, task)
        task.add_done_callback(lambda _: self._running.pop(document["_id"], None))
        return Job.of(document, now)

    async def get(self, job_id: str) -> Job | None:
        document = await self._uow.reads.planning.simulation(job_id)
        return None if document is None else Job.of(document, now_ms())

    async def cancel(self, job_id: str) -> Job | None:
        if job_id in self._running:
            self._running[job_id][0].set()  # ours: it stops at its next look, without waiting for a heartbeat
        document = await self._uow.run(lambda tx: tx.planning.ask_to_cancel(job_id))
        return None if document is None else Job.of(document, now_ms())

    async def finished(self) -> None:
        """Until this replica's running jobs end: what a test waits on."""
        await asyncio.gather(*(task for _, task in list(self._running.values())), return_exceptions=True)

    async def _run(self, job_id: str, scenario: Scenario, cancel: threading.Event) -> None:
        progress = [0.0]
        work = asyncio.ensure_future(asyncio.to_thread(
            Simulation(scenario).run, progress=lambda share: progress.__setitem__(0, share), cancelled=cancel.is_set
        ))
        while not work.done():
            await asyncio.wait([work], timeout=HEARTBEAT_SECONDS)
            if not work.done():
                await self._store(job_id, {"progress": progress[0]}, cancel)
        try:
            result = report(scenario, work.result())
            result["summary"]["latency_seconds"] = {"arrival": round(scenario.latency.arrival, 3),
                                                    "release": round(scenario.latency.release, 3)}
            ending = {"status": "done", "progress": 1.0, "result": json.dumps(result)}
        except Cancelled:
            ending = {"status": "cancelled"}
        except Exception as error:  # a bug, not bad input (that is refused before the job starts)
            log.exception("simulation %s failed", job_id)
            ending = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:300]}
        await self._store(job_id, ending, cancel)

    async def _store(self, job_id: str, changes: dict, cancel: threading.Event) -> None:
        """Writes the job's news with a heartbeat, and passes on a cancellation asked on another replica."""
        try:
            stored = await self._uow.run(
                lambda tx: tx.planning.update_simulation(job_id, {**changes, "heartbeat_ms": now_ms()})
            )
        except Exception:  # MongoDB away for a moment: the next heartbeat tries again
            log.warning("could not store simulation %s's progress", job_id, exc_info=True)
            return
        if stored is not None and stored.get("cancel_asked"):
            cancel.set()

    async def scenario(self, request: SimulationRequest) -> Scenario:
        """The request as a scenario to run, or `InvalidPlanningInput` saying what is wrong."""
        limits = self._limits
        if len(request.roster) > limits.max_agents:
            raise InvalidPlanningInput(f"roster: {len(request.roster)} agents, over the limit of {limits.max_agents}")
        start, end = request.period.start, request.period.end
        if end - start > timedelta(days=limits.max_days):
            raise InvalidPlanningInput(f"period: longer than the limit of {limits.max_days:g} days")
        rng = random.Random(request.seed)
        handle = request.handle_times
        sampler = handle_sampler(rng, handle.distribution, handle.mean_seconds, handle.sigma) if handle.mean_seconds else None
        latency = Latency()
        if request.arrivals.recorded:
            arrivals, latency = await self._recorded(start, end, handle.recorded, sampler)
            if request.latency == "none":
                latency = Latency()
        else:
            arrivals = self._from_rates(request, rng, sampler)
        if not arrivals:
            raise InvalidPlanningInput("period: no tickets arrive in it (an empty period)")
        needed = {skill for arrival in arrivals for skill in arrival.ticket.required_skills}
        unknown = sorted({skill for agent in request.roster for skill in agent.skills} - needed)
        if unknown:
            raise InvalidPlanningInput(
                f"roster: unknown skills {', '.join(unknown[:10])}: no ticket in the period needs them "
                f"(they need: {', '.join(sorted(needed)[:20]) or 'no skills'})"
            )
        roster = tuple(
            RosterAgent(agent.as_agent(), tuple(Shift(s.start, s.end) for s in agent.shifts)) for agent in request.roster
        )
        return Scenario(
            roster=roster, arrivals=tuple(arrivals), start=start, end=end,
            interval=timedelta(minutes=request.interval_minutes or limits.interval_minutes),
            target_seconds=request.target_seconds, sla_seconds=request.sla_seconds, config=self._config, latency=latency,
        )

    async def _recorded(
        self, start: datetime, end: datetime, recorded_handle: bool, sampler: Callable[[], float] | None
    ) -> tuple[list[Arrival], Latency]:
        limit = self._limits.max_tickets
        documents = await self._uow.reads.planning.tickets_created(to_ms(start), to_ms(end), limit + 1)
        if len(documents) > limit:
            raise InvalidPlanningInput(f"period: more than the limit of {limit} tickets")
        handled = [(d["finished_ms"] - d["assigned_ms"]) / 1000 for d in documents
                   if d.get("assigned_ms") and d.get("finished_ms") and d["finished_ms"] >= d["assigned_ms"]]
        mean_handle = sum(handled) / len(handled) if handled else None
        if sampler is None and (not recorded_handle or mean_handle is None):
            raise InvalidPlanningInput("handle_times: nothing recorded to replay in the period; give mean_seconds")
        arrivals = []
        for document in documents:
            seconds = None
            if recorded_handle and document.get("assigned_ms") and document.get("finished_ms"):
                seconds = max((document["finished_ms"] - document["assigned_ms"]) / 1000, 0.0)
            if seconds is None:
                seconds = sampler() if sampler else mean_handle
            ticket = WaitingTicket(
                ticket_id=document["_id"], priority=document["priority"], required_skills=document["required_skills"],
                skill_levels=document.get("skill_levels") or {}, channel=document.get("channel") or "web",
                language=document.get("language"), category=document.get("category"),
                customer_id=document.get("customer_id"), created_at=from_ms(document["created_ms"]),
            )
            arrivals.append(Arrival(ticket, seconds))
        return arrivals, recorded_latency(documents)

    def _from_rates(self, request: SimulationRequest, rng: random.Random, sampler) -> list[Arrival]:
        if sampler is None:
            raise InvalidPlanningInput("handle_times: give mean_seconds (recorded handle times need a recorded period)")
        streams = request.arrivals.rates
        expected = sum(sum(stream.per_interval) for stream in streams)
        if expected > self._limits.max_tickets:
            raise InvalidPlanningInput(f"arrivals: {expected:.0f} tickets expected, over the limit of "
                                       f"{self._limits.max_tickets}")
        interval = timedelta(minutes=request.interval_minutes or self._limits.interval_minutes)
        intervals = math.ceil((request.period.end - request.period.start) / interval)
        arrivals: list[Arrival] = []
        for number, stream in enumerate(streams):
            if len(stream.per_interval) > intervals:
                raise InvalidPlanningInput(
                    f"arrivals.rates[{number}]: {len(stream.per_interval)} intervals, the period has {intervals}"
                )

            def make(ticket_id: str, at: datetime, stream=stream) -> WaitingTicket:
                return WaitingTicket(ticket_id=ticket_id, priority=stream.priority, required_skills=list(stream.skills),
                                     skill_levels=stream.skills, channel=stream.channel, language=stream.language,
                                     created_at=at)

            arrivals += poisson_arrivals(rng, request.period.start, interval, stream.per_interval, make, sampler,
                                         prefix=f"sim{number}")
        arrivals.sort(key=lambda arrival: arrival.ticket.created_at)
        return arrivals
