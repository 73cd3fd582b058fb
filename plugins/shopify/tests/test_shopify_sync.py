"""Bidirectional sync of Shopify customers through mappings, through the hub's
REST API against the fake shop over real HTTP: a change on either side
arrives on the other in the other's shape, the hub's own writes do not come
back, conflicts follow each policy, and a create whose answer was lost (the
shop applied it) is never sent twice: Shopify has no idempotency key."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from hub.models import SyncRecord
from hub.testing import wait_for_run
from hub_shopify import testing as fake

API = "/api/v1/integrations"
CUSTOMERS = 30
POSTS = f"/admin/api/{fake.API_VERSION}/customers.json"
MAPPINGS = [
    {"source": "id", "target": "customer_id", "transform": "str"},
    {"source": "email", "target": "email"},
    {"source": ["first_name", "last_name"], "target": "full_name", "transform": "join"},
    {"source": "note", "target": "notes", "default": ""},
    {"source": "updated_at", "target": "modified", "transform": "datetime"},
]


@pytest.fixture
def fake_options() -> dict[str, Any]:
    return {"products": 0, "capacity": 40, "leak_per_second": 50.0}


class Sync:
    """One connection's customers sync config, driven through the API."""

    def __init__(self, harness, policy: str):
        self.h = harness
        self.shop = harness.shop
        self.store: fake.Store = harness.shop.state.store
        start = datetime(2024, 3, 1, tzinfo=fake.SHOP_TZ)
        for i in range(CUSTOMERS):
            self.store.insert("customers", {
                "email": f"customer{i}@example.com", "first_name": f"First{i}", "last_name": f"Last{i}",
                "phone": None, "state": "enabled", "verified_email": True, "tags": "", "note": f"note {i}",
                "tax_exempt": False, "currency": "CAD", "addresses": []},
                at=(start + timedelta(minutes=i)).isoformat(timespec="seconds"))
        self.connection_id = harness.connect()
        response = harness.post(f"{API}/connections/{self.connection_id}/sync-configs",
                                {"entity": "customers", "direction": "both", "conflict_policy": policy,
                                 "mappings": MAPPINGS})
        assert response.status_code == 201, response.text
        self.config = response.json()["sync_config"]
        self.records = f"{API}/connections/{self.connection_id}/sync-configs/{self.config['id']}/records"
        self.conflicts = f"{API}/connections/{self.connection_id}/sync-configs/{self.config['id']}/conflicts"

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        return {str(c["id"]): c for c in self.store.tables["customers"].all()}

    def run(self, **body: Any) -> dict:
        response = self.h.post(f"{API}/connections/{self.connection_id}/sync", {"entity": "customers", **body})
        assert response.status_code == 202, response.text
        return self.wait(response.json()["run"]["id"])

    def wait(self, run_id: str) -> dict:
        return wait_for_run(self.h.client, self.h.auth, self.connection_id, run_id)

    def pull(self) -> dict:
        run = self.run(direction="pull")
        assert run["status"] == "succeeded", run
        return run

    def record(self, record_id: str, mapped: bool = True) -> dict:
        response = self.h.get(f"{self.records}/{record_id}", mapped=mapped)
        assert response.status_code == 200, response.text
        return response.json()["record"]

    def stored(self, mapped: bool = True) -> list[dict]:
        body = self.h.get(self.records, mapped=mapped, limit=500).json()
        assert body["next_cursor"] is None
        return body["records"]

    def provider_edit(self, customer_id: str, **changes: Any) -> None:
        row = self.store.tables["customers"].get(customer_id)
        row.update(changes, updated_at=fake.now())


def name_of(customer: dict) -> str:
    return " ".join(p for p in (customer.get("first_name"), customer.get("last_name")) if p)


@pytest.fixture
def sync_for(shopify):
    def make(policy: str = "provider_wins") -> Sync:
        sync = Sync(shopify, policy)
        first = sync.pull()
        assert (first["created"], first["fetched"]) == (CUSTOMERS, CUSTOMERS)
        return sync
    return make


def test_customers_travel_both_ways_through_the_mappings_without_echo(sync_for):
    sync = sync_for()
    customers = sync.customers
    stored = sync.stored()
    assert sorted(r["remote_id"] for r in stored) == sorted(customers)
    for record in stored:
        customer = customers[record["remote_id"]]
        assert record["data"]["customer_id"] == record["remote_id"]
        assert record["data"]["email"] == customer["email"]
        assert record["data"]["full_name"] == name_of(customer)
        assert record["data"]["notes"] == customer["note"]
        assert datetime.fromisoformat(record["data"]["modified"]) == datetime.fromisoformat(customer["updated_at"])
        assert record["pending"] is False and record["mapping_errors"] == []

    # The shop's change arrives on the next pull, in the tenant's shape.
    target = sorted(customers)[4]
    sync.provider_edit(target, first_name="Ada", last_name="Lovelace", note="changed in Shopify")
    incoming = sync.pull()
    assert (incoming["created"], incoming["updated"], incoming["conflicts"]) == (0, 1, 0)
    mapped = sync.record(target)["data"]
    assert mapped["full_name"] == "Ada Lovelace" and mapped["notes"] == "changed in Shopify"

    # The tenant's change reaches the shop with the reverse mapping (join split back).
    other = sorted(customers)[7]
    changed = sync.h.put(f"{sync.records}/{other}", {"data": {"full_name": "Grace Brewster Hopper",
                                                              "notes": "from the hub"},
                                                     "mapped": True, "sync": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["record"]["pending"] is True
    push = sync.wait(changed.json()["run_id"])
    assert push["status"] == "succeeded" and push["pushed"] == 1 and push["failed"] == 0
    row = sync.customers[other]
    assert (row["first_name"], row["last_name"], row["note"]) == ("Grace", "Brewster Hopper", "from the hub")
    assert row["email"] == customers[other]["email"]
    after = sync.record(other)
    assert after["pending"] is False and after["data"]["full_name"] == "Grace Brewster Hopper"

    # A customer created in the hub gets its Shopify id.
    created = sync.h.post(sync.records, {"data": {"email": "new@example.com", "full_name": "Alan Turing",
                                                  "notes": "made in the hub"}, "mapped": True, "sync": True}).json()
    assert created["record"]["remote_id"] is None
    assert sync.wait(created["run_id"])["pushed"] == 1
    [new] = [c for c in sync.customers.values() if c["email"] == "new@example.com"]
    assert (new["first_name"], new["last_name"], new["note"]) == ("Alan", "Turing", "made in the hub")
    stored_new = sync.record(created["record"]["id"])
    assert stored_new["remote_id"] == str(new["id"]) and stored_new["data"]["customer_id"] == str(new["id"])

    echo = sync.pull()
    assert (echo["created"], echo["updated"], echo["conflicts"]) == (0, 0, 0)
    assert sorted(r["remote_id"] for r in sync.stored()) == sorted(sync.customers)
    assert sync.h.get(sync.records, pending=True).json()["records"] == []


@pytest.mark.parametrize("policy", ["provider_wins", "hub_wins", "review"])
def test_a_customer_changed_on_both_sides_follows_the_conflict_policy(sync_for, policy):
    sync = sync_for(policy)
    target = sorted(sync.customers)[2]
    hub_side = sync.h.put(f"{sync.records}/{target}", {"data": {"notes": "hub side"}, "sync": False})
    assert hub_side.status_code == 200, hub_side.text
    sync.provider_edit(target, note="shop side")

    both = sync.run()
    assert both["status"] == "succeeded" and both["direction"] == "both" and both["conflicts"] == 1
    [conflict] = sync.h.get(sync.conflicts).json()["conflicts"]
    assert conflict["local_data"] == {"op": "update", "data": {"note": "hub side"}}
    assert conflict["remote_data"]["note"] == "shop side" and conflict["remote_data"]["id"] == int(target)
    assert conflict["policy"] == policy and conflict["remote_id"] == target
    record = sync.record(target)

    if policy == "provider_wins":
        assert conflict["status"] == "resolved" and conflict["resolution"] == "provider"
        assert both["pushed"] == 0 and sync.customers[target]["note"] == "shop side"
        assert record["data"]["notes"] == "shop side" and record["pending"] is False
    elif policy == "hub_wins":
        assert conflict["status"] == "resolved" and conflict["resolution"] == "hub"
        assert both["pushed"] == 1 and sync.customers[target]["note"] == "hub side"
        assert record["data"]["notes"] == "hub side" and record["pending"] is False
    else:
        assert conflict["status"] == "open" and both["pushed"] == 0
        assert sync.customers[target]["note"] == "shop side"
        assert record["pending"] is True and record["push_status"] == "conflict"
        assert record["data"]["notes"] == "hub side"
        assert sync.record(target, mapped=False)["data"]["note"] == "hub side"
        # A push alone does not settle it.
        assert sync.run(direction="push")["pushed"] == 0
        resolved = sync.h.post(f"{sync.conflicts}/{conflict['id']}/resolve", {"resolution": "hub"}).json()
        assert resolved["conflict"]["status"] == "resolved"
        assert sync.wait(resolved["run_id"])["pushed"] == 1
        assert sync.customers[target]["note"] == "hub side"
        assert sync.record(target)["pending"] is False
    again = sync.pull()
    assert (again["created"], again["updated"], again["conflicts"]) == (0, 0, 0)
    assert sync.record(target)["data"]["notes"] == sync.customers[target]["note"]


# ---------------------------------------------------------------- lost answers


def uncertain(record: dict) -> bool:
    return record["push_status"] == "failed" and "may exist" in (record["push_error"] or "")


def test_a_create_whose_answer_was_lost_is_not_sent_twice(sync_for):
    sync = sync_for()
    sync.shop.state.lose_next = 1
    created = sync.h.post(sync.records, {"data": {"full_name": "Grace Hopper", "notes": "lost answer"}}).json()
    run = sync.wait(created["run_id"])
    assert run["status"] == "succeeded" and (run["pushed"], run["failed"]) == (0, 1)
    assert sync.shop.state.lost == 1 and sync.shop.state.posts[POSTS] == 1
    assert [c["note"] for c in sync.customers.values() if name_of(c) == "Grace Hopper"] == ["lost answer"]
    copy = sync.record(created["record"]["id"])
    assert uncertain(copy) and copy["remote_id"] is None and copy["pending"] is True
    assert copy["pending_op"] == "create"

    # Another push does not send it again.
    again = sync.run(direction="push")
    assert (again["pushed"], again["failed"]) == (0, 0)
    assert sync.shop.state.posts[POSTS] == 1
    assert uncertain(sync.record(created["record"]["id"]))

    # The next pull brings the customer the shop made.
    pulled = sync.pull()
    assert pulled["created"] == 1
    [real] = [c for c in sync.customers.values() if name_of(c) == "Grace Hopper"]
    real_id = str(real["id"])
    assert sync.record(real_id)["data"]["notes"] == "lost answer"
    assert uncertain(sync.record(created["record"]["id"]))

    # The tenant deletes the hub's copy (never pushed: it just goes) and writes to the real one.
    gone = sync.h.delete(f"{sync.records}/{created['record']['id']}").json()
    assert gone == {"success": True, "run_id": None}  # nothing to push
    assert sync.h.get(f"{sync.records}/{created['record']['id']}").status_code == 404
    changed = sync.h.put(f"{sync.records}/{real_id}", {"data": {"notes": "checked by hand"}}).json()
    assert sync.wait(changed["run_id"])["pushed"] == 1
    assert sync.customers[real_id]["note"] == "checked by hand"
    assert sync.shop.state.posts[POSTS] == 1
    assert len([c for c in sync.customers.values() if name_of(c) == "Grace Hopper"]) == 1
    assert sync.h.get(sync.records, pending=True).json()["records"] == []
    echo = sync.pull()
    assert (echo["created"], echo["updated"], echo["conflicts"]) == (0, 0, 0)
    assert sorted(r["remote_id"] for r in sync.stored()) == sorted(sync.customers)


def test_a_lost_create_that_did_not_happen_is_pushed_again_once_the_tenant_rewrites_it(sync_for):
    sync = sync_for()
    sync.shop.state.lose_next = 1
    created = sync.h.post(sync.records, {"data": {"full_name": "Alan Turing", "notes": "first try"}}).json()
    assert sync.wait(created["run_id"])["failed"] == 1
    assert uncertain(sync.record(created["record"]["id"]))
    # Someone checks the shop: not there (here: removed, as if it never arrived).
    [made] = [c for c in sync.customers.values() if name_of(c) == "Alan Turing"]
    sync.store.tables["customers"].delete(str(made["id"]))

    rewritten = sync.h.put(f"{sync.records}/{created['record']['id']}", {"data": {"notes": "second try"}})
    assert rewritten.status_code == 200, rewritten.text
    assert rewritten.json()["record"]["push_status"] == "pending"
    run = sync.wait(rewritten.json()["run_id"])
    assert (run["pushed"], run["failed"]) == (1, 0)
    [again] = [c for c in sync.customers.values() if name_of(c) == "Alan Turing"]
    assert again["note"] == "second try" and sync.shop.state.posts[POSTS] == 2
    stored = sync.record(created["record"]["id"])
    assert stored["remote_id"] == str(again["id"]) and stored["pending"] is False and stored["push_error"] is None


def test_a_create_left_sending_by_a_killed_hub_is_not_sent_again(sync_for):
    sync = sync_for()
    created = sync.h.post(sync.records, {"data": {"full_name": "Katherine Johnson"}, "sync": False}).json()
    assert created["run_id"] is None
    hub = sync.h.hub_app.state.hub
    with hub.session() as session:
        row = session.exec(select(SyncRecord).where(SyncRecord.id == created["record"]["id"])).one()
        assert row.local_op == "create" and row.push_status == "pending"
        row.push_status = "sending"  # as a hub killed during the POST leaves it
        session.add(row)
        session.commit()
    # While its create may be on its way, the tenant may change the record (it stays "sending":
    # whether the create arrived is still unknown) but not delete it (it could not be deleted there).
    changed = sync.h.put(f"{sync.records}/{created['record']['id']}",
                         {"data": {"notes": "changed meanwhile"}, "sync": False})
    assert changed.status_code == 200 and changed.json()["record"]["push_status"] == "sending"
    refused = sync.h.delete(f"{sync.records}/{created['record']['id']}")
    assert refused.status_code == 409 and refused.json()["code"] == "record_being_created"

    run = sync.run(direction="push")
    assert run["status"] == "succeeded" and (run["pushed"], run["failed"]) == (0, 1)
    assert sync.shop.state.posts[POSTS] == 0
    assert not [c for c in sync.customers.values() if name_of(c) == "Katherine Johnson"]
    record = sync.record(created["record"]["id"])
    assert uncertain(record) and record["remote_id"] is None
    assert sync.run(direction="push")["failed"] == 0 and sync.shop.state.posts[POSTS] == 0


def test_a_price_written_through_a_variant_path_keeps_the_products_other_variants(shopify):
    """``variants.0.price`` reaches into an array: the push sends the whole
    variants list with the one price changed (Shopify drops variants a
    product update leaves out), and the record keeps its list."""
    store: fake.Store = shopify.shop.state.store
    product = store.add_product({"title": "Mug", "variants": [{"title": "Small", "price": "9.00"},
                                                              {"title": "Large", "price": "12.00"}]})
    connection_id = shopify.connect()
    response = shopify.post(f"{API}/connections/{connection_id}/sync-configs", {
        "entity": "products", "direction": "both",
        "mappings": [{"source": "title", "target": "name"}, {"source": "variants.0.price", "target": "price"}]})
    assert response.status_code == 201, response.text
    records = f"{API}/connections/{connection_id}/sync-configs/{response.json()['sync_config']['id']}/records"
    pulled = shopify.post(f"{API}/connections/{connection_id}/sync", {"entity": "products", "direction": "pull"})
    assert wait_for_run(shopify.client, shopify.auth, connection_id, pulled.json()["run"]["id"])["created"] == 1
    written = shopify.put(f"{records}/{product['id']}", {"data": {"price": "10.50"}, "mapped": True, "sync": True})
    assert written.status_code == 200, written.text
    run = wait_for_run(shopify.client, shopify.auth, connection_id, written.json()["run_id"])
    assert (run["status"], run["pushed"], run["failed"]) == ("succeeded", 1, 0), run
    variants = store.tables["products"].get(str(product["id"]))["variants"]
    assert [(v["title"], v["price"]) for v in variants] == [("Small", "10.50"), ("Large", "12.00")]
    raw = shopify.get(f"{records}/{product['id']}", mapped=False).json()["record"]["data"]
    assert [(v["title"], v["price"]) for v in raw["variants"]] == [("Small", "10.50"), ("Large", "12.00")]
    assert shopify.get(f"{records}/{product['id']}", mapped=True).json()["record"]["data"] == \
        {"name": "Mug", "price": "10.50"}


def test_writing_back_a_whole_mapped_record_changes_only_what_changed(sync_for):
    """A client sends the record it read with one field edited. "Mary Ann" +
    "Smith" read as "Mary Ann Smith" would split back into "Mary" + "Ann
    Smith": values it did not change are not converted back at all."""
    sync = sync_for()
    target = next(iter(sync.customers))
    sync.provider_edit(target, first_name="Mary Ann", last_name="Smith")
    assert sync.pull()["updated"] == 1
    record = sync.record(target)["data"]
    assert record["full_name"] == "Mary Ann Smith"
    same = sync.h.put(f"{sync.records}/{target}", {"data": record, "mapped": True, "sync": False})
    assert same.status_code == 200 and same.json()["record"]["pending"] is False
    written = sync.h.put(f"{sync.records}/{target}", {"data": {**record, "email": "mary@example.com"},
                                                      "mapped": True, "sync": True})
    run = sync.wait(written.json()["run_id"])
    assert (run["status"], run["pushed"]) == ("succeeded", 1), run
    customer = sync.customers[target]
    assert (customer["first_name"], customer["last_name"], customer["email"]) == \
        ("Mary Ann", "Smith", "mary@example.com")


def test_a_price_written_back_through_a_number_cast_goes_as_shopifys_text(shopify):
    """Shopify holds prices as text ("9.00"): declared money, a price the
    tenant keeps as a number goes back as text with its two places, and the
    pushed change is recognised in the next pull (no conflict)."""
    store: fake.Store = shopify.shop.state.store
    product = store.add_product({"title": "Mug", "variants": [{"title": "Small", "price": "9.00"}]})
    connection_id = shopify.connect()
    response = shopify.post(f"{API}/connections/{connection_id}/sync-configs", {
        "entity": "products", "direction": "both", "conflict_policy": "review",
        "mappings": [{"source": "variants.0.price", "target": "price", "transform": "float"}]})
    assert response.status_code == 201, response.text
    records = f"{API}/connections/{connection_id}/sync-configs/{response.json()['sync_config']['id']}/records"
    pulled = shopify.post(f"{API}/connections/{connection_id}/sync", {"entity": "products", "direction": "pull"})
    assert wait_for_run(shopify.client, shopify.auth, connection_id, pulled.json()["run"]["id"])["created"] == 1
    assert shopify.get(f"{records}/{product['id']}", mapped=True).json()["record"]["data"] == {"price": 9.0}
    written = shopify.put(f"{records}/{product['id']}", {"data": {"price": 21.5}, "mapped": True, "sync": True})
    assert written.status_code == 200, written.text
    run = wait_for_run(shopify.client, shopify.auth, connection_id, written.json()["run_id"])
    assert (run["status"], run["pushed"], run["failed"]) == ("succeeded", 1, 0), run
    assert store.tables["products"].get(str(product["id"]))["variants"][0]["price"] == "21.50"
    again = shopify.post(f"{API}/connections/{connection_id}/sync", {"entity": "products", "direction": "pull"})
    after = wait_for_run(shopify.client, shopify.auth, connection_id, again.json()["run"]["id"])
    assert (after["status"], after["conflicts"]) == ("succeeded", 0), after
