"""The one-off migration from the first schema: agents and tickets stored by the walking skeleton are
brought up to this release's shape (`python -m services.routing migrate`, see the README).

Run once, before this release serves a database the skeleton wrote; it is idempotent, so running it
again changes nothing. The service itself no longer looks for such records at start.
"""

from services.routing.domain import EscalationPolicy
from services.routing.repository import RoutingTransaction
from services.routing.settings import RoutingSettings
from shared.app import ServiceKit
from shared.mongo import UnitOfWork


async def upgrade_legacy_records(uow: UnitOfWork[RoutingTransaction], policy: EscalationPolicy) -> int:
    """The number of agents and tickets upgraded, in one transaction."""

    async def work(tx: RoutingTransaction) -> int:
        return await tx.agents.upgrade_legacy() + await tx.tickets.upgrade_legacy(policy)

    return await uow.run(work)


async def migrate(settings: RoutingSettings) -> int:
    """Upgrade the database `settings` name, on the unit of work the service itself uses."""
    kit = ServiceKit.create("routing", settings, RoutingTransaction)
    try:
        return await upgrade_legacy_records(kit.uow, settings.escalation_policy())
    finally:
        await kit.mongo.close()
