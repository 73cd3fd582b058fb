"""``settle_conflict`` (hub/sync/store.py) tells the app of a record whose
pending change the provider's version holds when the app's view of it
changes otherwise too (``_same_view``). ``_same_view`` ignores the entity's
top-level read-only names at every depth (``_alike``'s ``nested`` defaults
to ``ignored``): a Shopify order's ``name`` (``#1001``) is read-only, its
``shipping_address.name`` is not, and a change of the latter made at the
provider alongside the tenant's is never told. And every read-only field is
ignored, not only the stamp the provider puts on the hub's own write
(``updated_at``): an order paid at Shopify (``financial_status``, read-only)
while the tenant's note was pending is never told either, where a pull of
the same version without a pending change tells it (``apply_records``)."""

from __future__ import annotations

import pytest

from hub.models import SyncRecord, utcnow
from hub.sync.store import PENDING, Changes, record_hash, settle_conflict
from hub.types import EntityField, EntitySchema
from tests.sync_support import Ledger

#: As Shopify's orders (plugins/shopify/hub_shopify/fields.py): a read-only top-level ``name``,
#: a writable ``shipping_address`` whose ``name`` is the addressee's.
ORDERS = EntitySchema("orders", "Orders", (
    EntityField("id", readonly=True), EntityField("name", readonly=True), EntityField("note"),
    EntityField("financial_status", readonly=True),
    EntityField("updated_at", type="datetime", readonly=True),
    EntityField("shipping_address", type="object", fields=(EntityField("name"), EntityField("city")))))

ORDER = {"id": "1001", "name": "#1001", "note": "", "financial_status": "pending", "updated_at": "2026-01-01T00:00:00Z",
         "shipping_address": {"name": "Ada Lovelace", "city": "London"}}


@pytest.fixture
def ledger():
    return Ledger()


def _settle(hub, conn, remote: dict) -> Changes:
    changes = Changes()
    with hub.session() as session:
        row = SyncRecord(connection_id=conn.id, entity="orders", remote_id="1001", data=ORDER,
                         content_hash=record_hash(ORDER), local_data={"note": "gift wrap"}, local_op="update",
                         local_version=1, push_status=PENDING)
        session.add(row)
        session.flush()
        conflict = settle_conflict(session, row.id, "review", remote, record_hash(remote), None, utcnow(), ORDERS,
                                   changes)
        session.commit()
    assert conflict is False  # the provider holds the tenant's note: no conflict
    return changes


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_nested_field_named_like_a_read_only_top_level_one_is_told_when_the_provider_changed_it(hub, conn):
    # The shop changed the addressee at Shopify while the tenant's note was on its way.
    remote = {**ORDER, "note": "gift wrap", "updated_at": "2026-01-02T00:00:00Z",
              "shipping_address": {"name": "Charles Babbage", "city": "London"}}
    changes = _settle(hub, conn, remote)
    # Fails: [] -- shipping_address.name is compared as if it were the order's read-only name.
    assert changes.updated == ["1001"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_read_only_field_the_provider_changed_is_told(hub, conn):
    # The order was paid at Shopify while the tenant's note was on its way.
    remote = {**ORDER, "note": "gift wrap", "financial_status": "paid", "updated_at": "2026-01-02T00:00:00Z"}
    changes = _settle(hub, conn, remote)
    # Fails: [] -- _same_view drops every read-only field, not only the provider's stamp (updated_at).
    assert changes.updated == ["1001"]
