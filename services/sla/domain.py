"""SLA clocks and what ticket events do to them. Pure: no I/O, no reading of the current time.

Instants are epoch milliseconds and durations milliseconds of the clock's calendar (business or
calendar time), see `services.sla.calendar`. The decisions are functions from the stored state
and one event to the new state and the SLA events to publish; services.sla.service persists
and publishes them in one transaction. The exact meaning of each metric is in README.md.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from services.sla.calendar import Calendar, ContinuousTime
from services.sla.policy import Metric, Policy, PolicySet, Target, TicketFacts
from shared.clock import from_ms
from shared.events import (
    Payload,
    SlaBreached,
    SlaClockPaused,
    SlaClockResumed,
    SlaClockStarted,
    SlaFulfilled,
    SlaWarning,
    TicketStatus,
)

__all__ = ["Clock", "ClockState", "Metric", "SlaRules", "TicketRecord", "Outcome"]

CLOSED_STATUSES = frozenset({TicketStatus.SOLVED, TicketStatus.CLOSED})
BREACH = 1.0
"""The last step of every clock: the whole target used up."""


class ClockState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    FULFILLED = "fulfilled"
    BREACHED = "breached"


@dataclass(frozen=True)
class Clock:
    """One metric's clock of one ticket; `cycle` counts the restarts of next_reply and periodic_update."""

    ticket_id: str
    metric: Metric
    cycle: int
    policy: str
    priority: str
    calendar: str
    target_ms: int
    warnings: tuple[float, ...]
    pause_on: frozenset[str]
    started_ms: int
    running: bool
    stopped: bool
    elapsed_ms: int
    """Open time counted before `since_ms` (all of it while paused or stopped)."""
    since_ms: int | None
    """When the current running stretch began; None unless running."""
    due_ms: int | None = None
    """When the target is used up: a prediction while running, the breach instant once breached."""
    fired: tuple[float, ...] = ()
    """Warning thresholds already announced."""
    breached: bool = False
    next_fire_ms: int | None = None
    """When the next warning or the breach is due; None unless running with one to come."""
    paused_ms: int | None = None
    stopped_ms: int | None = None
    version: int = 0

    @property
    def id(self) -> str:
        return clock_id(self.ticket_id, self.metric)

    @property
    def state(self) -> ClockState:
        if self.stopped:
            return ClockState.FULFILLED
        if self.breached:
            return ClockState.BREACHED
        return ClockState.RUNNING if self.running else ClockState.PAUSED

    @property
    def open(self) -> bool:
        return not self.stopped

    def elapsed(self, calendar: Calendar, now_ms: int) -> int:
        if self.running and self.since_ms is not None:
            return self.elapsed_ms + calendar.elapsed(self.since_ms, now_ms)
        return self.elapsed_ms

    def remaining(self, calendar: Calendar, now_ms: int) -> int:
        """Negative once breached."""
        return self.target_ms - self.elapsed(calendar, now_ms)


def clock_id(ticket_id: str, metric: Metric | str) -> str:
    return f"{ticket_id}:{Metric(metric).value}"


@dataclass(frozen=True)
class TicketRecord:
    """What SLA keeps of a ticket: the facts policies match on, its status and its policy, and where each
    metric would start, so a metric that a policy change makes applicable starts where it always would have."""

    ticket_id: str
    priority: str
    tier: str | None
    channel: str | None
    category: str | None
    tags: tuple[str, ...]
    status: TicketStatus
    created_ms: int
    policy: str | None
    replied_ms: int | None = None
    """The last public agent message (periodic_update's start); None while the customer has had no reply."""
    waiting_ms: int | None = None
    """The oldest unanswered public customer message (next_reply's start): the ticket's own at creation."""
    statuses: tuple[tuple[int, TicketStatus], ...] = ()
    """(since, status) from creation on: the pauses a clock started late would have had."""
    version: int = 0

    @property
    def facts(self) -> TicketFacts:
        return TicketFacts(self.priority, self.tier, self.channel, self.category, frozenset(self.tags))

    def moved(self, status: TicketStatus, at_ms: int) -> "TicketRecord":
        if status == self.status:
            return self
        return replace(self, status=status, statuses=(*self._log(), (at_ms, status)))

    def periods(self, until_ms: int) -> list[tuple[int, int, str]]:
        """(from, to, status) from creation to `until_ms`."""
        log = self._log()
        ends = [at for at, _ in log[1:]] + [until_ms]
        return [(at, end, status) for (at, status), end in zip(log, ends, strict=True)]

    def _log(self) -> tuple[tuple[int, str], ...]:
        # A record stored before the log existed is taken to have had its status since creation.
        return self.statuses or ((self.created_ms, self.status),)


@dataclass
class Outcome:
    """The new state and what to announce. `clocks` holds only the clocks that changed."""

    ticket: TicketRecord | None = None
    clocks: list[Clock] = field(default_factory=list)
    events: list[Payload] = field(default_factory=list)

    def put(self, clock: Clock) -> None:
        self.clocks = [c for c in self.clocks if c.metric != clock.metric] + [clock]


# --- clock arithmetic ---------------------------------------------------------------------------


def _steps(clock: Clock) -> list[float]:
    """The thresholds still to be announced, lowest first; BREACH last."""
    steps = [threshold for threshold in clock.warnings if threshold not in clock.fired]
    if not clock.breached:
        steps.append(BREACH)
    return steps


def _step_ms(clock: Clock, threshold: float) -> int:
    return clock.target_ms if threshold == BREACH else math.ceil(threshold * clock.target_ms)


def schedule(clock: Clock, calendar: Calendar) -> Clock:
    """Recomputes the due instant and the next firing of a running clock (clears both otherwise)."""
    if not clock.running or clock.since_ms is None:
        return replace(clock, next_fire_ms=None, due_ms=clock.due_ms if clock.breached else None)
    due_ms = clock.due_ms if clock.breached else calendar.add(clock.since_ms, clock.target_ms - clock.elapsed_ms)
    steps = _steps(clock)
    next_fire = None
    if steps:
        still = _step_ms(clock, steps[0]) - clock.elapsed_ms
        next_fire = calendar.add(clock.since_ms, still) if still > 0 else clock.since_ms
    return replace(clock, due_ms=due_ms, next_fire_ms=next_fire)


def start_clock(ticket_id: str, metric: Metric, cycle: int, policy: Policy, priority: str, at_ms: int, calendar: Calendar) -> Clock:
    target = policy.targets[metric]
    clock = Clock(
        ticket_id=ticket_id,
        metric=metric,
        cycle=cycle,
        policy=policy.name,
        priority=priority,
        calendar=target.calendar.name,
        target_ms=target.target_seconds * 1000,
        warnings=policy.warnings,
        pause_on=target.pause_on,
        started_ms=at_ms,
        running=True,
        stopped=False,
        elapsed_ms=0,
        since_ms=at_ms,
    )
    return schedule(clock, calendar)


def _settle(clock: Clock, calendar: Calendar, at_ms: int) -> Clock:
    """Counts the running stretch up to `at_ms` into `elapsed_ms`."""
    if not clock.running or clock.since_ms is None:
        return clock
    at_ms = max(at_ms, clock.since_ms)
    return replace(clock, elapsed_ms=clock.elapsed_ms + calendar.elapsed(clock.since_ms, at_ms), since_ms=at_ms)


def _used_up(clock: Clock, calendar: Calendar, at_ms: int) -> Clock:
    """Marks the breach of a clock whose target ran out by `at_ms` before a timer announced it (a reply or
    pause just after the due instant, a new target below the time elapsed), so it is announced exactly once."""
    if clock.breached:
        return clock
    if clock.running and clock.since_ms is not None:
        due_ms = calendar.add(clock.since_ms, clock.target_ms - clock.elapsed_ms)
    elif clock.elapsed_ms >= clock.target_ms:
        due_ms = at_ms
    else:
        return clock
    if due_ms > at_ms:
        return clock
    return replace(clock, breached=True, due_ms=due_ms, fired=tuple(clock.warnings))


def pause(clock: Clock, calendar: Calendar, at_ms: int) -> Clock:
    settled = _settle(_used_up(clock, calendar, at_ms), calendar, at_ms)
    return schedule(replace(settled, running=False, since_ms=None, paused_ms=at_ms), calendar)


def resume(clock: Clock, calendar: Calendar, at_ms: int) -> Clock:
    return schedule(replace(clock, running=True, since_ms=at_ms, paused_ms=None, stopped=False, stopped_ms=None), calendar)


def fulfil(clock: Clock, calendar: Calendar, at_ms: int) -> Clock:
    settled = _settle(_used_up(clock, calendar, at_ms), calendar, at_ms)
    return replace(settled, running=False, stopped=True, since_ms=None, stopped_ms=at_ms, next_fire_ms=None)


def retarget(clock: Clock, policy: Policy, target: Target, priority: str, old: Calendar, new: Calendar, at_ms: int) -> Clock:
    """A new target, warnings and calendar from the policy that now applies; the time elapsed is kept."""
    settled = _settle(clock, old, at_ms)
    changed = replace(
        settled,
        policy=policy.name,
        priority=priority,
        calendar=target.calendar.name,
        target_ms=target.target_seconds * 1000,
        warnings=policy.warnings,
        pause_on=target.pause_on,
        fired=tuple(t for t in settled.fired if t in policy.warnings),
    )
    return schedule(_used_up(changed, new, at_ms), new)


@dataclass(frozen=True)
class Firing:
    threshold: float
    """A warning threshold, or BREACH."""
    elapsed_ms: int


def fire(clock: Clock, calendar: Calendar, now_ms: int) -> tuple[Clock, Firing | None]:
    """What a timer finds due at `now_ms`: every step reached is marked done and only the highest is
    announced, so after downtime a stale warning is not sent beside the breach it led to."""
    if not clock.running or clock.next_fire_ms is None or clock.next_fire_ms > now_ms:
        return clock, None
    elapsed = clock.elapsed(calendar, now_ms)
    reached = [step for step in _steps(clock) if elapsed >= _step_ms(clock, step)]
    if not reached:
        return schedule(clock, calendar), None
    highest = max(reached)
    fired = tuple(sorted({*clock.fired, *(step for step in reached if step != BREACH)}))
    if highest == BREACH:
        # Warnings not yet announced are skipped once breached.
        fired = tuple(clock.warnings)
    changed = replace(clock, fired=fired, breached=clock.breached or highest == BREACH)
    if highest == BREACH:
        changed = replace(changed, due_ms=clock.due_ms)  # the instant it was breached
    return schedule(changed, calendar), Firing(highest, elapsed)


# --- what ticket events do ----------------------------------------------------------------------


def _at(ms: int | None) -> datetime | None:
    return from_ms(ms) if ms is not None else None


def started_event(clock: Clock) -> SlaClockStarted:
    return SlaClockStarted(**_base(clock), started_at=from_ms(clock.started_ms), due_at=from_ms(clock.due_ms))


def _base(clock: Clock) -> dict:
    return {
        "ticket_id": clock.ticket_id,
        "metric": clock.metric.value,
        "policy": clock.policy,
        "target_seconds": clock.target_ms // 1000,
    }


def firing_event(clock: Clock, firing: Firing, now_ms: int) -> Payload:
    if firing.threshold == BREACH:
        return SlaBreached(**_base(clock), due_at=from_ms(clock.due_ms), breached_at=from_ms(clock.due_ms))
    return SlaWarning(
        **_base(clock),
        threshold=firing.threshold,
        due_at=from_ms(clock.due_ms),
        remaining_seconds=(clock.target_ms - firing.elapsed_ms) / 1000,
        warned_at=from_ms(now_ms),
    )


CalendarOf = Callable[[str], Calendar]


class SlaRules:
    """The metric semantics: how each ticket event starts, pauses, resumes and fulfils clocks."""

    def __init__(self, policies: PolicySet) -> None:
        self.policies = policies

    def calendar(self, name: str) -> Calendar:
        return self.policies.calendar(name) or ContinuousTime(name)

    # --- helpers --------------------------------------------------------------------------------

    def _start(
        self, out: Outcome, ticket: TicketRecord, metric: Metric, at_ms: int, previous: Clock | None, since_ms: int | None = None
    ) -> None:
        """Starts `metric`'s clock at `at_ms`. One started late (`since_ms`, a policy change) counts the open time
        since then that the ticket spent outside its pause statuses and solved, and may start breached."""
        policy = self.policies.by_name(ticket.policy) if ticket.policy else None
        if policy is None or metric not in policy.targets:
            return
        calendar = policy.targets[metric].calendar
        cycle = previous.cycle + 1 if previous else 1
        clock = start_clock(ticket.ticket_id, metric, cycle, policy, ticket.priority, at_ms, calendar)
        if since_ms is not None:
            stops = clock.pause_on | CLOSED_STATUSES
            elapsed = sum(
                calendar.elapsed(max(start, since_ms), end) for start, end, status in ticket.periods(at_ms) if status not in stops
            )
            clock = schedule(_used_up(replace(clock, started_ms=since_ms, elapsed_ms=elapsed), calendar, at_ms), calendar)
        if previous is not None:
            clock = replace(clock, version=previous.version)
        out.events.append(started_event(clock))  # due_at: when it runs out if it runs (the breach once breached)
        if clock.breached:
            out.events.append(firing_event(clock, Firing(BREACH, clock.elapsed_ms), at_ms))
        if ticket.status in clock.pause_on:
            clock = pause(clock, calendar, at_ms)
            out.events.append(SlaClockPaused(**_base(clock), elapsed_seconds=clock.elapsed_ms / 1000, paused_at=from_ms(at_ms)))
        out.put(clock)

    def _natural_start(self, ticket: TicketRecord, policy: Policy, metric: Metric, at_ms: int) -> int | None:
        """Where `metric`'s clock would have started had `policy` applied from creation, if it would still be
        open at `at_ms`; None if it would not (fulfilled, not owed yet, or covered by first_reply)."""
        if ticket.status in CLOSED_STATUSES:
            return None  # a solved or closed ticket owes nothing (until a reopen, which resumes resolution)
        if metric is Metric.RESOLUTION:
            return ticket.created_ms
        if metric is Metric.NEXT_REPLY:
            first = self._natural_start(ticket, policy, Metric.FIRST_REPLY, at_ms) if Metric.FIRST_REPLY in policy.targets else None
            return ticket.waiting_ms if first is None else None  # solving clears waiting_ms
        if metric is Metric.FIRST_REPLY:
            start = ticket.created_ms if ticket.replied_ms is None else None
        else:
            start = ticket.replied_ms
        # Solving fulfilled it, and an agent reply on a solved ticket starts no periodic_update.
        if start is None or any(status in CLOSED_STATUSES and end > start for _, end, status in ticket.periods(at_ms)):
            return None
        return start

    def _put(self, out: Outcome, before: Clock, after: Clock, at_ms: int) -> None:
        """Stores a changed clock, announcing the breach a change found (see `_used_up`) before anything else."""
        out.put(after)
        if after.breached and not before.breached:
            out.events.append(firing_event(after, Firing(BREACH, after.elapsed_ms), at_ms))

    def _fulfil(self, out: Outcome, clock: Clock, at_ms: int) -> None:
        done = fulfil(clock, self.calendar(clock.calendar), at_ms)
        self._put(out, clock, done, at_ms)
        out.events.append(
            SlaFulfilled(**_base(done), elapsed_seconds=done.elapsed_ms / 1000, breached=done.breached, fulfilled_at=from_ms(at_ms))
        )

    # --- events ---------------------------------------------------------------------------------

    def created(self, ticket: TicketRecord, at_ms: int) -> Outcome:
        """first_reply and resolution start at creation. The ticket's own message is its oldest unanswered
        customer message, so a policy without first_reply starts next_reply there instead."""
        policy = self.policies.match(ticket.facts)
        ticket = replace(ticket, policy=policy.name if policy else None, waiting_ms=at_ms, statuses=((at_ms, ticket.status),))
        out = Outcome(ticket=ticket)
        if policy is None:
            return out
        reply = Metric.FIRST_REPLY if Metric.FIRST_REPLY in policy.targets else Metric.NEXT_REPLY
        for metric in (reply, Metric.RESOLUTION):
            self._start(out, ticket, metric, at_ms, None)
        return out

    def message(
        self, ticket: TicketRecord, clocks: Mapping[Metric, Clock], *, from_agent: bool, public: bool, at_ms: int
    ) -> Outcome:
        if not public or ticket.status == TicketStatus.CLOSED:
            return Outcome(ticket=ticket)  # internal notes never count
        if from_agent:
            out = Outcome(ticket=replace(ticket, replied_ms=at_ms, waiting_ms=None))
            for metric in (Metric.FIRST_REPLY, Metric.NEXT_REPLY):
                clock = clocks.get(metric)
                if clock is not None and clock.open:
                    self._fulfil(out, clock, at_ms)
            periodic = clocks.get(Metric.PERIODIC_UPDATE)
            if periodic is not None and periodic.open:
                self._fulfil(out, periodic, at_ms)
                periodic = out.clocks[-1]
            if ticket.status not in CLOSED_STATUSES:
                self._start(out, ticket, Metric.PERIODIC_UPDATE, at_ms, periodic)
        else:
            # Pending waits for the customer, so their message ends it (intake opens the ticket at the same
            # instant and says so right after): the clocks run on from here instead of starting paused.
            out = Outcome(ticket=ticket)
            if ticket.status == TicketStatus.PENDING:
                out = self.status_changed(ticket, clocks, TicketStatus.OPEN, at_ms)
                clocks = {**clocks, **{clock.metric: clock for clock in out.clocks}}
            oldest = ticket.waiting_ms if ticket.waiting_ms is not None else at_ms
            ticket = out.ticket = replace(out.ticket, waiting_ms=oldest)
            first = clocks.get(Metric.FIRST_REPLY)
            waiting = clocks.get(Metric.NEXT_REPLY)
            if (first is None or not first.open) and (waiting is None or not waiting.open):
                self._start(out, ticket, Metric.NEXT_REPLY, at_ms, waiting)
        return out

    def status_changed(self, ticket: TicketRecord, clocks: Mapping[Metric, Clock], status: TicketStatus, at_ms: int) -> Outcome:
        if status == TicketStatus.SOLVED:
            return self.solved(ticket, clocks, at_ms)
        if status == TicketStatus.CLOSED:
            return self.closed(ticket, clocks, at_ms)
        if ticket.status == TicketStatus.SOLVED:
            reopened = self.reopened(ticket, clocks, at_ms)
            ticket, clocks = reopened.ticket, {**clocks, **{c.metric: c for c in reopened.clocks}}
            out = reopened
        else:
            out = Outcome()
        if ticket.status == TicketStatus.CLOSED:
            return Outcome(ticket=ticket)
        ticket = ticket.moved(status, at_ms)
        out.ticket = ticket
        for clock in clocks.values():
            if clock.open:
                self._follow_status(out, clock, clock, status, at_ms)
        return out

    def _follow_status(self, out: Outcome, before: Clock, clock: Clock, status: TicketStatus, at_ms: int) -> None:
        """Store `clock` (changed from `before`), paused if its target pauses on `status`, running if not."""
        calendar = self.calendar(clock.calendar)
        if status in clock.pause_on and clock.running:
            paused = pause(clock, calendar, at_ms)
            self._put(out, before, paused, at_ms)
            out.events.append(SlaClockPaused(**_base(paused), elapsed_seconds=paused.elapsed_ms / 1000, paused_at=from_ms(at_ms)))
        elif status not in clock.pause_on and not clock.running:
            resumed = resume(clock, calendar, at_ms)
            self._put(out, before, resumed, at_ms)
            out.events.append(SlaClockResumed(**_base(resumed), resumed_at=from_ms(at_ms), due_at=from_ms(resumed.due_ms)))
        elif clock != before:
            self._put(out, before, clock, at_ms)

    def solved(self, ticket: TicketRecord, clocks: Mapping[Metric, Clock], at_ms: int) -> Outcome:
        """Solving fulfils every clock still open: resolution, and the replies and updates no longer owed."""
        out = Outcome(ticket=replace(ticket.moved(TicketStatus.SOLVED, at_ms), waiting_ms=None) if ticket.status != TicketStatus.CLOSED else ticket)
        for clock in clocks.values():
            if clock.open:
                self._fulfil(out, clock, at_ms)
        return out

    def closed(self, ticket: TicketRecord, clocks: Mapping[Metric, Clock], at_ms: int) -> Outcome:
        out = self.solved(ticket, clocks, at_ms)
        out.ticket = replace(ticket.moved(TicketStatus.CLOSED, at_ms), waiting_ms=None)
        return out

    def reopened(self, ticket: TicketRecord, clocks: Mapping[Metric, Clock], at_ms: int) -> Outcome:
        """A reopen resumes the same resolution clock, with its elapsed time and breach."""
        if ticket.status != TicketStatus.SOLVED:
            return Outcome(ticket=ticket)
        ticket = ticket.moved(TicketStatus.OPEN, at_ms)
        out = Outcome(ticket=ticket)
        resolution = clocks.get(Metric.RESOLUTION)
        if resolution is not None and not resolution.open:
            resumed = resume(resolution, self.calendar(resolution.calendar), at_ms)
            out.put(resumed)
            out.events.append(SlaClockResumed(**_base(resumed), resumed_at=from_ms(at_ms), due_at=from_ms(resumed.due_ms)))
        elif resolution is None:
            self._start(out, ticket, Metric.RESOLUTION, at_ms, None)
        return out

    def facts_changed(self, ticket: TicketRecord, clocks: Mapping[Metric, Clock], changed: TicketRecord, at_ms: int) -> Outcome:
        """Priority or tags changed: the matching policy's targets apply to open clocks, elapsed time kept, and a
        metric it adds starts where it would have started had this policy applied from creation."""
        policy = self.policies.match(changed.facts)
        changed = replace(changed, policy=policy.name if policy else ticket.policy)
        out = Outcome(ticket=changed)
        if policy is None:
            return out
        for clock in clocks.values():
            target = policy.targets.get(clock.metric)
            if not clock.open or target is None:
                continue
            new = retarget(clock, policy, target, changed.priority, self.calendar(clock.calendar), target.calendar, at_ms)
            self._follow_status(out, clock, new, changed.status, at_ms)  # the new target may pause on other statuses
        for metric in Metric:
            clock = clocks.get(metric)
            if metric in policy.targets and (clock is None or not clock.open):
                since = self._natural_start(changed, policy, metric, at_ms)
                if since is not None:
                    self._start(out, changed, metric, at_ms, clock, since)
        return out

    def policies_reloaded(self, ticket: TicketRecord, clocks: Mapping[Metric, Clock], at_ms: int) -> Outcome:
        """The policy file changed while the ticket's clocks ran: the same as a priority change to the priority it
        already has, so the first matching policy of these rules applies exactly as after a real change."""
        return self.facts_changed(ticket, clocks, ticket, at_ms)

    def fire(self, clock: Clock, now_ms: int) -> tuple[Clock, Payload | None]:
        changed, firing = fire(clock, self.calendar(clock.calendar), now_ms)
        return changed, firing_event(changed, firing, now_ms) if firing else None


def public_view(clock: Clock, calendar: Calendar, now_ms: int) -> dict:
    """What GET /v1/tickets/{id}/sla shows of a clock. A clock past its target reads as breached even in
    the moment before its timer announces it, so state and remaining time never contradict each other."""
    elapsed = clock.elapsed(calendar, now_ms)
    breached = clock.breached or elapsed >= clock.target_ms
    state = ClockState.BREACHED if breached and clock.open else clock.state
    return {
        "metric": clock.metric.value,
        "policy": clock.policy,
        "state": state,
        "cycle": clock.cycle,
        "target_seconds": clock.target_ms // 1000,
        "business_time": calendar.business,
        "calendar": clock.calendar,
        "started_at": from_ms(clock.started_ms),
        "due_at": _at(clock.due_ms),
        "elapsed_seconds": elapsed / 1000,
        "remaining_seconds": (clock.target_ms - elapsed) / 1000,
        "breached": breached,
        "warnings_sent": list(clock.fired),
        "paused_at": _at(clock.paused_ms),
        "fulfilled_at": _at(clock.stopped_ms),
    }
