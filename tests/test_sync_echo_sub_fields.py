"""A push sends an array whole without its items' read-only sub-fields, and
still knows the provider's echo of it for its own write: the tenant changes
a variant's price twice, the second time while the first push is on its
way, and the echo of the first arrives; neither change is lost, and no
conflict is made of the hub's own write. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from hub import hookimpl
from hub.types import EntityField, EntitySchema
from tests.sync_support import ledger_hub, make_connection
from tests.test_sync_interleavings import Interleaving, Tenant, conflicts, row, sync, webhook

VARIANT = (EntityField("id", type="integer", readonly=True), EntityField("product_id", type="integer", readonly=True),
           EntityField("price"))


class Products(Interleaving):
    @hookimpl
    def entity_schemas(self):
        fields = (EntityField("id", readonly=True), EntityField("name"),
                  EntityField("variants", type="array", fields=VARIANT),
                  EntityField("updated_at", type="datetime", readonly=True))
        return [EntitySchema("items", "Items", fields, updated_field="updated_at", supports_create=True,
                             supports_update=True, supports_delete=True, supports_since=True)]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.updates: list[dict] = []

    @hookimpl
    def update_record(self, entity, record_id, data):
        self.updates.append(data)
        return super().update_record(entity, record_id, data)

    def put(self, item_id, fields):
        # As Shopify: variants sent with their id update those variants; product_id is the provider's.
        fields = dict(fields)
        if "variants" in fields and item_id in self.items:
            old = {v["id"]: v for v in self.items[item_id]["variants"]}
            fields["variants"] = [{**old.get(v.get("id"), {}), **v} for v in fields["variants"]]
        return super().put(item_id, fields)


@pytest.fixture
def ledger():
    p = Products(items=0)
    p.put("it_00001", {"name": "shirt", "variants": [{"id": 11, "product_id": 1, "price": "1.00"}]})
    return p


@pytest.fixture
def hub(settings, ledger):
    return ledger_hub(settings, ledger)


@pytest.fixture
def conn(hub):
    return make_connection(hub, "ledger", {"api_key": "k"})


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_the_echo_of_an_array_sent_without_its_read_only_sub_fields_is_the_hubs_own_write(hub, conn, ledger,
                                                                                          policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"variants": {"0": {"price": "2.00"}}})

    def meanwhile(record_id, result):
        tenant.write("it_00001", {"variants": {"0": {"price": "3.00"}}})
        webhook(hub, conn, "updated", record=dict(result))
    ledger.during_update = meanwhile
    sync(hub, conn, direction="push")
    assert ledger.items["it_00001"]["variants"][0]["price"] == "3.00" and conflicts(hub, conn) == []
    assert row(hub, conn, "it_00001").push_status is None
    # What went to the provider: the variant with its id, without product_id (the provider's).
    assert all(sent["variants"] == [{"id": 11, "price": price}] for sent, price in
               zip(ledger.updates, ("2.00", "3.00")))
