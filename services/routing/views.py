"""What routing shows: agents, the queue, one ticket as routing sees it, an agent's open offers, the gauges.

Reads outside any transaction (`UnitOfWork.reads`): they may see a transaction in flight on the
embedded server, never a lock.
"""

from services.routing.domain import Agent, QueueSummary, RoutedTicketState, RoutingConfig, UnknownAgent
from services.routing.metrics import RoutingMetrics
from services.routing.repository import RoutingTransaction
from shared.clock import now_ms, utc_now
from shared.mongo import UnitOfWork


class RoutingViews:
    def __init__(self, uow: UnitOfWork[RoutingTransaction], config: RoutingConfig, metrics: RoutingMetrics) -> None:
        self._uow = uow
        self._config = config
        self._metrics = metrics

    async def get_agent(self, agent_id: str) -> Agent | None:
        return await self._uow.reads.agents.get(agent_id)

    async def list_agents(self, *, after: str | None, limit: int) -> list[Agent]:
        return await self._uow.reads.agents.page(after=after, limit=limit)

    async def queue_summary(self) -> QueueSummary:
        return await self._uow.reads.tickets.summary(now_ms())

    async def ticket_view(self, ticket_id: str) -> dict | None:
        ticket = await self._uow.reads.tickets.get(ticket_id)
        if ticket is None:
            return None
        now, cooldown = utc_now(), self._config.decline_cooldown
        view = {
            "ticket_id": ticket.ticket_id,
            "state": ticket.state.value,
            "priority": ticket.priority.value,
            "urgency": ticket.urgency,
            "sla_warned": ticket.sla_warned,
            "channel": ticket.channel.value,
            "language": ticket.language,
            "required_skills": ticket.required_skills,
            "skill_levels": ticket.skill_levels,
            "assignee_id": ticket.assignee_id,
            "offer_id": ticket.offer_id,
            "escalation_step": ticket.escalation_step,
            "reason": ticket.reason,
            "created_at": ticket.created_at.isoformat(),
        }
        if ticket.offer_expires_at and ticket.state is RoutedTicketState.OFFERED:
            view["offer_expires_at"] = ticket.offer_expires_at.isoformat()
        view["declined_by"] = sorted(ticket.declines)
        view["declined_until"] = {
            agent: (ticket.declines[agent] + cooldown).isoformat() for agent in sorted(ticket.cooling_down(now, cooldown))
        }
        view["requirements"] = self._config.requirements(ticket, now).describe()
        return view

    async def offers_for(self, agent_id: str) -> list[dict]:
        reads = self._uow.reads
        if await reads.agents.get(agent_id) is None:
            raise UnknownAgent(agent_id)
        return [
            {"offer_id": ticket.offer_id, "ticket_id": ticket.ticket_id, "expires_at": ticket.offer_expires_at.isoformat()}
            for ticket in await reads.tickets.offers_of(agent_id)
        ]

    async def refresh_gauges(self) -> None:
        depth = await self._uow.reads.tickets.depth_by_priority()
        for priority, count in depth.items():
            self._metrics.queue_depth.labels(priority=priority).set(count)
