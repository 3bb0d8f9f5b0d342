"""The metric semantics, event by event, without any I/O."""

import textwrap
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from services.sla.calendar import to_epoch_ms
from services.sla.domain import BREACH, ClockState, Metric, SlaRules, TicketRecord, public_view
from services.sla.policy import parse_policies
from shared.events import SlaBreached, SlaClockPaused, SlaClockResumed, SlaClockStarted, SlaFulfilled, SlaWarning

MIN = 60_000
T0 = to_epoch_ms(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))  # a Tuesday

POLICIES = parse_policies(
    textwrap.dedent(
        """\
        calendars:
          office:
            timezone: Europe/Berlin
            hours: {mon-fri: ["09:00-17:00"]}
        policies:
          - name: urgent
            match: {priority: urgent}
            warnings: [0.5, 0.75]
            targets:
              first_reply: 10m
              next_reply: 20m
              periodic_update: 30m
              resolution: {target: 60m, pause_on: [pending, on_hold]}
          - name: business
            match: {tags: office}
            calendar: office
            warnings: [0.5]
            targets: {first_reply: 1h, resolution: 8h}
          - name: normal
            warnings: [0.5, 0.75]
            targets:
              first_reply: 60m
              next_reply: 60m
              periodic_update: {target: 2h, pause_on: [on_hold]}
              resolution: {target: 4h, pause_on: [pending]}
        """
    )
)
RULES = SlaRules(POLICIES)


def new_ticket(priority="normal", tags=()) -> TicketRecord:
    return TicketRecord("TKT-1", priority, None, "web", None, tuple(tags), "new", T0, None)


class Ticket:
    """Applies decisions the way the service stores them, so a test reads like the ticket's history."""

    def __init__(self, priority="normal", tags=(), rules=RULES):
        self.rules = rules
        outcome = rules.created(new_ticket(priority, tags), T0)
        self.ticket = outcome.ticket
        self.clocks = {clock.metric: clock for clock in outcome.clocks}
        self.events = list(outcome.events)

    def apply(self, outcome):
        self.ticket = outcome.ticket or self.ticket
        self.clocks.update({clock.metric: clock for clock in outcome.clocks})
        self.events.extend(outcome.events)
        return outcome.events

    def agent_reply(self, at, public=True):
        return self.apply(self.rules.message(self.ticket, self.clocks, from_agent=True, public=public, at_ms=at))

    def customer_message(self, at, public=True):
        return self.apply(self.rules.message(self.ticket, self.clocks, from_agent=False, public=public, at_ms=at))

    def status(self, status, at):
        return self.apply(self.rules.status_changed(self.ticket, self.clocks, status, at))

    def raise_to(self, priority, at):
        changed = TicketRecord(**{**vars(self.ticket), "priority": priority})
        return self.apply(self.rules.facts_changed(self.ticket, self.clocks, changed, at))

    def fire(self, metric, at):
        clock, event = self.rules.fire(self.clocks[metric], at)
        self.clocks[metric] = clock
        return event

    def view(self, metric, at):
        clock = self.clocks[metric]
        return public_view(clock, self.rules.calendar(clock.calendar), at)


def kinds(events):
    return [(type(event).__name__, event.metric) for event in events]


def test_creation_starts_first_reply_and_resolution_by_the_first_matching_policy():
    ticket = Ticket()
    assert kinds(ticket.events) == [("SlaClockStarted", "first_reply"), ("SlaClockStarted", "resolution")]
    assert ticket.ticket.policy == "normal"
    first = ticket.view(Metric.FIRST_REPLY, T0 + 15 * MIN)
    assert (first["state"], first["target_seconds"], first["elapsed_seconds"], first["remaining_seconds"]) == (
        "running", 3600, 900, 2700,
    )
    assert first["due_at"] == datetime(2026, 11, 24, 11, 0, tzinfo=UTC)


def test_the_first_public_agent_reply_fulfils_first_reply_and_internal_notes_never_count():
    ticket = Ticket()
    assert ticket.agent_reply(T0 + 5 * MIN, public=False) == []
    assert ticket.customer_message(T0 + 6 * MIN, public=False) == []
    events = ticket.agent_reply(T0 + 10 * MIN)
    fulfilled = [e for e in events if isinstance(e, SlaFulfilled)]
    assert [(e.metric, e.elapsed_seconds, e.breached) for e in fulfilled] == [("first_reply", 600, False)]
    assert ticket.clocks[Metric.FIRST_REPLY].state is ClockState.FULFILLED
    # ... and starts periodic_update: the time until the next public agent reply.
    assert ("SlaClockStarted", "periodic_update") in kinds(events)


def test_next_reply_runs_from_the_oldest_unanswered_customer_message_to_the_next_agent_reply():
    ticket = Ticket()
    ticket.agent_reply(T0 + 10 * MIN)
    assert kinds(ticket.customer_message(T0 + 20 * MIN)) == [("SlaClockStarted", "next_reply")]
    assert ticket.customer_message(T0 + 30 * MIN) == [], "a second message does not restart the clock"
    events = ticket.agent_reply(T0 + 50 * MIN)
    [done] = [e for e in events if isinstance(e, SlaFulfilled) and e.metric == "next_reply"]
    assert done.elapsed_seconds == 30 * 60
    assert ticket.clocks[Metric.NEXT_REPLY].cycle == 1
    ticket.customer_message(T0 + 60 * MIN)
    assert ticket.clocks[Metric.NEXT_REPLY].cycle == 2 and ticket.clocks[Metric.NEXT_REPLY].running


def test_a_customer_message_before_the_first_reply_is_covered_by_first_reply():
    ticket = Ticket()
    assert ticket.customer_message(T0 + 5 * MIN) == []
    assert Metric.NEXT_REPLY not in ticket.clocks


def test_periodic_update_measures_the_time_between_public_agent_replies():
    ticket = Ticket()
    ticket.agent_reply(T0 + 10 * MIN)
    events = ticket.agent_reply(T0 + 40 * MIN)
    [done] = [e for e in events if isinstance(e, SlaFulfilled) and e.metric == "periodic_update"]
    assert done.elapsed_seconds == 30 * 60
    assert ticket.clocks[Metric.PERIODIC_UPDATE].cycle == 2
    ticket.status("solved", T0 + 50 * MIN)
    assert ticket.agent_reply(T0 + 55 * MIN) == [], "no periodic update is owed on a solved ticket"


def test_pending_pauses_only_the_metrics_configured_to_pause_and_the_paused_time_does_not_count():
    ticket = Ticket()
    ticket.agent_reply(T0 + 10 * MIN)  # periodic_update pauses on on_hold only; resolution on pending only
    events = ticket.status("pending", T0 + 20 * MIN)
    assert kinds(events) == [("SlaClockPaused", "resolution")]
    resolution = ticket.view(Metric.RESOLUTION, T0 + 80 * MIN)
    assert (resolution["state"], resolution["elapsed_seconds"], resolution["due_at"]) == ("paused", 1200, None)
    events = ticket.status("on_hold", T0 + 80 * MIN)
    assert kinds(events) == [("SlaClockResumed", "resolution"), ("SlaClockPaused", "periodic_update")]
    events = ticket.status("open", T0 + 90 * MIN)
    assert kinds(events) == [("SlaClockResumed", "periodic_update")]
    # resolution: 20 min before pending + 10 min while on_hold + 30 min since = 60 min
    assert ticket.view(Metric.RESOLUTION, T0 + 120 * MIN)["elapsed_seconds"] == 3600
    resumed = [e for e in ticket.events if isinstance(e, SlaClockResumed) and e.metric == "periodic_update"][0]
    # periodic_update ran from 10 to 80 min (pending does not pause it): 70 of 120 min used, 50 left at 90.
    assert resumed.due_at == datetime(2026, 11, 24, 12, 20, tzinfo=UTC)


def test_warnings_then_breach_fire_at_their_thresholds_and_only_once():
    ticket = Ticket()
    first = ticket.clocks[Metric.FIRST_REPLY]
    assert first.next_fire_ms == T0 + 30 * MIN
    assert ticket.fire(Metric.FIRST_REPLY, T0 + 29 * MIN) is None
    warning = ticket.fire(Metric.FIRST_REPLY, T0 + 30 * MIN)
    assert isinstance(warning, SlaWarning) and warning.threshold == 0.5 and warning.remaining_seconds == 1800
    assert ticket.fire(Metric.FIRST_REPLY, T0 + 31 * MIN) is None
    assert isinstance(ticket.fire(Metric.FIRST_REPLY, T0 + 45 * MIN), SlaWarning)
    breach = ticket.fire(Metric.FIRST_REPLY, T0 + 60 * MIN)
    assert isinstance(breach, SlaBreached) and breach.breached_at == datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    assert ticket.clocks[Metric.FIRST_REPLY].next_fire_ms is None
    assert ticket.view(Metric.FIRST_REPLY, T0 + 70 * MIN)["state"] == "breached"
    [done] = [e for e in ticket.agent_reply(T0 + 70 * MIN) if isinstance(e, SlaFulfilled)]
    assert done.breached and done.elapsed_seconds == 70 * 60


def test_after_downtime_only_the_highest_overdue_step_fires_once():
    ticket = Ticket()
    breach = ticket.fire(Metric.FIRST_REPLY, T0 + 3 * 60 * MIN)
    assert isinstance(breach, SlaBreached)
    assert ticket.fire(Metric.FIRST_REPLY, T0 + 4 * 60 * MIN) is None


def test_a_reply_after_the_due_time_but_before_the_timer_fired_is_still_a_breach_and_announced_once():
    ticket = Ticket()
    events = [e for e in ticket.agent_reply(T0 + 61 * MIN) if e.metric == "first_reply"]
    assert [type(e).__name__ for e in events] == ["SlaBreached", "SlaFulfilled"]
    breached, done = events
    assert breached.breached_at == breached.due_at == datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    assert done.breached
    assert ticket.fire(Metric.FIRST_REPLY, T0 + 62 * MIN) is None


def test_a_pause_just_after_the_due_time_announces_the_breach_the_timer_had_not_fired_yet():
    ticket = Ticket()
    ticket.agent_reply(T0 + 10 * MIN)
    events = ticket.status("pending", T0 + 4 * 60 * MIN + 1)  # resolution: 4 h, pauses on pending
    assert kinds(events) == [("SlaBreached", "resolution"), ("SlaClockPaused", "resolution")]
    assert events[0].breached_at == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    assert ticket.view(Metric.RESOLUTION, T0 + 5 * 60 * MIN)["state"] == "breached"
    assert kinds(ticket.status("open", T0 + 6 * 60 * MIN)) == [("SlaClockResumed", "resolution")]
    assert ticket.clocks[Metric.RESOLUTION].next_fire_ms is None, "the breach is not announced again"
    [done] = [e for e in ticket.status("solved", T0 + 7 * 60 * MIN) if e.metric == "resolution"]
    assert isinstance(done, SlaFulfilled) and done.breached


def test_the_view_reads_breached_as_soon_as_the_target_is_used_up():
    ticket = Ticket()
    view = ticket.view(Metric.FIRST_REPLY, T0 + 60 * MIN)  # the breach timer has not fired yet
    assert (view["state"], view["breached"], view["remaining_seconds"]) == ("breached", True, 0)
    assert ticket.view(Metric.FIRST_REPLY, T0 + 60 * MIN - 1)["state"] == "running"


def test_without_a_first_reply_target_next_reply_starts_with_the_ticket():
    rules = SlaRules(parse_policies("policies:\n  - name: replies\n    targets: {next_reply: 1h}\n"))
    outcome = rules.created(new_ticket(), T0)
    assert kinds(outcome.events) == [("SlaClockStarted", "next_reply")]
    clocks = {clock.metric: clock for clock in outcome.clocks}
    assert rules.message(outcome.ticket, clocks, from_agent=False, public=True, at_ms=T0 + MIN).events == [], (
        "the ticket's own message is the oldest unanswered one"
    )
    [done] = rules.message(outcome.ticket, clocks, from_agent=True, public=True, at_ms=T0 + 20 * MIN).events
    assert isinstance(done, SlaFulfilled) and done.elapsed_seconds == 20 * 60


def test_solving_fulfils_resolution_and_a_reopen_resumes_the_same_clock():
    ticket = Ticket()
    ticket.agent_reply(T0 + 10 * MIN)
    events = ticket.status("solved", T0 + 30 * MIN)
    assert ("SlaFulfilled", "resolution") in kinds(events)
    assert all(not clock.open for clock in ticket.clocks.values())
    events = RULES.reopened(ticket.ticket, ticket.clocks, T0 + 90 * MIN)
    ticket.apply(events)
    resolution = ticket.clocks[Metric.RESOLUTION]
    assert resolution.running and resolution.cycle == 1 and resolution.elapsed_ms == 30 * MIN
    assert ticket.view(Metric.RESOLUTION, T0 + 100 * MIN)["elapsed_seconds"] == 40 * 60
    assert ticket.ticket.status == "open"


def test_a_priority_change_recomputes_the_target_and_keeps_the_elapsed_time():
    ticket = Ticket()
    changed = TicketRecord(**{**vars(ticket.ticket), "priority": "urgent"})
    outcome = RULES.facts_changed(ticket.ticket, ticket.clocks, changed, T0 + 8 * MIN)
    ticket.apply(outcome)
    first = ticket.clocks[Metric.FIRST_REPLY]
    assert (first.policy, first.target_ms, first.elapsed_ms) == ("urgent", 10 * MIN, 8 * MIN)
    assert first.due_ms == T0 + 10 * MIN
    # 0.5 and 0.75 of 10 min have passed: the next firing is right away, and announces only 0.75.
    warning = ticket.fire(Metric.FIRST_REPLY, T0 + 8 * MIN)
    assert isinstance(warning, SlaWarning) and warning.threshold == 0.75
    assert ticket.clocks[Metric.FIRST_REPLY].next_fire_ms == T0 + 10 * MIN


def test_a_new_target_below_the_time_already_elapsed_is_breached_at_the_change():
    ticket = Ticket()
    changed = TicketRecord(**{**vars(ticket.ticket), "priority": "urgent"})
    outcome = RULES.facts_changed(ticket.ticket, ticket.clocks, changed, T0 + 15 * MIN)
    [breached] = [e for e in outcome.events if e.metric == "first_reply"]  # 15 min elapsed, the new target is 10
    assert isinstance(breached, SlaBreached) and breached.breached_at == datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert breached.policy == "urgent" and breached.target_seconds == 600
    ticket.apply(outcome)
    assert ticket.fire(Metric.FIRST_REPLY, T0 + 16 * MIN) is None
    assert ticket.clocks[Metric.RESOLUTION].elapsed(RULES.calendar("calendar"), T0 + 15 * MIN) == 15 * MIN


def test_a_changed_policy_file_applies_to_running_clocks_as_a_priority_change_would():
    ticket = Ticket()
    edited = SlaRules(parse_policies(textwrap.dedent(
        """\
        policies:
          - name: normal
            warnings: [0.5, 0.9]
            targets:
              first_reply: 30m
              next_reply: 1h
              resolution: {target: 8h, pause_on: [pending]}
        """
    )))
    at = T0 + 20 * MIN
    outcome = edited.policies_reloaded(ticket.ticket, ticket.clocks, at)
    assert outcome == edited.facts_changed(ticket.ticket, ticket.clocks, ticket.ticket, at)
    assert outcome.events == [], "no metric is new (first_reply covers next_reply) and no target is used up"
    reloaded = {clock.metric: clock for clock in outcome.clocks}
    first, resolution = reloaded[Metric.FIRST_REPLY], reloaded[Metric.RESOLUTION]
    assert (first.target_ms, first.elapsed_ms, first.warnings, first.fired) == (30 * MIN, 20 * MIN, (0.5, 0.9), ())
    assert first.due_ms == T0 + 30 * MIN, "the 20 minutes elapsed under the old file count"
    assert first.next_fire_ms == at, "0.5 of the new target has passed: due at once"
    assert (resolution.target_ms, resolution.elapsed_ms, resolution.due_ms) == (8 * 60 * MIN, 20 * MIN, T0 + 8 * 60 * MIN)


def test_business_time_clocks_stop_overnight():
    evening = to_epoch_ms(datetime(2026, 11, 24, 16, 30, tzinfo=ZoneInfo("Europe/Berlin")))
    outcome = RULES.created(TicketRecord("TKT-2", "low", None, "web", None, ("office",), "new", evening, None), evening)
    first = next(clock for clock in outcome.clocks if clock.metric is Metric.FIRST_REPLY)
    assert first.due_ms == to_epoch_ms(datetime(2026, 11, 25, 9, 30, tzinfo=ZoneInfo("Europe/Berlin")))
    view = public_view(first, RULES.calendar(first.calendar), evening + 12 * 60 * MIN)
    assert view["business_time"] and view["elapsed_seconds"] == 30 * 60


def test_events_for_a_closed_ticket_change_nothing():
    ticket = Ticket()
    ticket.status("closed", T0 + 5 * MIN)
    assert ticket.ticket.status == "closed"
    assert ticket.customer_message(T0 + 6 * MIN) == []
    assert ticket.status("open", T0 + 7 * MIN) == []


# --- properties -------------------------------------------------------------------------------

STATUSES = ["open", "pending", "on_hold", "open", "new"]


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([(), ("office",)]),
    st.lists(st.tuples(st.integers(1, 600 * MIN), st.sampled_from(STATUSES)), max_size=12),
    st.integers(0, 600 * MIN),
)
def test_elapsed_time_is_exactly_the_calendar_time_spent_outside_the_pause_statuses(tags, changes, tail):
    ticket = Ticket(tags=tags)
    resolution = ticket.clocks[Metric.RESOLUTION]
    calendar = RULES.calendar(resolution.calendar)
    at, status, expected = T0, "new", 0
    for gap, new_status in changes:
        if status not in resolution.pause_on:
            expected += calendar.elapsed(at, at + gap)
        at += gap
        ticket.status(new_status, at)
        status = new_status
    end = at + tail
    if status not in resolution.pause_on:
        expected += calendar.elapsed(at, end)
    clock = ticket.clocks[Metric.RESOLUTION]
    assert clock.elapsed(calendar, end) == expected
    assert clock.running == (status not in clock.pause_on)
    assert clock.breached == (clock.elapsed_ms >= clock.target_ms), "a pause after the target ran out marks the breach"
    if clock.running and not clock.breached:
        assert clock.due_ms == calendar.add(clock.since_ms, clock.target_ms - clock.elapsed_ms)
        assert calendar.elapsed(T0, clock.due_ms) >= clock.target_ms, "pauses only ever push the due time out"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 400 * MIN), min_size=1, max_size=8))
def test_however_often_a_timer_fires_each_step_is_announced_at_most_once_and_in_order(instants):
    ticket = Ticket(priority="urgent")
    announced = []
    for instant in sorted(instants):
        event = ticket.fire(Metric.FIRST_REPLY, T0 + instant)
        if event is not None:
            announced.append(getattr(event, "threshold", BREACH))
    assert announced == sorted(set(announced))
    assert (BREACH in announced) == (max(instants) >= 10 * MIN)


def test_a_status_change_from_solved_reopens_and_a_later_reopened_event_changes_nothing():
    ticket = Ticket()
    ticket.status("solved", T0 + 30 * MIN)
    events = ticket.status("open", T0 + 40 * MIN)
    assert kinds(events) == [("SlaClockResumed", "resolution")]
    assert ticket.ticket.status == "open"
    assert ticket.apply(RULES.reopened(ticket.ticket, ticket.clocks, T0 + 41 * MIN)) == []
    assert ticket.view(Metric.RESOLUTION, T0 + 50 * MIN)["elapsed_seconds"] == 40 * 60


def test_a_reopened_clock_that_was_breached_stays_breached():
    ticket = Ticket()
    ticket.fire(Metric.RESOLUTION, T0 + 5 * 60 * MIN)
    ticket.status("solved", T0 + 5 * 60 * MIN)
    [done] = [e for e in ticket.events if isinstance(e, SlaFulfilled) and e.metric == "resolution"]
    assert done.breached
    ticket.apply(RULES.reopened(ticket.ticket, ticket.clocks, T0 + 6 * 60 * MIN))
    assert ticket.view(Metric.RESOLUTION, T0 + 6 * 60 * MIN)["state"] == "breached"
    assert ticket.clocks[Metric.RESOLUTION].next_fire_ms is None, "the breach is not announced again"


# --- a policy change that adds metrics ----------------------------------------------------------

LATE = SlaRules(
    parse_policies(
        textwrap.dedent(
            """\
            calendars:
              office:
                timezone: Europe/Berlin
                hours: {mon-fri: ["09:00-17:00"]}
            policies:
              - name: urgent
                match: {priority: urgent}
                calendar: office
                warnings: [0.5]
                targets:
                  first_reply: 10m
                  next_reply: 20m
                  periodic_update: {target: 30m, pause_on: [on_hold]}
                  resolution: {target: 60m, pause_on: [pending]}
              - name: replies
                match: {priority: normal}
                targets: {next_reply: 1h}
            """
        )
    )
)
"""`low` matches no policy; `normal` has next_reply only; `urgent` has all four metrics."""


def started(events):
    return {event.metric: event for event in events if isinstance(event, SlaClockStarted)}


def test_a_ticket_raised_from_no_policy_starts_first_reply_and_resolution_from_creation_without_paused_time():
    ticket = Ticket("low", rules=LATE)
    assert ticket.clocks == {} and ticket.ticket.policy is None
    ticket.status("pending", T0 + 2 * MIN)
    ticket.status("open", T0 + 6 * MIN)
    events = ticket.raise_to("urgent", T0 + 12 * MIN)
    assert kinds(events) == [("SlaClockStarted", "first_reply"), ("SlaClockStarted", "resolution")]
    assert {e.started_at for e in events} == {datetime(2026, 11, 24, 10, 0, tzinfo=UTC)}, "from creation"
    first, resolution = ticket.clocks[Metric.FIRST_REPLY], ticket.clocks[Metric.RESOLUTION]
    # first_reply pauses on pending and on_hold: 12 min less 4 pending; resolution too pauses on pending.
    assert (first.elapsed_ms, first.due_ms, first.running) == (8 * MIN, T0 + 14 * MIN, True)
    assert (resolution.elapsed_ms, resolution.due_ms) == (8 * MIN, T0 + 64 * MIN)
    assert started(events)["first_reply"].due_at == datetime(2026, 11, 24, 10, 14, tzinfo=UTC)
    # Half of first_reply's 10 min is already used: the warning is due at once, then the breach on time.
    assert first.next_fire_ms == T0 + 12 * MIN
    warning = ticket.fire(Metric.FIRST_REPLY, T0 + 12 * MIN)
    assert isinstance(warning, SlaWarning) and warning.threshold == 0.5
    assert ticket.clocks[Metric.FIRST_REPLY].next_fire_ms == T0 + 14 * MIN


def test_a_newly_applicable_metric_whose_target_is_already_used_up_is_breached_at_the_change_once():
    ticket = Ticket("low", rules=LATE)
    ticket.status("on_hold", T0 + 5 * MIN)
    events = ticket.raise_to("urgent", T0 + 30 * MIN)  # first_reply: 5 of 10 min; resolution: 30 of 60 min
    assert kinds(events) == [
        ("SlaClockStarted", "first_reply"), ("SlaClockPaused", "first_reply"), ("SlaClockStarted", "resolution"),
    ]
    ticket.status("open", T0 + 40 * MIN)
    events = ticket.raise_to("low", T0 + 41 * MIN) + ticket.raise_to("urgent", T0 + 42 * MIN)
    assert events == [], "open clocks keep their policy when none matches, and are not started twice"

    ticket = Ticket("low", rules=LATE)
    events = ticket.raise_to("urgent", T0 + 15 * MIN)
    assert kinds(events)[:2] == [("SlaClockStarted", "first_reply"), ("SlaBreached", "first_reply")]
    assert events[1].breached_at == datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert ticket.view(Metric.FIRST_REPLY, T0 + 15 * MIN)["state"] == "breached"
    assert ticket.fire(Metric.FIRST_REPLY, T0 + 16 * MIN) is None, "announced once"
    [done] = [e for e in ticket.agent_reply(T0 + 20 * MIN) if isinstance(e, SlaFulfilled) and e.metric == "first_reply"]
    assert done.breached and done.elapsed_seconds == 20 * 60


def test_an_answered_ticket_raised_starts_periodic_update_at_the_last_reply_and_no_first_reply():
    ticket = Ticket("normal", rules=LATE)  # next_reply only: it starts with the ticket
    ticket.agent_reply(T0 + 5 * MIN)
    ticket.customer_message(T0 + 10 * MIN)  # next_reply cycle 2
    events = ticket.raise_to("urgent", T0 + 16 * MIN)
    assert set(started(events)) == {"periodic_update", "resolution"}
    assert started(events)["periodic_update"].started_at == datetime(2026, 11, 24, 10, 5, tzinfo=UTC)
    clocks = ticket.clocks
    assert (clocks[Metric.PERIODIC_UPDATE].elapsed_ms, clocks[Metric.RESOLUTION].elapsed_ms) == (11 * MIN, 16 * MIN)
    assert Metric.FIRST_REPLY not in clocks, "the customer has had their first reply"
    next_reply = clocks[Metric.NEXT_REPLY]
    assert (next_reply.policy, next_reply.target_ms, next_reply.elapsed_ms) == ("urgent", 20 * MIN, 6 * MIN)


def test_after_a_solve_and_reopen_resolution_leaves_out_the_solved_time_and_next_reply_waits_on_the_customer():
    ticket = Ticket("low", rules=LATE)
    ticket.status("solved", T0 + 5 * MIN)  # solving fulfils first_reply, had it run
    ticket.status("open", T0 + 10 * MIN)
    ticket.customer_message(T0 + 12 * MIN)
    events = ticket.raise_to("urgent", T0 + 20 * MIN)
    assert set(started(events)) == {"next_reply", "resolution"}
    assert started(events)["next_reply"].started_at == datetime(2026, 11, 24, 10, 12, tzinfo=UTC)
    assert (ticket.clocks[Metric.NEXT_REPLY].elapsed_ms, ticket.clocks[Metric.RESOLUTION].elapsed_ms) == (8 * MIN, 15 * MIN)


def test_a_solved_or_closed_ticket_raised_starts_nothing():
    for final in ("solved", "closed"):
        ticket = Ticket("low", rules=LATE)
        ticket.status(final, T0 + 5 * MIN)
        assert ticket.raise_to("urgent", T0 + 6 * MIN) == []


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 120 * MIN), st.sampled_from(["agent", "customer", "pending", "on_hold", "open", "solved"])),
        max_size=10,
    ),
    st.integers(0, 120 * MIN),
)
def test_a_metric_a_policy_change_adds_starts_as_if_the_policy_had_applied_from_creation(history, tail):
    always, late = Ticket("urgent", rules=LATE), Ticket("low", rules=LATE)
    at = T0
    for gap, step in history:
        at += gap
        for ticket in (always, late):
            if step == "agent":
                ticket.agent_reply(at)
            elif step == "customer":
                ticket.customer_message(at)
                ticket.status("open", at)  # what intake does on a customer's reply to a solved ticket
            else:
                ticket.status(step, at)
    at += tail
    late.raise_to("urgent", at)
    for metric in Metric:
        expected, got = always.clocks.get(metric), late.clocks.get(metric)
        assert (got is not None and got.open) == (expected is not None and expected.open), metric
        if expected is not None and expected.open:
            calendar = LATE.calendar(expected.calendar)
            assert (got.started_ms, got.elapsed(calendar, at), got.running) == (
                expected.started_ms, expected.elapsed(calendar, at), expected.running,
            ), metric


# --- a customer's reply on a pending ticket -----------------------------------------------------


def test_a_customer_reply_on_a_pending_ticket_starts_next_reply_running_and_resumes_the_paused_clocks():
    ticket = Ticket()
    ticket.agent_reply(T0 + 10 * MIN)
    assert kinds(ticket.status("pending", T0 + 20 * MIN)) == [("SlaClockPaused", "resolution")]
    events = ticket.customer_message(T0 + 30 * MIN)
    assert kinds(events) == [("SlaClockResumed", "resolution"), ("SlaClockStarted", "next_reply")]
    assert ticket.ticket.status == "open" and ticket.clocks[Metric.NEXT_REPLY].running
    assert ticket.status("open", T0 + 30 * MIN) == [], "intake's status change right after the reply changes nothing"


def test_a_clock_that_starts_while_its_pause_status_holds_is_started_then_paused():
    ticket = Ticket()
    ticket.agent_reply(T0 + 10 * MIN)
    ticket.status("on_hold", T0 + 20 * MIN)  # a customer's message does not end on_hold
    events = ticket.customer_message(T0 + 30 * MIN)
    assert kinds(events) == [("SlaClockStarted", "next_reply"), ("SlaClockPaused", "next_reply")]
    assert events[0].started_at == events[1].paused_at == datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
    assert events[0].due_at == datetime(2026, 11, 24, 11, 30, tzinfo=UTC), "when it runs out once it runs"
    assert isinstance(events[1], SlaClockPaused) and events[1].elapsed_seconds == 0
    assert ticket.clocks[Metric.NEXT_REPLY].state is ClockState.PAUSED


def test_a_policy_change_pauses_or_resumes_a_clock_as_the_new_targets_pause_rules_say():
    ticket = Ticket()  # normal: resolution pauses on pending only
    ticket.status("on_hold", T0 + 10 * MIN)
    assert ticket.clocks[Metric.RESOLUTION].running

    events = ticket.raise_to("urgent", T0 + 20 * MIN)  # urgent: resolution pauses on pending and on_hold

    assert ("SlaClockPaused", "resolution") in kinds(events)
    assert not ticket.clocks[Metric.RESOLUTION].running
    assert ticket.view(Metric.RESOLUTION, T0 + 50 * MIN)["elapsed_seconds"] == 20 * 60
