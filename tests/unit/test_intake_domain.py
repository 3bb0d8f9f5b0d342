"""Opening and assigning tickets, without any I/O."""

import re
from datetime import UTC, datetime, timedelta

from services.intake.domain import TICKET_ID_PATTERN, assign, new_ticket_id, open_ticket
from shared.events import Priority, TicketStatus, TicketSubmit

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def submission(**overrides) -> TicketSubmit:
    return TicketSubmit.model_validate(
        {"channel": "web", "customer": {"email": "ann@example.com"}, "subject": "Help", "body": "Please", **overrides}
    )


def test_a_new_ticket_is_new_with_normal_priority_unless_the_caller_says_otherwise():
    ticket = open_ticket(submission(), ticket_id="TKT-1", now=NOW)
    urgent = open_ticket(submission(priority="urgent"), ticket_id="TKT-2", now=NOW)

    assert (ticket.status, ticket.priority, ticket.assignee_id) == (TicketStatus.NEW, Priority.NORMAL, None)
    assert urgent.priority is Priority.URGENT


def test_required_skills_are_deduplicated_and_sorted():
    ticket = open_ticket(submission(required_skills=["legal", "billing", "legal"]), ticket_id="TKT-1", now=NOW)
    assert ticket.required_skills == ["billing", "legal"]


def test_assignment_opens_a_new_ticket_and_bumps_its_version():
    ticket = open_ticket(submission(), ticket_id="TKT-1", now=NOW)
    later = NOW + timedelta(seconds=3)

    assigned = assign(ticket, "ada", later)

    assert (assigned.assignee_id, assigned.status, assigned.version) == ("ada", TicketStatus.OPEN, 2)
    assert assigned.updated_at == later and assigned.created_at == NOW


def test_assignment_leaves_a_ticket_that_moved_on_in_its_status():
    pending = open_ticket(submission(), ticket_id="TKT-1", now=NOW).model_copy(update={"status": TicketStatus.PENDING})
    assert assign(pending, "ada", NOW).status is TicketStatus.PENDING


def test_ticket_ids_sort_by_creation_time_and_do_not_repeat():
    earlier, later = new_ticket_id(NOW), new_ticket_id(NOW + timedelta(milliseconds=5))
    assert earlier.startswith("TKT-") and earlier < later
    assert re.fullmatch(TICKET_ID_PATTERN, earlier) and re.fullmatch(TICKET_ID_PATTERN, "TKT-19ab3c4d5e6-8f2a1c")
    assert len({new_ticket_id(NOW) for _ in range(1000)}) == 1000


# --- the lifecycle -----------------------------------------------------------------------------

import pytest  # noqa: E402

from services.intake.domain import (  # noqa: E402
    ALLOWED_TRANSITIONS,
    InvalidSubmission,
    InvalidTransition,
    Message,
    NotRatable,
    TicketClosedForReplies,
    add_message,
    channel_metadata,
    close_if_due,
    edit,
    needs_follow_up,
    rate,
    ticket_reference_in,
    unassign,
)
from shared.events import (  # noqa: E402
    AuthorType,
    Channel,
    TicketClosed,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
    TicketStatusChanged,
    TicketTagsChanged,
)

WINDOW = timedelta(days=7)


def ticket_in(status: TicketStatus, **fields):
    return open_ticket(submission(), ticket_id="TKT-1", now=NOW).model_copy(update={"status": status, **fields})


def message(author: str = "customer", public: bool = True) -> Message:
    return Message(id="MSG-1", ticket_id="TKT-1", author_type=author, body="Any news?", public=public, created_at=NOW)


def test_status_changes_follow_the_lifecycle_and_publish_one_fact_each():
    change = edit(ticket_in(TicketStatus.OPEN), NOW, status=TicketStatus.PENDING)

    assert change.ticket.status is TicketStatus.PENDING and change.ticket.version == 2
    [fact] = change.facts
    assert isinstance(fact, TicketStatusChanged) and (fact.previous_status, fact.status) == ("open", "pending")


def test_solving_publishes_solved_with_the_assignee_and_starts_the_reopen_window():
    change = edit(ticket_in(TicketStatus.OPEN, assignee_id="ada"), NOW, status=TicketStatus.SOLVED)

    assert [type(f) for f in change.facts] == [TicketStatusChanged, TicketSolved]
    assert change.facts[1].assignee_id == "ada" and change.ticket.solved_at == NOW


def test_reopening_and_closing_publish_their_own_facts():
    solved = ticket_in(TicketStatus.SOLVED, solved_at=NOW, assignee_id="ada")

    reopened = edit(solved, NOW, status=TicketStatus.OPEN)
    closed = edit(solved, NOW, status=TicketStatus.CLOSED)

    assert [type(f) for f in reopened.facts] == [TicketStatusChanged, TicketReopened]
    assert reopened.facts[1].previous_assignee_id == "ada" and reopened.ticket.solved_at is None
    assert [type(f) for f in closed.facts] == [TicketStatusChanged, TicketClosed]


@pytest.mark.parametrize(("current", "target"), [("new", "closed"), ("open", "new"), ("closed", "open"), ("pending", "closed")])
def test_an_invalid_transition_names_the_allowed_ones(current, target):
    with pytest.raises(InvalidTransition) as refused:
        edit(ticket_in(TicketStatus(current)), NOW, status=TicketStatus(target))

    assert refused.value.allowed == [s.value for s in ALLOWED_TRANSITIONS[TicketStatus(current)]]
    assert f"from {current} to {target}" in str(refused.value)


def test_priority_and_tags_changes_publish_facts_and_nothing_changed_publishes_nothing():
    ticket = ticket_in(TicketStatus.OPEN, tags=["billing"])

    change = edit(ticket, NOW, priority=Priority.URGENT, tags=[" VIP ", "billing", "vip"])
    same = edit(ticket, NOW, status=TicketStatus.OPEN, priority=Priority.NORMAL, tags=["billing"])

    assert [type(f) for f in change.facts] == [TicketPriorityChanged, TicketTagsChanged]
    assert change.ticket.tags == ["billing", "vip"] and change.ticket.version == 2
    assert same.facts == [] and same.ticket is ticket


def test_a_customer_reply_wakes_a_pending_ticket_and_reopens_a_recently_solved_one():
    pending = add_message(ticket_in(TicketStatus.PENDING), message(), NOW, WINDOW)
    solved = add_message(ticket_in(TicketStatus.SOLVED, solved_at=NOW - timedelta(days=1)), message(), NOW, WINDOW)

    assert pending.ticket.status is TicketStatus.OPEN
    assert [type(f) for f in pending.facts] == [TicketMessageAdded, TicketStatusChanged]
    assert solved.ticket.status is TicketStatus.OPEN
    assert [type(f) for f in solved.facts] == [TicketMessageAdded, TicketStatusChanged, TicketReopened]


def test_an_agent_note_leaves_the_status_alone():
    change = add_message(ticket_in(TicketStatus.PENDING), message("agent", public=False), NOW, WINDOW)

    assert change.ticket.status is TicketStatus.PENDING
    [added] = change.facts
    assert added.public is False and added.author_type is AuthorType.AGENT


def test_a_late_customer_reply_needs_a_follow_up_and_a_closed_ticket_takes_no_replies():
    long_solved = ticket_in(TicketStatus.SOLVED, solved_at=NOW - WINDOW - timedelta(seconds=1))
    closed = ticket_in(TicketStatus.CLOSED)

    assert needs_follow_up(long_solved, AuthorType.CUSTOMER, NOW, WINDOW)
    assert needs_follow_up(closed, AuthorType.CUSTOMER, NOW, WINDOW)
    assert not needs_follow_up(long_solved, AuthorType.AGENT, NOW, WINDOW)
    with pytest.raises(TicketClosedForReplies):
        add_message(closed, message("agent"), NOW, WINDOW)


def test_solved_tickets_close_once_the_window_is_over():
    due = ticket_in(TicketStatus.SOLVED, solved_at=NOW - WINDOW - timedelta(minutes=1))
    recent = ticket_in(TicketStatus.SOLVED, solved_at=NOW - timedelta(days=1))

    assert close_if_due(due, NOW, WINDOW).ticket.status is TicketStatus.CLOSED
    assert close_if_due(recent, NOW, WINDOW).facts == []


def test_a_stale_unassignment_is_ignored_and_a_current_one_keeps_the_status():
    assigned = ticket_in(TicketStatus.OPEN, assignee_id="ada")

    assert unassign(assigned, "bob", NOW) is assigned
    cleared = unassign(assigned, "ada", NOW)
    assert (cleared.assignee_id, cleared.status, cleared.version) == (None, TicketStatus.OPEN, 2)


def test_only_a_solved_ticket_is_rated_and_a_later_rating_replaces_the_first():
    solved = ticket_in(TicketStatus.SOLVED, solved_at=NOW)

    rated = rate(rate(solved, 2, None, NOW), 5, "great", NOW)

    assert (rated.csat.score, rated.csat.comment) == (5, "great")
    with pytest.raises(NotRatable):
        rate(ticket_in(TicketStatus.OPEN), 5, None, NOW)


def test_channel_metadata_is_checked_against_its_channel_kind():
    call = channel_metadata(Channel.PHONE, {"caller_number": "+49301234", "duration_seconds": 95})

    assert call == {"caller_number": "+49301234", "duration_seconds": 95, "direction": "inbound", "voicemail": False}
    with pytest.raises(InvalidSubmission, match="metadata.network"):
        channel_metadata(Channel.SOCIAL, {"handle": "@ann"})
    with pytest.raises(InvalidSubmission, match="metadata.caller_number"):
        channel_metadata(Channel.CHAT, {"caller_number": "+49301234"})


def test_the_ticket_reference_in_a_subject_threads_replies():
    assert ticket_reference_in("Re: [TKT-19ab3c4d5e6-8f2a1c] Refund") == "TKT-19ab3c4d5e6-8f2a1c"
    assert ticket_reference_in("Refund for TKT-19ab3c4d5e6-8f2a1c") is None


def test_sla_events_project_a_summary_of_each_clock():
    from services.intake.domain import project_sla
    from shared.events import SlaBreached, SlaClockPaused, SlaClockStarted, SlaFulfilled

    due = NOW + timedelta(hours=1)
    base = {"ticket_id": "TKT-1", "metric": "first_reply", "policy": "urgent", "target_seconds": 3600}
    started = project_sla(None, SlaClockStarted(**base, started_at=NOW, due_at=due))
    paused = project_sla(started, SlaClockPaused(**base, elapsed_seconds=60, paused_at=NOW))
    breached = project_sla(started, SlaBreached(**base, due_at=due, breached_at=due))
    fulfilled = project_sla(breached, SlaFulfilled(**base, elapsed_seconds=4000, breached=True, fulfilled_at=due))

    assert (started.state, started.due_at, started.policy, started.breached) == ("running", due, "urgent", False)
    assert paused.state == "paused"
    assert breached.breached and breached.state == "running"
    assert (fulfilled.state, fulfilled.breached) == ("fulfilled", True)
