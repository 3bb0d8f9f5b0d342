"""The migration from the first schema: agents and tickets stored by the walking skeleton are brought
up to this release's shape."""

import logging

from services.routing.domain import EscalationPolicy
from services.routing.repository import RoutingTransaction
from shared.mongo import UnitOfWork

log = logging.getLogger(__name__)


async def upgrade_legacy_records(uow: UnitOfWork[RoutingTransaction], policy: EscalationPolicy) -> int:
    """The number of agents and tickets upgraded, in one transaction."""

    async def work(tx: RoutingTransaction) -> int:
        return await tx.agents.upgrade_legacy() + await tx.tickets.upgrade_legacy(policy)

    if upgraded := await uow.run(work):
        log.info("upgraded %d agents and tickets stored by an earlier release", upgraded)
    return upgraded
