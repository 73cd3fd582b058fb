"""Review (bidirectional sync with field mappings), Shopify customers through
the hub's REST API against the fake shop over real HTTP: mapped writes pushed
with ``"sync": true``, then webhooks arriving in between."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from hub.models import WebhookEvent
from hub.testing import wait_for_run
from hub_shopify import testing as fake

API = "/api/v1/integrations"
MAPPINGS = [
    {"source": "email", "target": "email"},
    {"source": ["first_name", "last_name"], "target": "full_name", "transform": "join"},
    {"source": "note", "target": "notes", "default": ""},
]


@pytest.fixture
def fake_options() -> dict[str, Any]:
    return {"products": 0, "capacity": 40, "leak_per_second": 50.0}


def _customers(shopify, count: int) -> list[str]:
    store = shopify.shop.state.store
    start = datetime(2024, 3, 1, tzinfo=fake.SHOP_TZ)
    for i in range(count):
        store.insert("customers", {
            "email": f"customer{i}@example.com", "first_name": f"First{i}", "last_name": f"Last{i}",
            "phone": None, "state": "enabled", "verified_email": True, "tags": "", "note": f"note {i}",
            "tax_exempt": False, "currency": "CAD", "addresses": []},
            at=(start + timedelta(minutes=i)).isoformat(timespec="seconds"))
    return sorted(str(c["id"]) for c in store.tables["customers"].all())


def _settled(shopify, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with shopify.hub_app.state.hub.session() as session:
            if not any(e.status == "pending" for e in session.exec(select(WebhookEvent))):
                return
        assert time.monotonic() < deadline, "webhook events not applied"
        time.sleep(0.05)


def test_the_late_echo_of_the_hubs_own_update_does_not_bring_back_a_customer_the_hub_deleted(shopify):
    """The tenant changes a customer through the hub (pushed), then deletes it
    (pushed: gone at Shopify). Shopify's ``customers/update`` delivery for the
    hub's own update (the version the push's answer stored) arrives after
    that, as deliveries do (they are retried for hours, in no order): the
    customer must stay deleted. The push of the deletion keeps the stored
    version's content hash, so the delivery of that same version is not
    taken for stale (``_stale`` needs the hash cleared) and revives the
    record: ``deleted`` false again, and the app told it was created."""
    ids = _customers(shopify, 3)
    connection_id = shopify.connect()
    created = shopify.post(f"{API}/connections/{connection_id}/sync-configs",
                           {"entity": "customers", "direction": "both", "mappings": MAPPINGS})
    assert created.status_code == 201, created.text
    records = f"{API}/connections/{connection_id}/sync-configs/{created.json()['sync_config']['id']}/records"
    started = shopify.post(f"{API}/connections/{connection_id}/sync", {"entity": "customers", "direction": "pull"})
    assert wait_for_run(shopify.client, shopify.auth, connection_id, started.json()["run"]["id"])["status"] == \
        "succeeded"
    target = ids[1]

    changed = shopify.put(f"{records}/{target}", {"data": {"notes": "VIP"}, "mapped": True, "sync": True})
    assert changed.status_code == 200, changed.text
    assert wait_for_run(shopify.client, shopify.auth, connection_id, changed.json()["run_id"])["pushed"] == 1
    echo = dict(shopify.shop.state.store.tables["customers"].get(target))  # what customers/update carries
    assert echo["note"] == "VIP"

    deleted = shopify.client.delete(f"{records}/{target}", params={"sync": "true"}, headers=shopify.auth)
    assert deleted.status_code == 200, deleted.text
    assert wait_for_run(shopify.client, shopify.auth, connection_id, deleted.json()["run_id"])["pushed"] == 1
    assert shopify.shop.state.store.tables["customers"].get(target) is None
    assert shopify.get(f"{records}/{target}").json()["record"]["deleted"] is True

    body, headers = fake.signed_delivery("customers/update", echo)
    answer = shopify.client.post(f"{API}/webhooks/shopify", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["received"] == 1, answer.text
    _settled(shopify)

    record = shopify.get(f"{records}/{target}").json()["record"]
    assert record["deleted"] is True, record
    live = shopify.get(records).json()["records"]
    assert target not in {r["remote_id"] for r in live}
