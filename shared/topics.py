"""Kafka topic names: the public, versioned channels of the event contract."""

INBOUND = "support.inbound.v1"
"""Commands from outside systems, such as `ticket.submit`."""
TICKETS = "support.tickets.v1"
ROUTING = "support.routing.v1"
SLA = "support.sla.v1"
AGENTS = "support.agents.v1"
NOTIFICATIONS = "support.notifications.v1"

ALL = (INBOUND, TICKETS, ROUTING, SLA, AGENTS, NOTIFICATIONS)


def dead_letter(topic: str) -> str:
    """Where a consumer of `topic` parks a message it cannot process."""
    return f"{topic}.dlq"


ALL_WITH_DEAD_LETTERS = ALL + tuple(dead_letter(topic) for topic in ALL)
