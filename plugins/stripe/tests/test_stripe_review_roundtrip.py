"""Found by a review of bidirectional sync with field mappings: Stripe customers through
the hub's REST API against the fake Stripe over real HTTP: mapped writes
pushed with ``"sync": true``, and webhooks arriving in between."""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import select

from hub.models import WebhookEvent
from hub.testing import wait_for_run
from hub_stripe.testing import make_event, seed_customers, signed_delivery

API = "/api/v1/integrations"
SECRET = "whsec_review_roundtrip"


class Customers:
    """A Stripe connection's customers config (``both``), through the API."""

    def __init__(self, client, auth, hub_app, fake, connection: dict, mappings: list[dict[str, Any]]):
        self.client, self.auth, self.hub_app, self.fake = client, auth, hub_app, fake
        self.connection_id = connection["id"]
        response = client.post(f"{API}/connections/{self.connection_id}/sync-configs",
                               json={"entity": "customers", "direction": "both", "mappings": mappings},
                               headers=auth)
        assert response.status_code == 201, response.text
        self.records = (f"{API}/connections/{self.connection_id}/sync-configs/"
                        f"{response.json()['sync_config']['id']}/records")

    @property
    def rows(self) -> dict[str, dict[str, Any]]:
        return self.fake.state.store.rows["customers"]

    def wait(self, run_id: str) -> dict:
        return wait_for_run(self.client, self.auth, self.connection_id, run_id)

    def pull(self) -> dict:
        response = self.client.post(f"{API}/connections/{self.connection_id}/sync",
                                    json={"entity": "customers", "direction": "pull"}, headers=self.auth)
        assert response.status_code == 202, response.text
        run = self.wait(response.json()["run"]["id"])
        assert run["status"] == "succeeded", run
        return run

    def record(self, record_id: str, mapped: bool = True) -> dict:
        response = self.client.get(f"{self.records}/{record_id}", params={"mapped": mapped}, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["record"]

    def deliver(self, event: dict[str, Any]) -> None:
        url = f"{API}/webhooks/stripe?connection_id={self.connection_id}"
        body, headers = signed_delivery(SECRET, event)
        answer = self.client.post(url, content=body, headers=headers)
        assert answer.status_code == 200 and answer.json()["received"] == 1, answer.text
        deadline = time.monotonic() + 20
        while True:
            with self.hub_app.state.hub.session() as session:
                stored = session.exec(select(WebhookEvent).where(WebhookEvent.dedup_key == event["id"])).one()
            if stored.status != "pending":
                return
            assert time.monotonic() < deadline, "the event was not processed"
            time.sleep(0.05)


def _customers(client, auth, hub_app, start_fake, connect, mappings: list[dict[str, Any]]) -> Customers:
    fake = start_fake(rate=1000, available=50_000)
    seed_customers(fake, 3, start=1_700_000_000)
    customers = Customers(client, auth, hub_app, fake, connect(webhook_secret=SECRET), mappings)
    assert customers.pull()["created"] == 3
    return customers


def test_a_split_name_written_with_the_separator_inside_a_piece_reads_back_as_written(
        client, auth, hub_app, start_fake, connect):
    """Stripe's ``name`` split into ``first_name`` and ``last_name`` (the
    README's own example). The tenant writes first_name "Mary Ann" (a two-word
    first name): the hub accepts it and pushes ``name: "Mary Ann Smith"``,
    which reads back, at once and after the push, as first_name "Mary" and
    last_name "Ann Smith": what was written is not what is read, and the
    tenant's next write of last_name sends "Mary Ann Smith" apart anew. Either
    the write is refused (``invalid_value``: the piece holds the separator)
    or it reads back as written."""
    customers = _customers(client, auth, hub_app, start_fake, connect, [
        {"source": "email", "target": "email"},
        {"source": "name", "target": ["first_name", "last_name"], "transform": "split"}])
    target = sorted(customers.rows)[0]
    customers.rows[target]["name"] = "Jane Smith"
    customers.pull()
    assert customers.record(target)["data"]["first_name"] == "Jane"

    written = {"first_name": "Mary Ann", "last_name": "Smith"}
    answer = client.put(f"{customers.records}/{target}", json={"data": written, "mapped": True, "sync": True},
                        headers=auth)
    if answer.status_code == 422:
        assert answer.json()["code"] == "invalid_value", answer.text
        return
    assert answer.status_code == 200, answer.text
    customers.wait(answer.json()["run_id"])
    data = customers.record(target)["data"]
    assert {k: data[k] for k in written} == written, (data, customers.rows[target]["name"])


def test_the_late_event_of_an_update_does_not_bring_back_a_customer_the_hub_deleted(
        client, auth, hub_app, start_fake, connect):
    """The tenant changes a customer through the hub (pushed), then deletes it
    (pushed: Stripe deletes it). Stripe's ``customer.updated`` event of the
    hub's own update, dated when it was made, is delivered after that
    (Stripe sends events in no order, and retries them for days): the
    customer must stay deleted in the hub. A Stripe customer has no
    modification time, so the push stored its answer as of the time asked
    less a minute: the event is taken for a newer version of a deleted
    record and revives it."""
    customers = _customers(client, auth, hub_app, start_fake, connect, [
        {"source": "email", "target": "email"}, {"source": "name", "target": "full_name"}])
    target = sorted(customers.rows)[1]

    changed = client.put(f"{customers.records}/{target}",
                         json={"data": {"full_name": "Ada Lovelace"}, "mapped": True, "sync": True}, headers=auth)
    assert changed.status_code == 200, changed.text
    assert customers.wait(changed.json()["run_id"])["pushed"] == 1
    updated_event = make_event("customer.updated", customers.rows[target],
                               previous_attributes={"name": "before"})

    deleted = client.delete(f"{customers.records}/{target}", params={"sync": "true"}, headers=auth)
    assert deleted.status_code == 200, deleted.text
    assert customers.wait(deleted.json()["run_id"])["pushed"] == 1
    assert target not in customers.rows
    assert customers.record(target)["deleted"] is True

    customers.deliver(updated_event)
    record = customers.record(target)
    assert record["deleted"] is True, record


def test_a_create_whose_answer_was_lost_longer_ago_than_stripe_keeps_its_key_is_not_made_twice(
        client, auth, hub_app, start_fake, connect):
    """A create's answers are all lost (Stripe made the customer): the record
    keeps its Idempotency-Key to send again. Sync runs only when asked (or on
    a schedule), so the next push may come a day later, when Stripe has
    pruned the key (after 24 hours) and would take it for a new create."""
    import sqlalchemy as sa

    from hub.models import SyncRecord

    customers = _customers(client, auth, hub_app, start_fake, connect, [
        {"source": "email", "target": "email"}, {"source": "name", "target": "full_name"}])
    state = customers.fake.state
    state.lose_next = 1000
    created = client.post(customers.records, json={"data": {"email": "lost@example.com", "full_name": "Lost"},
                                                   "mapped": True, "sync": True}, headers=auth)
    assert created.status_code == 201, created.text
    record_id = created.json()["record"]["id"]
    assert customers.wait(created.json()["run_id"])["status"] == "failed"
    assert len([c for c in customers.rows.values() if c.get("email") == "lost@example.com"]) == 1
    state.lose_next = 0
    hub = hub_app.state.hub
    with hub.session() as session:  # a day and more on: Stripe has pruned the key
        row = session.exec(select(SyncRecord).where(SyncRecord.id == record_id)).one()
        sent = dict(row.sent_change)
        assert sent["first_sent"]
        sent["first_sent"] = "2020-01-01T00:00:00+00:00"
        session.execute(sa.update(SyncRecord).where(SyncRecord.id == record_id).values(sent_change=sent))
        session.commit()
    state.store.idempotency.clear()
    pushed = client.post(f"{API}/connections/{customers.connection_id}/sync",
                         json={"entity": "customers", "direction": "push"}, headers=auth)
    assert pushed.status_code == 202, pushed.text
    customers.wait(pushed.json()["run"]["id"])
    assert len([c for c in customers.rows.values() if c.get("email") == "lost@example.com"]) == 1
    record = customers.record(record_id)
    assert record["push_status"] == "failed" and "not sent again" in record["push_error"], record
