"""A record a full pass swept as deleted (no longer listed) stays deleted when
the provider's deletion event for it comes after, and then an older update
event is delivered late: the deletion's time is kept. Runs on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from hub.sync.engine import SyncEngine, create_run
from tests.sync_support import Ledger, run, stored
from tests.test_sync_interleavings import webhook


@pytest.fixture
def ledger():
    return Ledger(items=5)


def _full_pass(hub, connection):
    new_run, _ = create_run(hub, connection, entity="items", full_refresh=True)
    return run(SyncEngine(hub).execute(new_run.id))


def _swept_then_events_late(hub, conn, ledger) -> None:
    assert _full_pass(hub, conn).status == "succeeded"
    # At the provider: it_00001 changed (its event's delivery fails for now), then deleted.
    changed = dict(ledger.put("it_00001", {"name": "changed before its deletion"}))
    ledger.remove("it_00001")
    deleted_at = datetime.fromisoformat(changed["updated_at"]) + timedelta(seconds=1)
    # The next full pass no longer lists it: marked deleted.
    assert _full_pass(hub, conn).status == "succeeded"
    assert "it_00001" not in stored(hub, conn.id, "items")
    # The provider retries its deliveries, in any order: the deletion first, then the
    # older update (Stripe retries failed deliveries for days, unordered).
    webhook(hub, conn, "deleted", record_id="it_00001", occurred_at=deleted_at)
    webhook(hub, conn, "updated", record=changed, occurred_at=datetime.fromisoformat(changed["updated_at"]))


def test_a_late_update_event_older_than_the_deletion_does_not_bring_a_swept_record_back(hub, conn, ledger):
    _swept_then_events_late(hub, conn, ledger)
    assert "it_00001" not in stored(hub, conn.id, "items"), \
        "a record deleted at the provider is live again in the hub (until the next full pass)"


def test_a_record_revived_so_stays_live_through_later_incremental_passes(hub, conn, ledger):
    _swept_then_events_late(hub, conn, ledger)
    new_run, _ = create_run(hub, conn, entity="items")  # a scheduled run: incremental, by the watermark
    assert run(SyncEngine(hub).execute(new_run.id)).status == "succeeded"
    assert "it_00001" not in stored(hub, conn.id, "items"), "only a full refresh would ever mark it deleted again"
