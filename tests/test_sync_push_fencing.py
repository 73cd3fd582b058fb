"""A run that lost the connection's lease (taken for gone and put back in the
queue, its next execution holding the lease) sends nothing more: the lease is
checked as a push is marked on its way, before the call, or two executions
would send the same create to a provider without idempotent creates (two
records there). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlmodel import select

from hub.models import SyncConfig, SyncLease, SyncRecord
from hub.sync import stored as stored_service
from hub.sync.engine import SyncEngine, create_run
from hub.sync.leases import Lease, LeaseLost, new_owner
from tests.sync_support import Ledger, run


@pytest.fixture
def ledger():
    return Ledger(items=2)  # creates without an idempotency key (ProviderInfo.idempotent_creates False)


def test_a_run_that_lost_its_lease_does_not_send_its_push(hub, conn, ledger):
    first, _ = create_run(hub, conn, entity="items")
    assert run(SyncEngine(hub).execute(first.id)).status == "succeeded"
    with hub.session() as session:
        config = session.exec(select(SyncConfig).where(SyncConfig.connection_id == conn.id)).one()
        config.direction = "both"
        session.add(config)
        session.commit()
        session.refresh(config)
    stored_service.write_record(hub, conn, config, None, {"name": "new"}, mapped=False)
    with hub.session() as session:
        pending = session.exec(select(SyncRecord).where(SyncRecord.connection_id == conn.id,
                                                        SyncRecord.local_op == "create")).one()

    push, _ = create_run(hub, conn, entity="items", direction="push")
    stale = Lease(hub, conn.id, new_owner(), push.id, 60)
    assert stale.try_acquire()
    # Taken over meanwhile (its holder taken for gone: the run requeued and executed elsewhere).
    with hub.session() as session:
        session.execute(sa.update(SyncLease).where(SyncLease.connection_id == conn.id).values(owner="elsewhere:1:x"))
        session.commit()
    creates_before = len(ledger.items)
    provider = hub.provider("ledger")
    engine = SyncEngine(hub)

    async def stale_holder_pushes():
        try:
            return await engine._push_one(push.id, config, provider, provider.schema("items"),
                                          hub.context(provider, conn), stale, pending)
        finally:
            await hub.close()

    with pytest.raises(LeaseLost):
        asyncio.run(stale_holder_pushes())
    assert len(ledger.items) == creates_before, "the holder that lost the lease created the record at the provider"
