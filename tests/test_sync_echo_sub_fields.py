"""A push sends an object or array whole without its read-only sub-fields,
and still knows the provider's echo of it for its own write, also where the
provider stamps such a sub-field on every write (a variant's counter,
HubSpot's ``properties.hs_lastmodifieddate``): the tenant changes a record
twice, the second time while the first push is on its way, and the echo of
the first arrives; neither change is lost (``provider_wins``) and no conflict
is made of the hub's own write (``review``). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from hub import hookimpl
from hub.types import EntityField, EntitySchema
from tests.test_sync_interleavings import Interleaving, Tenant, conflicts, row, sync, webhook

VARIANT = (EntityField("id", type="integer", readonly=True), EntityField("product_id", type="integer", readonly=True),
           EntityField("price"), EntityField("modified", type="integer", readonly=True))
PROPERTIES = (EntityField("email"), EntityField("hs_lastmodifieddate", readonly=True))


class Products(Interleaving):
    """Items with Shopify's variants (sent with their id, they update those
    variants; product_id is the provider's, and it counts each variant's
    writes in ``modified``) and HubSpot's properties (merged, and stamped
    with ``hs_lastmodifieddate``); noting what each update sends."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.updates: list[dict] = []

    @hookimpl
    def entity_schemas(self):
        fields = (EntityField("id", readonly=True), EntityField("name"),
                  EntityField("variants", type="array", fields=VARIANT),
                  EntityField("properties", type="object", fields=PROPERTIES),
                  EntityField("updated_at", type="datetime", readonly=True))
        return [EntitySchema("items", "Items", fields, updated_field="updated_at", supports_create=True,
                             supports_update=True, supports_delete=True, supports_since=True)]

    @hookimpl
    def update_record(self, entity, record_id, data):
        self.updates.append(data)
        return super().update_record(entity, record_id, data)

    def put(self, item_id, fields):
        fields = dict(fields)
        held = self.items.get(item_id) or {}
        if "variants" in fields and held:
            old = {v["id"]: v for v in held["variants"]}
            fields["variants"] = [{**old.get(v.get("id"), {}), **v,
                                   "modified": old.get(v.get("id"), {}).get("modified", 0) + 1}
                                  for v in fields["variants"]]
        if "properties" in fields and held:
            old = held.get("properties") or {}
            fields["properties"] = {**old, **fields["properties"],
                                    "hs_lastmodifieddate": str(int(old.get("hs_lastmodifieddate", "0")) + 1)}
        return super().put(item_id, fields)


@pytest.fixture
def ledger():
    products = Products(items=0)
    products.put("it_00001", {"name": "shirt", "variants": [{"id": 11, "product_id": 1, "price": "1.00",
                                                             "modified": 1}],
                              "properties": {"email": "a@x", "hs_lastmodifieddate": "1"}})
    return products


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
@pytest.mark.parametrize(("first", "second", "now"), [
    ({"variants": {"0": {"price": "2.00"}}}, {"variants": {"0": {"price": "3.00"}}},
     lambda item: item["variants"][0]["price"] == "3.00"),
    ({"properties": {"email": "b@x"}}, {"properties": {"email": "c@x"}},
     lambda item: item["properties"]["email"] == "c@x"),
])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_the_echo_of_a_change_sent_without_read_only_sub_fields_is_the_hubs_own_write(hub, conn, ledger, policy,
                                                                                      first, second, now):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", first)

    def meanwhile(record_id, result):
        tenant.write("it_00001", second)
        webhook(hub, conn, "updated", record=dict(result))
    ledger.during_update = meanwhile
    sync(hub, conn, direction="push")
    assert now(ledger.items["it_00001"]) and conflicts(hub, conn) == []
    assert row(hub, conn, "it_00001").push_status is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_what_goes_to_the_provider_leaves_read_only_sub_fields_out_but_an_items_id(hub, conn, ledger):
    Tenant(hub, conn, "provider_wins").write("it_00001", {"variants": {"0": {"price": "2.00"}},
                                                          "properties": {"email": "b@x"}})
    sync(hub, conn, direction="push")
    assert ledger.updates == [{"variants": [{"id": 11, "price": "2.00"}], "properties": {"email": "b@x"}}]
