"""Policy reload: after the policy file changed, bring the clocks that already run under the new policies.

At start, the digest of the policies in force is compared with the one the clocks were last
reconciled with (a document in SLA's `stats`). When they differ, the replica holding the
`sla-timers` lease walks the tickets that are not closed in id order, in batches of
`SLA_POLICY_RELOAD_BATCH_SIZE`, and applies each as a priority change would (`Sla.reconcile`).
Each batch writes its clocks, its events (outbox) and the progress in one transaction, so a crash
loses at most the batch under way, which the next holder does again from the recorded progress.
The service serves meanwhile: events and timers use the new policies at once.
"""

import asyncio
import logging
from dataclasses import replace

from services.sla.repository import ReloadProgress, SlaTransaction
from services.sla.service import ConcurrentChange, Sla
from shared.mongo import Lease, UnitOfWork

log = logging.getLogger(__name__)


class PolicyReload:
    def __init__(self, uow: UnitOfWork[SlaTransaction], sla: Sla, lease: Lease, batch_size: int, lease_seconds: float) -> None:
        self._uow = uow
        self._sla = sla
        self._lease = lease
        self._digest = sla.rules.policies.digest
        self._batch_size = batch_size
        self._wait_seconds = lease_seconds / 3

    async def run(self) -> None:
        """Until the clocks are reconciled with the policies in force, by this replica or the lease holder."""
        while True:
            try:
                if await self._reconciled():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("SLA policy reload failed; retrying")
            await asyncio.sleep(self._wait_seconds)

    async def _reconciled(self) -> bool:
        repository = self._uow.reads.clocks
        progress = await repository.reload_progress()
        if progress is not None and progress.digest == self._digest and progress.done:
            return True
        if not await self._lease.acquire():
            return False  # the holder reconciles; a replica with an older file must not undo it
        if progress is None or progress.digest != self._digest:
            await repository.begin_reload(self._digest)
        while await self._lease.acquire():
            try:
                progress = await self._uow.run(self._batch)
            except ConcurrentChange:
                continue  # a ticket event or a timer changed a clock of the batch first: the batch again
            except _Superseded:
                return False
            if progress.done:
                log.info(
                    "SLA clocks reconciled with the changed policy file: %d tickets, %d clocks changed, %d events",
                    progress.tickets,
                    progress.clocks,
                    progress.events,
                )
                return True
        return False

    async def _batch(self, tx: SlaTransaction) -> ReloadProgress:
        was = await tx.clocks.reload_progress()
        if was is None or was.digest != self._digest:
            raise _Superseded
        batch = await self._sla.reconcile(tx, was.after, self._batch_size)
        now = replace(
            was,
            after=batch.after,
            done=batch.tickets < self._batch_size,
            tickets=was.tickets + batch.tickets,
            clocks=was.clocks + batch.clocks,
            events=was.events + batch.events,
        )
        if not await tx.clocks.advance_reload(was, now):
            raise _Superseded  # aborts the batch's clock writes too
        return now


class _Superseded(Exception):
    """Another replica started a reload of other policies, or moved this one on, since the batch began."""
