"""Subscriptions through sync, against the fake Stripe over real HTTP: what
Stripe keeps of a canceled subscription, the shape it reads its items in and
the one it writes them in, and events rendered in another API version."""

from __future__ import annotations

import time

import pytest
from sqlmodel import select

from hub.models import SyncRecord, WebhookEvent
from hub.testing import wait_for_run
from hub_stripe.testing import make_event, signed_delivery

API = "/api/v1/integrations"
SECRET = "whsec_subscriptions"


class Subscriptions:
    """A customer subscribed to a monthly price, and a sync config of ``entity``."""

    def __init__(self, client, auth, hub_app, fake, connection, entity="subscriptions"):
        self.client, self.auth, self.hub_app, self.fake = client, auth, hub_app, fake
        self.connection_id = connection["id"]
        self.entity = entity
        records = f"{API}/connections/{self.connection_id}/entities"
        customer = self._create(f"{records}/customers/records", {"email": "s@example.com"})
        product = self._create(f"{records}/products/records", {"name": "Plan"})
        self.prices = [self._create(f"{records}/prices/records", {
            "product": product["id"], "currency": "usd", "unit_amount": amount,
            "recurring": {"interval": "month"}})["id"] for amount in (900, 1900)]
        self.subscription = self._create(f"{records}/subscriptions/records", {
            "customer": customer["id"], "items": [{"price": self.prices[0]}]})
        self.customer = customer
        response = client.post(f"{API}/connections/{self.connection_id}/sync-configs",
                               json={"entity": entity, "direction": "both", "conflict_policy": "review"},
                               headers=auth)
        assert response.status_code == 201, response.text
        self.records = (f"{API}/connections/{self.connection_id}/sync-configs/"
                        f"{response.json()['sync_config']['id']}/records")

    def _create(self, url, data):
        response = self.client.post(url, json={"data": data}, headers=self.auth)
        assert response.status_code == 201, response.text
        return response.json()["record"]

    def run(self, **body):
        response = self.client.post(f"{API}/connections/{self.connection_id}/sync",
                                    json={"entity": self.entity, **body}, headers=self.auth)
        assert response.status_code == 202, response.text
        run = wait_for_run(self.client, self.auth, self.connection_id, response.json()["run"]["id"])
        assert run["status"] == "succeeded", run
        return run

    def stored(self, remote_id):
        with self.hub_app.state.hub.session() as session:
            return session.exec(select(SyncRecord).where(SyncRecord.remote_id == remote_id)).one()

    def change(self, remote_id, data):
        response = self.client.put(f"{self.records}/{remote_id}", json={"data": data, "sync": True},
                                   headers=self.auth)
        assert response.status_code == 200, response.text
        self.run(direction="push")
        row = self.stored(remote_id)
        assert row.push_status is None, (row.push_status, row.push_error)

    def deliver(self, event):
        url = f"{API}/webhooks/stripe?connection_id={self.connection_id}"
        body, headers = signed_delivery(SECRET, event)
        assert self.client.post(url, content=body, headers=headers).json()["received"] == 1
        deadline = time.monotonic() + 20
        while True:
            with self.hub_app.state.hub.session() as session:
                stored = session.exec(select(WebhookEvent).where(WebhookEvent.dedup_key == event["id"])).one()
            if stored.status != "pending":
                return stored
            assert time.monotonic() < deadline, "the event was not processed"
            time.sleep(0.05)

    @property
    def at_stripe(self):
        return self.fake.state.store.rows["subscriptions"][self.subscription["id"]]


@pytest.fixture
def subscriptions(client, auth, hub_app, fake, connect):
    return lambda entity="subscriptions": Subscriptions(client, auth, hub_app, fake,
                                                         connect(webhook_secret=SECRET), entity)


def test_a_canceled_subscription_stays_stored_as_canceled_through_its_event_and_later_pulls(subscriptions):
    """Stripe keeps a canceled subscription (listed with status=all): its
    ``customer.subscription.deleted`` event was stored as a deletion, and the
    next full pull brought it back alive: delete, create, delete..."""
    sync = subscriptions()
    sync.run(direction="pull")
    canceled = sync.client.delete(f"{API}/connections/{sync.connection_id}/entities/subscriptions/records/"
                                  f"{sync.subscription['id']}", headers=sync.auth)
    assert canceled.status_code == 200, canceled.text
    [event] = [e for e in sync.fake.state.store.events if e["type"] == "customer.subscription.deleted"]
    assert sync.deliver(event).status == "processed"
    row = sync.stored(sync.subscription["id"])
    assert not row.deleted and row.data["status"] == "canceled"
    time.sleep(2.1)  # past the margin within which a page does not overrule an event of its second
    sync.run(direction="pull", full_refresh=True)
    row = sync.stored(sync.subscription["id"])
    assert not row.deleted and row.data["status"] == "canceled"


def test_a_change_of_a_subscription_item_is_sent_as_stripe_writes_items(subscriptions):
    """Stripe reads ``items`` as a list object and takes changes as an array
    by item id: the list object sent back was refused ("Invalid object")."""
    sync = subscriptions()
    sync.run(direction="pull")
    item_id = sync.at_stripe["items"]["data"][0]["id"]
    sync.change(sync.subscription["id"], {"items": {"data": {"0": {"quantity": 3}}}})
    [item] = sync.at_stripe["items"]["data"]
    assert (item["id"], item["quantity"], item["price"]["id"]) == (item_id, 3, sync.prices[0])
    # A new item (no id yet) is added; one marked deleted goes.
    items = sync.stored(sync.subscription["id"]).data["items"]["data"]
    sync.change(sync.subscription["id"], {"items": {"data": [*items, {"price": sync.prices[1], "quantity": 2}]}})
    assert [(i["price"]["id"], i["quantity"]) for i in sync.at_stripe["items"]["data"]] == [
        (sync.prices[0], 3), (sync.prices[1], 2)]
    sync.run(direction="pull")
    sync.change(sync.subscription["id"], {"items": {"data": {"0": {"deleted": True}}}})
    assert [(i["price"]["id"], i["quantity"]) for i in sync.at_stripe["items"]["data"]] == [(sync.prices[1], 2)]
    sync.run(direction="pull")
    assert [i["price"]["id"] for i in sync.stored(sync.subscription["id"]).data["items"]["data"]] == [sync.prices[1]]


def test_updates_carry_an_idempotency_key_of_their_own(subscriptions):
    """A retried update adding a subscription item would add it twice without one."""
    sync = subscriptions()
    sync.run(direction="pull")
    keys = list(sync.fake.state.idempotency_keys)
    sync.change(sync.subscription["id"], {"metadata": {"plan": "gold"}})
    sync.change(sync.subscription["id"], {"metadata": {"plan": "silver"}})
    new = sync.fake.state.idempotency_keys[len(keys):]
    assert len(new) == 2 and all(new) and len(set(new)) == 2 and not set(new) & set(keys)


def test_an_event_rendered_in_another_api_version_brings_a_pull_not_its_shape(subscriptions):
    """An endpoint made in the Dashboard renders events in the account's API
    version: its objects (payment intents without ``charges``, say) replaced
    the records pulled in the plugin's pinned version."""
    sync = subscriptions("customers")
    sync.run(direction="pull")
    customer_id = sync.customer["id"]
    at_stripe = sync.fake.state.store.rows["customers"][customer_id]
    at_stripe["name"] = "Changed at Stripe"
    newer_shape = {key: value for key, value in at_stripe.items() if key not in ("discount", "default_source")}
    event = make_event("customer.updated", {**newer_shape, "test_clock": None}, event_id="evt_newer_version",
                       created=int(time.time()) + 1)
    event["api_version"] = "2024-06-20"
    assert sync.deliver(event).status == "processed"
    deadline = time.monotonic() + 20
    while sync.stored(customer_id).data.get("name") != "Changed at Stripe":  # from the pull the event queued
        assert time.monotonic() < deadline, sync.stored(customer_id).data
        time.sleep(0.05)
    data = sync.stored(customer_id).data
    assert "test_clock" not in data and "discount" in data and "default_source" in data


def test_a_subscription_the_tenant_deletes_is_stored_canceled_as_stripe_keeps_it(subscriptions):
    """Deleting through sync cancels it at Stripe, which keeps it: the hub
    marked it deleted, and the next pull brought it back (delete, create)."""
    sync = subscriptions()
    sync.run(direction="pull")
    deleted = sync.client.delete(f"{sync.records}/{sync.subscription['id']}", params={"sync": True},
                                 headers=sync.auth)
    assert deleted.status_code in (200, 202), deleted.text
    sync.run(direction="push")
    assert sync.at_stripe["status"] == "canceled"
    row = sync.stored(sync.subscription["id"])
    assert (row.deleted, row.data["status"], row.push_status) == (False, "canceled", None)
    time.sleep(2.1)  # past the margin within which a page does not overrule a version of its second
    sync.run(direction="pull", full_refresh=True)
    row = sync.stored(sync.subscription["id"])
    assert (row.deleted, row.data["status"]) == (False, "canceled")


def test_an_item_the_tenant_leaves_out_of_the_items_is_removed(subscriptions):
    """Sync sends the items it holds, changed: an item no longer among them
    stayed at Stripe (which removes only items marked deleted) while the push
    said done."""
    sync = subscriptions()
    sync.run(direction="pull")
    items = sync.stored(sync.subscription["id"]).data["items"]["data"]
    sync.change(sync.subscription["id"], {"items": {"data": [*items, {"price": sync.prices[1], "quantity": 2}]}})
    sync.run(direction="pull")
    [first, second] = sync.stored(sync.subscription["id"]).data["items"]["data"]
    sync.change(sync.subscription["id"], {"items": {"data": [second]}})
    assert [(i["id"], i["quantity"]) for i in sync.at_stripe["items"]["data"]] == [(second["id"], 2)]
    assert [i["id"] for i in sync.stored(sync.subscription["id"]).data["items"]["data"]] == [second["id"]]


def test_a_metered_item_left_out_is_removed_with_its_usage(subscriptions):
    """Stripe deletes a metered item only with clear_usage."""
    sync = subscriptions()
    records = f"{API}/connections/{sync.connection_id}/entities"
    product = sync._create(f"{records}/products/records", {"name": "Calls"})
    metered = sync._create(f"{records}/prices/records", {
        "product": product["id"], "currency": "usd", "unit_amount": 1,
        "recurring": {"interval": "month", "usage_type": "metered"}})
    sync.run(direction="pull")
    items = sync.stored(sync.subscription["id"]).data["items"]["data"]
    sync.change(sync.subscription["id"], {"items": {"data": [*items, {"price": metered["id"]}]}})
    assert [i["price"]["id"] for i in sync.at_stripe["items"]["data"]] == [sync.prices[0], metered["id"]]
    sync.run(direction="pull")
    [licensed, _metered] = sync.stored(sync.subscription["id"]).data["items"]["data"]
    sync.change(sync.subscription["id"], {"items": {"data": [licensed]}})
    assert [i["price"]["id"] for i in sync.at_stripe["items"]["data"]] == [sync.prices[0]]
