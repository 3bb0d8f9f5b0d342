"""Use-case decisions that are taken before any I/O (so they need no database)."""

import uuid

import pytest

from services.intake.service import Intake
from shared.consumer import RejectedEvent
from shared.envelope import new_event
from shared.events import TicketSubmit


async def test_a_submit_command_with_metadata_that_does_not_fit_its_channel_is_rejected_with_the_reason():
    command = new_event(
        TicketSubmit.model_validate({"channel": "social", "customer": {"id": "c-1"}, "subject": "s", "body": "b",
                                     "metadata": {"caller_number": "+4930"}}),
        source="crm",
        subject=str(uuid.uuid4()),
    )
    with pytest.raises(RejectedEvent, match="metadata.network: Field required"):
        await Intake(uow=None, source="switchboard/intake").on_submit_command(None, command)


def test_list_cursors_round_trip_and_anything_else_is_refused():
    from services.intake.repository import InvalidCursor, decode_cursor, encode_cursor

    assert decode_cursor(encode_cursor("TKT-1a20d550b1a-2040dd")) == "TKT-1a20d550b1a-2040dd"
    for forged in ("%%%", "/w", "abc", encode_cursor("not-a-ticket")):
        with pytest.raises(InvalidCursor):
            decode_cursor(forged)
