"""Bidirectional sync of Stripe customers through mappings, through the hub's
REST API against the fake Stripe over real HTTP: a change on either side
arrives on the other in the other's shape (cents as decimals, metadata by
dotted path), the hub's own writes do not come back, conflicts follow each
policy, and a create whose answer was lost is re-sent with its
Idempotency-Key, which Stripe honours: one customer, never two."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from sqlmodel import select

from hub.http import RetryPolicy
from hub.models import SyncRecord
from hub.testing import wait_for_run
from hub_stripe import form
from hub_stripe.testing import API_KEY, seed_customers

API = "/api/v1/integrations"
CUSTOMERS = 30
TIERS = ("bronze", "silver", "gold")
MAPPINGS = [
    {"source": "id", "target": "customer_id"},
    {"source": "email", "target": "email"},
    {"source": "name", "target": "full_name"},
    {"source": "balance", "target": "balance", "transform": "cents_to_decimal", "default": 0},
    {"source": "metadata.tier", "target": "tier"},
]


class Sync:
    """One connection's customers sync config, driven through the API."""

    def __init__(self, client, auth, hub_app, fake, connection: dict, policy: str, mappings: list[dict]):
        self.client, self.auth, self.hub_app, self.fake = client, auth, hub_app, fake
        self.connection_id = connection["id"]
        response = client.post(f"{API}/connections/{self.connection_id}/sync-configs",
                               json={"entity": "customers", "direction": "both", "conflict_policy": policy,
                                     "mappings": mappings}, headers=auth)
        assert response.status_code == 201, response.text
        config = response.json()["sync_config"]
        self.records = f"{API}/connections/{self.connection_id}/sync-configs/{config['id']}/records"
        self.conflicts = f"{API}/connections/{self.connection_id}/sync-configs/{config['id']}/conflicts"

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        return self.fake.state.store.rows["customers"]

    def run(self, **body: Any) -> dict:
        response = self.client.post(f"{API}/connections/{self.connection_id}/sync",
                                    json={"entity": "customers", **body}, headers=self.auth)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["run"]["id"])

    def wait(self, run_id: str) -> dict:
        return wait_for_run(self.client, self.auth, self.connection_id, run_id)

    def pull(self) -> dict:
        run = self.run(direction="pull")
        assert run["status"] == "succeeded", run
        return run

    def record(self, record_id: str, mapped: bool = True) -> dict:
        response = self.client.get(f"{self.records}/{record_id}", params={"mapped": mapped}, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["record"]

    def stored(self) -> list[dict]:
        body = self.client.get(self.records, params={"mapped": True, "limit": 500}, headers=self.auth).json()
        assert body["next_cursor"] is None
        return body["records"]

    def write(self, record_id: str | None, data: dict, **options: Any) -> dict:
        body = {"data": data, "mapped": True, "sync": True, **options}
        if record_id is None:
            response = self.client.post(self.records, json=body, headers=self.auth)
        else:
            response = self.client.put(f"{self.records}/{record_id}", json=body, headers=self.auth)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def by_email(self, email: str) -> list[dict]:
        return [c for c in self.customers.values() if c["email"] == email]


@pytest.fixture
def sync_for(client, auth, hub_app, start_fake, connect):
    def make(policy: str = "provider_wins", mappings: list[dict] = MAPPINGS) -> Sync:
        fake = start_fake(rate=1000, available=50_000)
        for i, customer_id in enumerate(seed_customers(fake, CUSTOMERS, start=1_700_000_000)):
            fake.state.store.rows["customers"][customer_id].update(
                balance=i * 125 - 500, metadata={"tier": TIERS[i % 3], "source": "seed"})
        sync = Sync(client, auth, hub_app, fake, connect(), policy, mappings)
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
        assert record["data"] == {"customer_id": customer["id"], "email": customer["email"],
                                  "full_name": customer["name"], "balance": pytest.approx(customer["balance"] / 100),
                                  "tier": customer["metadata"]["tier"]}
        assert record["mapping_errors"] == [] and record["pending"] is False

    # Stripe's change arrives on the next pull, in the tenant's shape.
    target = sorted(customers)[3]
    customers[target].update(name="Ada Lovelace", balance=-1999)
    customers[target]["metadata"]["tier"] = "platinum"
    incoming = sync.pull()
    assert (incoming["created"], incoming["updated"], incoming["conflicts"]) == (0, 1, 0)
    mapped = sync.record(target)["data"]
    assert mapped["full_name"] == "Ada Lovelace" and mapped["tier"] == "platinum"
    assert mapped["balance"] == pytest.approx(-19.99)

    # The tenant's change reaches Stripe with the reverse mapping.
    other = sorted(customers)[8]
    changed = sync.write(other, {"full_name": "Grace Hopper", "balance": 56.78, "tier": "gold"})
    assert changed["record"]["pending"] is True
    push = sync.wait(changed["run_id"])
    assert push["status"] == "succeeded" and (push["pushed"], push["failed"]) == (1, 0)
    row = customers[other]
    assert (row["name"], row["balance"]) == ("Grace Hopper", 5678)
    assert row["metadata"] == {"tier": "gold", "source": "seed"}  # metadata merged, not replaced
    after = sync.record(other)
    assert after["pending"] is False and after["data"]["balance"] == pytest.approx(56.78)

    # A customer created in the hub gets its Stripe id.
    created = sync.write(None, {"email": "new@example.com", "full_name": "Alan Turing", "balance": 1.5,
                                "tier": "bronze"})
    assert created["record"]["remote_id"] is None
    assert sync.wait(created["run_id"])["pushed"] == 1
    [new] = sync.by_email("new@example.com")
    assert (new["name"], new["balance"], new["metadata"]) == ("Alan Turing", 150, {"tier": "bronze"})
    stored_new = sync.record(created["record"]["id"])
    assert stored_new["remote_id"] == new["id"] and stored_new["data"]["customer_id"] == new["id"]

    echo = sync.pull()
    assert (echo["created"], echo["updated"], echo["conflicts"], echo["deleted"]) == (0, 0, 0, 0)
    assert sorted(r["remote_id"] for r in sync.stored()) == sorted(sync.customers)
    assert sync.client.get(sync.records, params={"pending": True}, headers=sync.auth).json()["records"] == []


@pytest.mark.parametrize("policy", ["provider_wins", "hub_wins", "review"])
def test_a_customer_changed_on_both_sides_follows_the_conflict_policy(sync_for, policy):
    sync = sync_for(policy)
    target = sorted(sync.customers)[5]
    sync.write(target, {"full_name": "hub side", "tier": "gold"}, sync=False)
    sync.customers[target]["name"] = "stripe side"

    both = sync.run()
    assert both["status"] == "succeeded" and both["direction"] == "both" and both["conflicts"] == 1
    [conflict] = sync.client.get(sync.conflicts, headers=sync.auth).json()["conflicts"]
    assert conflict["local_data"] == {"op": "update", "data": {"name": "hub side", "metadata": {"tier": "gold"}}}
    assert conflict["remote_data"]["name"] == "stripe side" and conflict["remote_data"]["id"] == target
    assert conflict["policy"] == policy
    record = sync.record(target)
    customer = sync.customers[target]

    if policy == "provider_wins":
        assert conflict["status"] == "resolved" and conflict["resolution"] == "provider"
        assert both["pushed"] == 0 and customer["name"] == "stripe side" and customer["metadata"]["tier"] != "gold"
        assert record["data"]["full_name"] == "stripe side" and record["pending"] is False
    elif policy == "hub_wins":
        assert conflict["status"] == "resolved" and conflict["resolution"] == "hub"
        assert both["pushed"] == 1 and customer["name"] == "hub side" and customer["metadata"]["tier"] == "gold"
        assert record["data"]["full_name"] == "hub side" and record["pending"] is False
    else:
        assert conflict["status"] == "open" and both["pushed"] == 0
        assert customer["name"] == "stripe side"
        assert record["pending"] is True and record["push_status"] == "conflict"
        assert record["data"]["full_name"] == "hub side" and record["data"]["tier"] == "gold"
        assert sync.run(direction="push")["pushed"] == 0
        resolved = sync.client.post(f"{sync.conflicts}/{conflict['id']}/resolve", json={"resolution": "hub"},
                                    headers=sync.auth).json()
        assert resolved["conflict"]["status"] == "resolved"
        assert sync.wait(resolved["run_id"])["pushed"] == 1
        assert customer["name"] == "hub side" and customer["metadata"]["tier"] == "gold"
        assert sync.record(target)["pending"] is False
    again = sync.pull()
    assert (again["created"], again["updated"], again["conflicts"]) == (0, 0, 0)
    assert sync.record(target)["data"]["full_name"] == customer["name"]


def test_a_change_inside_an_object_sends_the_whole_object_so_the_provider_keeps_the_rest(sync_for):
    """Stripe replaces an address it is sent: sending only the changed city
    would erase the street, postcode and country."""
    sync = sync_for(mappings=[*MAPPINGS, {"source": "address.city", "target": "city"}])
    target = next(iter(sync.customers))
    address = {"line1": "1 Rue de la Paix", "line2": None, "city": "Paris", "postal_code": "75002",
               "state": None, "country": "FR"}
    sync.customers[target]["address"] = dict(address)
    assert sync.pull()["updated"] == 1
    assert sync.record(target)["data"]["city"] == "Paris"
    run = sync.wait(sync.write(target, {"city": "Lyon"})["run_id"])
    assert (run["status"], run["pushed"]) == ("succeeded", 1), run
    assert sync.customers[target]["address"] == {**address, "city": "Lyon"}
    assert sync.record(target, mapped=False)["data"]["address"] == {**address, "city": "Lyon"}
    assert (sync.pull()["updated"], sync.record(target)["pending"]) == (0, False)


def test_keeping_the_hubs_version_of_a_customer_deleted_at_stripe_creates_it_again(sync_for):
    """Made again from the fields the tenant works with (its mappings): the
    old customer's other fields (default_source, tax, ...) are Stripe's own,
    and its create refuses them."""
    sync = sync_for("review")
    target = next(iter(sync.customers))
    old = dict(sync.customers[target])
    sync.customers[target].update(default_source=None, invoice_prefix="OLDPREFIX")
    assert sync.pull()["updated"] == 1
    sync.write(target, {"full_name": "Kept by the hub"}, sync=False)
    sync.fake.state.store.remove("customers", target)
    swept = sync.run(direction="pull", full_refresh=True)
    assert (swept["deleted"], swept["conflicts"]) == (1, 1)
    [conflict] = sync.client.get(sync.conflicts, params={"status": "open"}, headers=sync.auth).json()["conflicts"]
    resolved = sync.client.post(f"{sync.conflicts}/{conflict['id']}/resolve", json={"resolution": "hub"},
                                headers=sync.auth).json()
    run = sync.wait(resolved["run_id"])
    assert (run["status"], run["pushed"], run["failed"]) == ("succeeded", 1, 0), run
    [again] = sync.by_email(old["email"])
    assert again["id"] != target and again["name"] == "Kept by the hub"
    assert again["metadata"]["tier"] == old["metadata"]["tier"] and again["balance"] == old["balance"]
    record = sync.record(conflict["record_id"])
    assert (record["remote_id"], record["pending"], record["data"]["full_name"]) == \
        (again["id"], False, "Kept by the hub")


# ---------------------------------------------------------------- lost answers


def test_a_create_whose_answer_was_lost_is_resent_with_its_key_and_made_once(sync_for):
    sync = sync_for()
    state = sync.fake.state
    state.lose_next = 1
    created = sync.write(None, {"email": "lost@example.com", "full_name": "Lost Answer", "tier": "silver"})
    run = sync.wait(created["run_id"])
    assert run["status"] == "succeeded" and (run["pushed"], run["failed"]) == (1, 0)
    assert state.lost == 1 and state.idempotent_replays == 1
    assert state.calls["POST /v1/customers"] == 2
    keys = [k for k in state.idempotency_keys if k == f"hub-{created['record']['id']}"]
    assert len(keys) == 2  # the same key both times
    [customer] = sync.by_email("lost@example.com")
    record = sync.record(created["record"]["id"])
    assert record["remote_id"] == customer["id"] and record["pending"] is False and record["push_error"] is None
    echo = sync.pull()
    assert (echo["created"], echo["updated"]) == (0, 0)
    assert len(sync.by_email("lost@example.com")) == 1


def test_a_create_changed_after_its_answers_were_lost_is_made_once_then_changed(sync_for):
    """Every answer of a run's create is lost (Stripe made the customer); the
    tenant then changes the record. Stripe replays a key only with the same
    parameters: the create goes again as first sent, and the change follows
    as an update in the same run. Until then the record cannot be deleted,
    since the customer may exist."""
    sync = sync_for()
    sync.hub_app.state.hub.pool.retry = RetryPolicy(attempts=2, base_delay=0.01)
    state = sync.fake.state
    state.lose_next = 2
    created = sync.write(None, {"email": "changed@example.com", "full_name": "First Name", "tier": "silver"})
    record_id = created["record"]["id"]
    assert sync.wait(created["run_id"])["status"] == "failed" and state.lost == 2
    assert len(sync.by_email("changed@example.com")) == 1  # made, and the hub cannot know it
    refused = sync.client.delete(f"{sync.records}/{record_id}", headers=sync.auth)
    assert refused.status_code == 409 and refused.json()["code"] == "record_being_created"
    changed = sync.write(record_id, {"full_name": "Second Name", "tier": "gold"})
    run = sync.wait(changed["run_id"])
    assert run["status"] == "succeeded" and (run["pushed"], run["failed"]) == (2, 0), run
    assert state.idempotent_replays == 2  # the first run's second try, and this run's create
    [customer] = sync.by_email("changed@example.com")
    assert customer["name"] == "Second Name" and customer["metadata"]["tier"] == "gold"
    record = sync.record(record_id)
    assert (record["remote_id"], record["pending"], record["push_error"]) == (customer["id"], False, None)
    assert (record["data"]["full_name"], record["data"]["tier"]) == ("Second Name", "gold")
    echo = sync.pull()
    assert (echo["created"], echo["updated"]) == (0, 0)
    assert sync.client.delete(f"{sync.records}/{record_id}", headers=sync.auth).status_code == 200


def test_the_pulled_copy_of_a_lost_create_hands_its_change_and_conflict_to_the_created_record(sync_for):
    """The create's answers are lost; a pull brings the customer as a second
    record, which the tenant changes while Stripe changes it too (a conflict
    in review). When the create is replayed, that copy goes, and its change
    and open conflict pass to the created record: neither side is lost."""
    sync = sync_for("review")
    sync.hub_app.state.hub.pool.retry = RetryPolicy(attempts=2, base_delay=0.01)
    sync.fake.state.lose_next = 2
    created = sync.write(None, {"email": "twice@example.com", "full_name": "Created", "tier": "silver"})
    assert sync.wait(created["run_id"])["status"] == "failed"
    assert sync.pull()["created"] == 1
    [customer] = sync.by_email("twice@example.com")
    sync.write(customer["id"], {"full_name": "Tenant edit"}, sync=False)
    customer.update(name="Stripe edit")
    assert sync.pull()["conflicts"] == 1
    run = sync.run(direction="push")
    assert (run["status"], run["failed"]) == ("succeeded", 0), run
    records = [r for r in sync.stored() if r["data"]["email"] == "twice@example.com"]
    assert [r["id"] for r in records] == [created["record"]["id"]]
    record = sync.record(created["record"]["id"], mapped=False)
    assert (record["remote_id"], record["push_status"]) == (customer["id"], "conflict")
    [conflict] = sync.client.get(sync.conflicts, params={"status": "open"}, headers=sync.auth).json()["conflicts"]
    assert conflict["record_id"] == created["record"]["id"]
    assert conflict["local_data"]["data"]["name"] == "Tenant edit"
    resolved = sync.client.post(f"{sync.conflicts}/{conflict['id']}/resolve", json={"resolution": "hub"},
                                headers=sync.auth).json()
    assert sync.wait(resolved["run_id"])["status"] == "succeeded"
    assert customer["name"] == "Tenant edit" and len(sync.by_email("twice@example.com")) == 1


def test_a_create_stripe_refused_and_saved_under_its_key_goes_with_a_new_key_once_changed(sync_for):
    """Stripe keeps the answer of a request that started executing, errors
    too, for its key: the corrected record is a new request with a new key."""
    sync = sync_for()
    created = sync.write(None, {"email": "refused@example.com", "full_name": "Refused", "tier": "silver"},
                         sync=False)
    key = f"hub-{created['record']['id']}"
    # The same key already holds a refusal, as after a card declined or a missing object.
    sync.fake.state.store.idempotency[key] = (("POST", "/v1/customers", ()), 400,
                                              {"error": {"type": "invalid_request_error", "message": "refused"}})
    run = sync.run(direction="push")
    assert (run["pushed"], run["failed"]) == (0, 1)
    record = sync.record(created["record"]["id"])
    assert record["push_status"] == "failed" and "Keys for idempotent requests" in record["push_error"]
    changed = sync.write(created["record"]["id"], {"full_name": "Accepted"})
    run = sync.wait(changed["run_id"])
    assert (run["status"], run["pushed"], run["failed"]) == ("succeeded", 1, 0), run
    [customer] = sync.by_email("refused@example.com")
    assert customer["name"] == "Accepted"
    assert sync.fake.state.idempotency_keys[-1] == f"{key}-2"  # the record's second version


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_an_update_whose_answers_were_lost_then_changed_again_is_no_conflict(sync_for, policy):
    """Stripe made the update but every answer of its run was lost; the
    tenant changes the customer again. The next push reads the customer,
    knows the hub's own write in it, and sends the change: no conflict, and
    the stored record is Stripe's answer (customers carry no modification time)."""
    sync = sync_for(policy)
    sync.hub_app.state.hub.pool.retry = RetryPolicy(attempts=2, base_delay=0.01)
    target = sorted(sync.customers)[3]
    sync.fake.state.lose_next = 2
    assert sync.wait(sync.write(target, {"full_name": "first"})["run_id"])["status"] == "failed"
    assert sync.customers[target]["name"] == "first"
    run = sync.wait(sync.write(target, {"tier": "gold"})["run_id"])
    assert (run["status"], run["pushed"], run["conflicts"]) == ("succeeded", 1, 0), run
    assert (sync.customers[target]["name"], sync.customers[target]["metadata"]["tier"]) == ("first", "gold")
    record = sync.record(target)
    assert (record["data"]["full_name"], record["data"]["tier"], record["pending"]) == ("first", "gold", False)
    assert sync.client.get(sync.conflicts, headers=sync.auth).json()["conflicts"] == []


def test_a_create_left_sending_by_a_killed_hub_is_resent_with_its_key(sync_for):
    """Stripe honours Idempotency-Key: a create the hub was killed in the
    middle of (it reached Stripe) is sent again and replayed, not made twice."""
    sync = sync_for()
    created = sync.write(None, {"email": "killed@example.com", "full_name": "Killed Hub"}, sync=False)
    hub = sync.hub_app.state.hub
    with hub.session() as session:
        row = session.exec(select(SyncRecord).where(SyncRecord.id == created["record"]["id"])).one()
        payload, key = dict(row.local_data), f"hub-{row.id}"
        row.push_status = "sending"
        session.add(row)
        session.commit()
    # The request the killed hub had sent (start_fake points HUB_STRIPE_ORIGIN at the fake).
    sent = httpx.post(f"{os.environ['HUB_STRIPE_ORIGIN']}/v1/customers", data=form(payload),
                      headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key})
    assert sent.status_code == 200, sent.text

    run = sync.run(direction="push")
    assert run["status"] == "succeeded" and (run["pushed"], run["failed"]) == (1, 0)
    assert sync.fake.state.idempotent_replays == 1
    [customer] = sync.by_email("killed@example.com")
    assert customer["id"] == sent.json()["id"]
    assert sync.record(created["record"]["id"])["remote_id"] == customer["id"]


def test_amounts_in_zero_decimal_currencies_and_unix_times_go_both_ways(client, auth, hub_app, start_fake, connect):
    """A yen balance is shown and written in yen (Stripe has no minor unit
    for it), and a due date mapped as a date goes back as Unix seconds."""
    from hub_stripe.testing import seed

    fake = start_fake(rate=1000, available=50_000)
    [yen, dollars] = seed_customers(fake, 2, start=1_700_000_000)
    fake.state.store.rows["customers"][yen].update(currency="jpy", balance=500)
    fake.state.store.rows["customers"][dollars].update(currency="usd", balance=1234)
    [invoice] = seed(fake, "invoices", 1)
    connection = connect()
    customers = Sync(client, auth, hub_app, fake, connection, "provider_wins", [
        {"source": "balance", "target": "balance", "transform": "cents_to_decimal", "currency_field": "currency"}])
    customers.pull()
    assert customers.record(yen)["data"]["balance"] == 500
    assert customers.record(dollars)["data"]["balance"] == 12.34
    run = customers.wait(customers.write(yen, {"balance": 1200})["run_id"])
    assert (run["status"], run["pushed"]) == ("succeeded", 1), run
    assert customers.customers[yen]["balance"] == 1200

    response = client.post(f"{API}/connections/{connection['id']}/sync-configs", headers=auth, json={
        "entity": "invoices", "direction": "both",
        "mappings": [{"source": "due_date", "target": "due", "transform": "date"}]})
    assert response.status_code == 201, response.text
    records = f"{API}/connections/{connection['id']}/sync-configs/{response.json()['sync_config']['id']}/records"
    pulled = customers.wait(client.post(f"{API}/connections/{connection['id']}/sync",
                                        json={"entity": "invoices"}, headers=auth).json()["run"]["id"])
    assert pulled["status"] == "succeeded", pulled
    written = client.put(f"{records}/{invoice}", json={"data": {"due": "2027-03-01"}, "mapped": True},
                         headers=auth)
    assert written.status_code == 200, written.text
    run = customers.wait(written.json()["run_id"])
    assert (run["status"], run["pushed"]) == ("succeeded", 1), run
    assert fake.state.store.rows["invoices"][invoice]["due_date"] == 1_803_859_200


def test_a_push_stripe_refuses_names_the_refused_field_in_the_tenants_fields(sync_for):
    """Stripe names the parameter it refused (``param``); the stored record
    shows it as the provider's field raw, and as the tenant's field mapped,
    so that a form can mark the field to correct."""
    sync = sync_for(mappings=[*MAPPINGS, {"source": "balance", "target": "balance_cents"}])
    target = sorted(sync.customers)[2]
    # A number the hub takes for an integer field (1000) that Stripe's form parameter refuses.
    changed = sync.write(target, {"balance_cents": "1e3"})
    run = sync.wait(changed["run_id"])
    assert (run["status"], run["pushed"], run["failed"]) == ("succeeded", 0, 1), run
    mapped = sync.record(target)
    assert mapped["push_status"] == "failed" and "Invalid integer: 1e3" in mapped["push_error"]
    assert (mapped["push_error_code"], mapped["push_error_details"]["param"]) == ("validation_error", "balance")
    # Both mappings read Stripe's balance: the tenant sees either field to correct.
    assert mapped["push_error_fields"] == ["balance", "balance_cents"]
    assert sync.record(target, mapped=False)["push_error_fields"] == ["balance"]
    fixed = sync.write(target, {"balance_cents": 250})
    assert sync.wait(fixed["run_id"])["pushed"] == 1
    after = sync.record(target)
    assert (after["push_error"], after["push_error_fields"], sync.customers[target]["balance"]) == (None, None, 250)
