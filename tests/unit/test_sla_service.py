"""SLA's handlers refuse what they cannot apply, with a reason, before writing anything."""

from collections import defaultdict

import pytest

from services.sla.domain import SlaRules
from services.sla.policy import load_policies
from services.sla.service import Sla
from shared.clock import utc_now
from shared.consumer import RejectedEvent
from shared.envelope import new_event
from shared.events import (
    Priority,
    TicketClosed,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
    TicketStatusChanged,
    TicketTagsChanged,
)
from shared.mongo import Transaction


class _EmptyCollection:
    def find(self, *args, **kwargs):
        return self

    async def to_list(self):
        return []


GHOST = "TKT-never-created"
NOW = utc_now()
ABOUT_A_GHOST = [
    TicketMessageAdded(ticket_id=GHOST, message_id="m1", author_type="customer", public=True, body="hi", added_at=NOW),
    TicketStatusChanged(ticket_id=GHOST, previous_status="open", status="pending", changed_at=NOW),
    TicketPriorityChanged(ticket_id=GHOST, previous_priority=Priority.LOW, priority=Priority.URGENT, changed_at=NOW),
    TicketTagsChanged(ticket_id=GHOST, tags=["vip"], changed_at=NOW),
    TicketSolved(ticket_id=GHOST, solved_at=NOW),
    TicketReopened(ticket_id=GHOST, reopened_at=NOW),
    TicketClosed(ticket_id=GHOST, closed_at=NOW),
]


@pytest.mark.parametrize("payload", ABOUT_A_GHOST, ids=lambda payload: payload.EVENT_TYPE)
async def test_an_event_about_a_ticket_sla_never_saw_created_is_rejected_with_the_reason(payload):
    """The consumer dead-letters a RejectedEvent at once, with this message as `dlq-error`."""
    sla = Sla(uow=None, source="switchboard/sla", rules=SlaRules(load_policies()), metrics=None)
    transaction = Transaction(db=defaultdict(_EmptyCollection), session=None)
    event = new_event(payload, source="switchboard/intake", subject=GHOST)
    with pytest.raises(RejectedEvent, match=f"unknown ticket {GHOST}: SLA has not seen it created"):
        await sla.handlers()[type(payload)](transaction, event)
