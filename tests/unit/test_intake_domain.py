"""Opening and assigning tickets, without any I/O."""

from datetime import UTC, datetime, timedelta

from services.intake.domain import TicketStatus, assign, new_ticket_id, open_ticket
from shared.events import Priority, TicketSubmit

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
    assert len({new_ticket_id(NOW) for _ in range(1000)}) == 1000
