"""The rules file: which event owes which audience which kind of message (YAML, checked at start).

```yaml
version: 1
rules:
  - kind: csat_survey                 # names the templates: csat_survey.<locale>.{subject,txt,html}.j2
    event: support.ticket.solved.v1   # the CloudEvents type that triggers it
    to: [customer]                    # customer | agent | assignee | team | supervisors
    when: {}                          # equality on the event's data fields, e.g. {public: true}
    delay_seconds: 86400              # send this long after the event (durable)
    transactional: false              # true: customers cannot opt out of it
    urgent: false                     # true: ignores quiet hours and the rate limit
    opt_in: false                     # true: only to customers who opted in to this kind
    wait_for_sla: null                # e.g. first_reply: hold until that SLA clock started (or the timeout)
    wait_for_sla_seconds: 5
    cancel_on: [support.ticket.reopened.v1]  # events that cancel it while still pending
    once_per_customer_seconds: null   # e.g. 7776000: at most one of this kind per customer every 90 days
```

A file that does not parse, names an unknown event, audience or field, or repeats a kind is
refused with the reason, and notify does not start.
"""

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.notify.domain import DIGEST_KIND
from shared import rules_file, topics
from shared.events import (
    Payload,
    SlaBreached,
    SlaClockStarted,
    SlaWarning,
    TicketAssigned,
    TicketClosed,
    TicketCreated,
    TicketEscalated,
    TicketMessageAdded,
    TicketPriorityChanged,
    TicketReopened,
    TicketSolved,
    TicketUnassigned,
)

RULES_FILE = Path(__file__).parent / "rules.yaml"

SUPPORTED_EVENTS: dict[str, tuple[str, type[Payload]]] = {
    payload.EVENT_TYPE: (topic, payload)
    for topic, payload in (
        (topics.TICKETS, TicketCreated),
        (topics.TICKETS, TicketMessageAdded),
        (topics.TICKETS, TicketSolved),
        (topics.TICKETS, TicketReopened),
        (topics.TICKETS, TicketClosed),
        (topics.TICKETS, TicketPriorityChanged),
        (topics.ROUTING, TicketAssigned),
        (topics.ROUTING, TicketUnassigned),
        (topics.ROUTING, TicketEscalated),
        (topics.SLA, SlaClockStarted),
        (topics.SLA, SlaWarning),
        (topics.SLA, SlaBreached),
    )
}
"""What notify can react to, and the topic each arrives on."""

TRACKED_EVENTS = (TicketCreated, TicketAssigned, TicketUnassigned, TicketReopened, TicketPriorityChanged, SlaClockStarted)
"""Events notify always consumes, to keep its view of tickets (customer, assignee, SLA due times)."""


class Audience(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    """The agent the event names (`agent_id`), e.g. the one a ticket was assigned to."""
    ASSIGNEE = "assignee"
    """The ticket's current assignee, as notify last heard from routing."""
    TEAM = "team"
    SUPERVISORS = "supervisors"


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    event: str
    to: list[Audience] = Field(min_length=1)
    when: dict[str, str | bool | int | float | None] = Field(default_factory=dict)
    delay_seconds: float = Field(default=0, ge=0)
    transactional: bool = False
    urgent: bool = False
    opt_in: bool = False
    wait_for_sla: str | None = None
    wait_for_sla_seconds: float = Field(default=5, ge=0)
    cancel_on: list[str] = Field(default_factory=list)
    once_per_customer_seconds: float | None = Field(default=None, gt=0)
    """At most one delivery of this kind per customer within this long (by due time): a relationship survey."""

    @model_validator(mode="after")
    def _consistent(self) -> "Rule":
        if self.kind == DIGEST_KIND:
            raise ValueError(f"kind '{DIGEST_KIND}' is reserved for rate-limit digests")
        for event_type in (self.event, *self.cancel_on):
            if event_type not in SUPPORTED_EVENTS:
                raise ValueError(f"unknown event type '{event_type}'; known: {', '.join(sorted(SUPPORTED_EVENTS))}")
        payload = self.payload
        if unknown := sorted(set(self.when) - set(payload.model_fields)):
            raise ValueError(f"'when' names fields {self.event} does not have: {', '.join(unknown)}")
        if Audience.AGENT in self.to and "agent_id" not in payload.model_fields:
            raise ValueError(f"audience 'agent' needs an event naming an agent; {self.event} does not")
        if self.transactional and self.opt_in:
            raise ValueError("a rule cannot be both transactional and opt-in")
        if self.once_per_customer_seconds is not None and self.to != [Audience.CUSTOMER]:
            raise ValueError("once_per_customer_seconds needs 'to: [customer]' alone")
        return self

    @property
    def payload(self) -> type[Payload]:
        return SUPPORTED_EVENTS[self.event][1]

    def matches(self, data: Payload) -> bool:
        return all(_plain(getattr(data, name, None)) == value for name, value in self.when.items())


def _plain(value: object) -> object:
    return value.value if isinstance(value, StrEnum) else value


class RuleBook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_kinds(self) -> "RuleBook":
        kinds = [rule.kind for rule in self.rules]
        if duplicates := sorted({kind for kind in kinds if kinds.count(kind) > 1}):
            raise ValueError(f"each kind may have one rule; repeated: {', '.join(duplicates)}")
        return self

    @property
    def kinds(self) -> list[str]:
        return [rule.kind for rule in self.rules]

    def for_event(self, event_type: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.event == event_type]

    def cancelled_by(self, event_type: str) -> list[str]:
        return [rule.kind for rule in self.rules if event_type in rule.cancel_on]

    def of_kind(self, kind: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.kind == kind), None)

    def once_per_customer(self, event_type: str) -> list[Rule]:
        """The rules limited per customer that `event_type` plans or cancels: whose limits its batch reads."""
        return [
            rule
            for rule in self.rules
            if rule.once_per_customer_seconds and event_type in (rule.event, *rule.cancel_on)
        ]

    def event_types(self) -> set[str]:
        wanted = {payload.EVENT_TYPE for payload in TRACKED_EVENTS}
        for rule in self.rules:
            wanted.update((rule.event, *rule.cancel_on))
        return wanted


def load_rules(path: Path = RULES_FILE) -> RuleBook:
    """The rules at `path`; a wrong file is refused with its line (`shared.rules_file.RulesFileError`)."""
    return rules_file.load(RuleBook, path)
