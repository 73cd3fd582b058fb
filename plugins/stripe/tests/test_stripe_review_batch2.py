"""Findings of a review (batch 2) of ``ProviderInfo.idempotency_key_seconds``
(Stripe's 24 hours): each test showed a finding, and failed on the code as
reviewed."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import select

from hub.models import SyncRecord
from hub.testing import wait_for_run
from hub_stripe.testing import seed_customers

API = "/api/v1/integrations"


def test_a_create_stripe_refused_with_a_401_is_sent_once_the_key_works_a_day_later(
        client, auth, hub_app, start_fake, connect):
    """A create whose call Stripe refused (401: the restricted key was
    rolled) was never made: the engine stores it as unsent (``unsent=True``),
    but keeps its ``sent_change`` and ``first_sent``. The tenant gives the
    connection a working key a day later (a weekend): the create is then
    taken for one of unknown outcome whose key Stripe forgot, and left failed
    ("it may exist there"), though Stripe has nothing; the tenant must look
    for it and write each such record again."""
    fake = start_fake(rate=1000, available=50_000)
    seed_customers(fake, 1, start=1_700_000_000)
    connection = connect()
    base = f"{API}/connections/{connection['id']}"
    config = client.post(f"{base}/sync-configs", json={"entity": "customers", "direction": "both", "mappings": [
        {"source": "email", "target": "email"}, {"source": "name", "target": "full_name"}]}, headers=auth)
    assert config.status_code == 201, config.text
    records = f"{base}/sync-configs/{config.json()['sync_config']['id']}/records"
    pulled = client.post(f"{base}/sync", json={"entity": "customers", "direction": "pull"}, headers=auth)
    assert wait_for_run(client, auth, connection["id"], pulled.json()["run"]["id"])["status"] == "succeeded"

    keys = dict(fake.state.keys)
    fake.state.keys.clear()  # the key stops working (rolled at Stripe)
    created = client.post(records, json={"data": {"email": "new@example.com", "full_name": "New"},
                                         "mapped": True, "sync": True}, headers=auth)
    assert created.status_code == 201, created.text
    record_id = created.json()["record"]["id"]
    wait_for_run(client, auth, connection["id"], created.json()["run_id"])
    assert not [c for c in fake.state.store.rows["customers"].values() if c.get("email") == "new@example.com"]

    hub = hub_app.state.hub
    with hub.session() as session:  # a day and more on
        row = session.exec(select(SyncRecord).where(SyncRecord.id == record_id)).one()
        assert row.push_status == "pending", row
        if row.sent_change and row.sent_change.get("first_sent"):
            sent = {**row.sent_change, "first_sent": "2020-01-01T00:00:00+00:00"}
            session.execute(sa.update(SyncRecord).where(SyncRecord.id == record_id).values(sent_change=sent))
            session.commit()
    fake.state.keys.update(keys)  # the tenant gives it a working key again
    tested = client.post(f"{base}/test", headers=auth)
    assert tested.status_code == 200, tested.text
    pushed = client.post(f"{base}/sync", json={"entity": "customers", "direction": "push"}, headers=auth)
    assert pushed.status_code == 202, pushed.text
    wait_for_run(client, auth, connection["id"], pushed.json()["run"]["id"])
    made = [c for c in fake.state.store.rows["customers"].values() if c.get("email") == "new@example.com"]
    record = client.get(f"{records}/{record_id}", headers=auth).json()["record"]
    assert len(made) == 1, (record["push_status"], record["push_error"])


def test_a_records_api_create_retried_for_more_than_a_day_is_not_made_twice(client, auth, hub_app, start_fake,
                                                                             connect):
    """The records API sends a create whose answer was lost again under the
    same Stripe key (derived from the client's) whenever the client retries;
    each retry restarted the hub's day for the key. Retried 25 hours after
    the key was first sent, when Stripe has pruned it, it made a second
    customer: it is now refused as of unknown outcome."""
    from datetime import timedelta

    from hub.models import IdempotentCreate, utcnow

    fake = start_fake(rate=1000, available=50_000)
    connection = connect()
    url = f"{API}/connections/{connection['id']}/entities/customers/records"
    body = {"data": {"email": "retried@example.com", "name": "Retried"}, "idempotency_key": "order-1"}
    hub = hub_app.state.hub

    fake.state.lose_next = 1000  # every answer lost (Stripe made the customer)
    assert client.post(url, json=body, headers=auth).status_code >= 500
    assert client.post(url, json=body, headers=auth).status_code >= 500  # the client's next try: lost too
    with hub.session() as session:  # a day and more on since the key was first sent
        [row] = session.exec(select(IdempotentCreate)).all()
        assert row.record["first_sent"]
        an_hour_ago = utcnow() - timedelta(hours=1)
        session.execute(sa.update(IdempotentCreate).values(
            record={**row.record, "first_sent": (utcnow() - timedelta(hours=25)).isoformat()},
            created_at=an_hour_ago, updated_at=an_hour_ago))
        session.commit()
    fake.state.lose_next = 0
    fake.state.store.idempotency.clear()  # Stripe pruned the key
    last = client.post(url, json=body, headers=auth)
    assert last.status_code == 409 and last.json()["code"] == "create_outcome_unknown", last.text
    made = [c for c in fake.state.store.rows["customers"].values() if c.get("email") == "retried@example.com"]
    assert len(made) == 1, made