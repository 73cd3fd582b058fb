"""A provider's own saved position (``Page.watermark``, Plaid's
``/transactions/sync`` cursor) that the provider no longer takes must start
the pass over, as a refused mid-pass cursor does (README, Sync: "a position
the provider refuses (a saved one, or one handed out in the same pass) starts
the pass over instead of failing it"). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from hub.sync.engine import SyncEngine, create_run
from hub.types import ValidationFailed
from tests.sync_support import Ledger, run, stored


@pytest.fixture
def ledger():
    return Ledger(items=30)


async def _sync(hub, connection, entity):
    new_run, _ = create_run(hub, connection, entity=entity)
    try:
        return await SyncEngine(hub, page_size=10).execute(new_run.id)
    finally:
        await hub.close()


def test_a_saved_provider_position_the_provider_refuses_starts_a_full_pass_instead_of_failing_every_run(
        hub, conn, ledger):
    first = run(_sync(hub, conn, "changes"))
    assert first.status == "succeeded", first.error
    saved = str(len(ledger.log))  # the position after the last page (Page.watermark)
    ledger.put("it_00003", {"name": "changed since"})

    listed_again = []

    def refuse_the_saved_position(call):
        # Plaid answers a /transactions/sync cursor it no longer takes with a 400 (the plugin
        # raises ValidationFailed invalid_cursor): it must be listed again from the start, whose
        # pages hand out positions it takes (the same text here: the ledger's offsets).
        cursor = ledger.calls[-1][1]
        if cursor is None:
            listed_again.append(True)
        if cursor == saved and not listed_again:
            raise ValidationFailed("invalid cursor", code="invalid_cursor")

    ledger.on_call = refuse_the_saved_position
    runs = [run(_sync(hub, conn, "changes")) for _ in range(2)]
    # Every later run fails alike: the connection never syncs this entity again without a
    # full refresh someone has to think of.
    assert [r.status for r in runs] == ["succeeded", "succeeded"], [r.error for r in runs]
    assert stored(hub, conn.id, "changes")["it_00003"]["name"] == "changed since"
