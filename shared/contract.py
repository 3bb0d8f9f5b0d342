"""The event contract as the AsyncAPI documents show it: who publishes which event types where.

Consumers are documented from the code itself (each service's `Subscription`s). What a service
publishes is decided inside its use cases at run time (`tx.publish(topic, event)`), so it is
declared here, once, for the documents only: `ServiceKit.create_app` registers a documentation
publisher per topic. tests/unit/test_operations_asyncapi.py checks that every event type in
`shared.events` is either published by one service here or is a command from outside.
"""

from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model

from shared import events, topics
from shared.envelope import Envelope

PUBLISHES: dict[str, dict[str, tuple[type[events.Payload], ...]]] = {
    "intake": {
        topics.TICKETS: (
            events.TicketCreated,
            events.TicketMessageAdded,
            events.TicketStatusChanged,
            events.TicketPriorityChanged,
            events.TicketTagsChanged,
            events.TicketSolved,
            events.TicketReopened,
            events.TicketClosed,
            events.TicketCsatReceived,
            events.CustomerNpsReceived,
        ),
    },
    "routing": {
        topics.ROUTING: (
            events.TicketAssigned,
            events.TicketUnassigned,
            events.TicketOffered,
            events.TicketOfferAnswered,
            events.TicketEscalated,
        ),
    },
    "sla": {
        topics.SLA: (
            events.SlaClockStarted,
            events.SlaClockPaused,
            events.SlaClockResumed,
            events.SlaWarning,
            events.SlaBreached,
            events.SlaFulfilled,
        ),
    },
    "notify": {
        topics.NOTIFICATIONS: (events.NotificationSent, events.NotificationFailed, events.NotificationSuppressed),
    },    "insights": {},  # a read model: it publishes nothing
}

FROM_OUTSIDE: dict[str, tuple[type[events.Payload], ...]] = {
    topics.INBOUND: (events.TicketSubmit,),
    topics.AGENTS: (events.AgentStatusChanged,),
}
"""Commands and facts that other systems publish into Switchboard."""


@cache
def event_model(payload: type[events.Payload]) -> type[Envelope]:
    """The CloudEvents envelope of one event type, with `type` fixed to it (the discriminator)."""
    return create_model(
        f"{payload.__name__}Event",
        __base__=Envelope[payload],
        type=(Literal[payload.EVENT_TYPE], Field(description="The event type.")),
    )


def message_schema(payloads: tuple[type[events.Payload], ...]) -> Any:
    """One envelope model, or a union of them told apart by `type`."""
    models = tuple(event_model(payload) for payload in payloads)
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 - a runtime tuple of types
