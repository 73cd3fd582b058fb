"""Sync passes over Plaid's listings when they change under the pass
(through the engine, against the fake over HTTP)."""

from __future__ import annotations

import hub_plaid
from sqlmodel import select

from hub.models import Connection, SyncRecord
from hub.sync.engine import SyncEngine, create_run


def _rows(hub, connection_id, entity="transactions"):
    with hub.session() as session:
        return {r.remote_id: r for r in session.exec(select(SyncRecord).where(
            SyncRecord.connection_id == connection_id, SyncRecord.entity == entity))}


def _pull(client, hub, connection, entity="transactions", full_refresh=False, page_size=25):
    run, _ = create_run(hub, connection, entity=entity, full_refresh=full_refresh, direction="pull")
    return client.portal.call(SyncEngine(hub, page_size=page_size).execute, run.id)


def _connection(hub, connection):
    with hub.session() as session:
        return session.get(Connection, connection["id"])


def _remove_first_delivered_before_call(monkeypatch, fake, item_id, on_call=3):
    """Before the ``on_call``-th /transactions/sync request, Plaid removes the
    first transaction the run's first page added. Returns its id (in a list)."""
    calls, first, gone = [], [], []
    sync = hub_plaid._sync

    async def removing(ctx, cursor, count):
        calls.append(cursor)
        if len(calls) == on_call:
            gone.append(first[0]["added"][0]["transaction_id"])
            fake.remove_transaction(item_id, gone[0])
        body = await sync(ctx, cursor, count)
        if len(calls) == 1:
            first.append(body)
        return body

    monkeypatch.setattr(hub_plaid, "_sync", removing)
    return gone


def _live(hub, connection_id, entity="transactions"):
    return {k for k, r in _rows(hub, connection_id, entity).items() if not r.deleted}


def test_a_transaction_removed_while_a_first_pass_pages_on_is_marked_deleted(client, auth, fake, connection,
                                                                              hub_app, monkeypatch):
    """Restarted from its start cursor, the run gives the removed transaction
    neither as added nor as removed: the pass saw it on its first page, so its
    sweep spared it, and every later (incremental) pass too."""
    hub, item = hub_app.state.hub, fake.item()
    stored = _connection(hub, connection)
    gone = _remove_first_delivered_before_call(monkeypatch, fake, item.item_id)
    assert _pull(client, hub, stored).status == "succeeded"
    [removed] = gone
    assert fake.errors["TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"] == 1
    assert _live(hub, stored.id) == set(item.transactions) and removed not in item.transactions


def test_a_transaction_removed_while_an_incremental_pass_pages_on_is_marked_deleted(client, auth, fake, connection,
                                                                                    hub_app, monkeypatch):
    hub, item = hub_app.state.hub, fake.item()
    stored = _connection(hub, connection)
    assert _pull(client, hub, stored, page_size=500).status == "succeeded"  # the watermark stored
    fake.add_transactions(item.item_id, 60)
    gone = _remove_first_delivered_before_call(monkeypatch, fake, item.item_id)
    assert _pull(client, hub, stored).status == "succeeded"  # from the watermark: starts over from the first
    assert gone and _live(hub, stored.id) == set(item.transactions)
    monkeypatch.undo()
    assert _pull(client, hub, stored).status == "succeeded"  # and the stored watermark still resumes
    assert _live(hub, stored.id) == set(item.transactions)


def test_an_institution_removed_during_a_pass_gets_no_listed_one_marked_deleted(client, auth, fake, connection,
                                                                                hub_app, monkeypatch):
    """Paged by offset, the institution crossing the page boundary was never
    fetched once one before it was removed, and the sweep marked it deleted."""
    hub = hub_app.state.hub
    stored = _connection(hub, connection)
    assert _pull(client, hub, stored, entity="institutions", page_size=10).status == "succeeded"
    listed = [i for i, v in fake.institutions.items() if "US" in v["country_codes"]]
    offsets = []
    post = hub_plaid._post

    async def removing(ctx, path, **body):
        if path == "/institutions/get":
            offsets.append(body["offset"])
            if len(offsets) == 2:  # one of page 1 removed before page 2 is asked for
                del fake.institutions[listed[0]]
        return await post(ctx, path, **body)

    monkeypatch.setattr(hub_plaid, "_post", removing)
    result = _pull(client, hub, stored, entity="institutions", page_size=10)
    assert result.status == "succeeded", result.error
    assert _live(hub, stored.id, "institutions") == set(listed[1:])
    assert offsets[:2] == [0, 9] and offsets[2] == 0  # the moved list refused, the pass started over
