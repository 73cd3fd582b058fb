"""The echo of a push whose array or object carries a read-only sub-field the
provider stamps on every write (a variant's counter, HubSpot's
properties.hs_lastmodifieddate) is the hub's own write, not a change made at
the provider: a later edit made while the push was on its way is not dropped
(provider_wins) nor made a conflict (review). Runs on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from hub import hookimpl
from hub.types import EntityField, EntitySchema
from tests.sync_support import ledger_hub, make_connection
from tests.test_sync_interleavings import Interleaving, Tenant, conflicts, sync, webhook

VARIANT = (EntityField("id", type="integer", readonly=True), EntityField("price"),
           EntityField("modified", type="integer", readonly=True))


class Products(Interleaving):
    @hookimpl
    def entity_schemas(self):
        fields = (EntityField("id", readonly=True), EntityField("name"),
                  EntityField("variants", type="array", fields=VARIANT),
                  EntityField("updated_at", type="datetime", readonly=True))
        return [EntitySchema("items", "Items", fields, updated_field="updated_at", supports_create=True,
                             supports_update=True, supports_delete=True, supports_since=True)]

    def put(self, item_id, fields):
        fields = dict(fields)
        if "variants" in fields and item_id in self.items:
            old = {v["id"]: v for v in self.items[item_id]["variants"]}
            # the provider bumps each written variant's read-only "modified" counter
            fields["variants"] = [{**old.get(v.get("id"), {}), **v,
                                   "modified": old.get(v.get("id"), {}).get("modified", 0) + 1}
                                  for v in fields["variants"]]
        return super().put(item_id, fields)


@pytest.fixture
def ledger():
    p = Products(items=0)
    p.put("it_00001", {"name": "shirt", "variants": [{"id": 11, "price": "1.00", "modified": 1}]})
    return p


@pytest.fixture
def hub(settings, ledger):
    return ledger_hub(settings, ledger)


@pytest.fixture
def conn(hub):
    return make_connection(hub, "ledger", {"api_key": "k"})


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_echo_with_recomputed_read_only_sub_field(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"variants": {"0": {"price": "2.00"}}})

    def meanwhile(record_id, result):
        tenant.write("it_00001", {"variants": {"0": {"price": "3.00"}}})
        webhook(hub, conn, "updated", record=dict(result))
    ledger.during_update = meanwhile
    sync(hub, conn, direction="push")
    assert ledger.items["it_00001"]["variants"][0]["price"] == "3.00" and conflicts(hub, conn) == []


PROPS = (EntityField("email"), EntityField("hs_lastmodifieddate", readonly=True))


class Contacts(Interleaving):
    @hookimpl
    def entity_schemas(self):
        fields = (EntityField("id", readonly=True),
                  EntityField("properties", type="object", fields=PROPS),
                  EntityField("updated_at", type="datetime", readonly=True))
        return [EntitySchema("items", "Items", fields, updated_field="updated_at", supports_create=True,
                             supports_update=True, supports_delete=True, supports_since=True)]

    def put(self, item_id, fields):
        fields = dict(fields)
        if "properties" in fields:  # HubSpot: merges properties, stamps hs_lastmodifieddate
            old = (self.items.get(item_id) or {}).get("properties", {})
            fields["properties"] = {**old, **fields["properties"],
                                    "hs_lastmodifieddate": str(int(old.get("hs_lastmodifieddate", "0")) + 1)}
        return super().put(item_id, fields)


@pytest.mark.parametrize("policy", ["provider_wins"])
def test_echo_of_object_with_stamped_read_only_sub_field(settings, policy):
    ledger = Contacts(items=0)
    ledger.put("it_00001", {"properties": {"email": "a@x", "hs_lastmodifieddate": "1"}})
    hub = ledger_hub(settings, ledger)
    conn = make_connection(hub, "ledger", {"api_key": "k"})
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"properties": {"email": "b@x"}})

    def meanwhile(record_id, result):
        tenant.write("it_00001", {"properties": {"email": "c@x"}})
        webhook(hub, conn, "updated", record=dict(result))
    ledger.during_update = meanwhile
    sync(hub, conn, direction="push")
    assert ledger.items["it_00001"]["properties"]["email"] == "c@x" and conflicts(hub, conn) == []
