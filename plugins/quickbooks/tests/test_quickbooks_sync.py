"""Sync of QuickBooks customers through the hub's API: a pull lands the
fake company's records in the store, the next pull takes only what changed
since (the LastUpdatedTime filter), and a webhook's change queues a pull."""

from __future__ import annotations

import pytest

from hub.testing import wait_for_run, wait_until
from hub_quickbooks import testing as fake

API = "/api/v1/integrations"


def _pull(qbo, connection_id: str) -> dict:
    response = qbo.post(f"{API}/connections/{connection_id}/sync", {"entity": "customers", "direction": "pull"})
    assert response.status_code == 202, response.text
    run = wait_for_run(qbo.client, qbo.auth, connection_id, response.json()["run"]["id"])
    assert run["status"] == "succeeded", run
    return run


@pytest.mark.parametrize("fake_options", [{"customers": 7, "per_second": 1000, "per_minute": 100_000}])
def test_a_pull_lands_the_company_s_customers_in_the_store(qbo, connection):
    config = qbo.post(f"{API}/connections/{connection['id']}/sync-configs", {"entity": "customers"})
    assert config.status_code == 201, config.text
    records = f"{API}/connections/{connection['id']}/sync-configs/{config.json()['sync_config']['id']}/records"
    first = _pull(qbo, connection["id"])
    assert (first["created"], first["fetched"]) == (7, 7)
    company = fake.company(qbo.app)
    stored = {r["remote_id"]: r["data"] for r in qbo.get(records, limit=100).json()["records"]}
    assert stored == {i: row for i, row in company.tables["Customer"].items()}

    # Changed in QuickBooks: the next pull asks for what changed since, and stores it.
    row = company.tables["Customer"]["3"]
    company.update("Customer", {"Id": "3", "SyncToken": row["SyncToken"], "sparse": True, "DisplayName": "Renamed"})
    asked = len(qbo.queries())
    second = _pull(qbo, connection["id"])
    assert second["updated"] == 1
    assert all("MetaData.LastUpdatedTime >=" in query for query in qbo.queries()[asked:])
    assert qbo.get(f"{records}/3").json()["record"]["data"]["DisplayName"] == "Renamed"

    # A webhook names the change (no record): the hub pulls the customers, and the event is processed.
    row = company.tables["Customer"]["4"]
    company.update("Customer", {"Id": "4", "SyncToken": row["SyncToken"], "sparse": True, "Notes": "from QuickBooks"})
    headers, body = fake.delivery(fake.legacy({fake.REALM: [fake.change("Customer", "4", "Update")]}))
    delivered = qbo.client.post(f"{API}/webhooks/quickbooks", content=body, headers=headers)
    assert delivered.json()["received"] == 1, delivered.text
    wait_until(lambda: qbo.get(f"{API}/connections/{connection['id']}/webhooks/events").json()["events"][0][
        "status"] == "processed", "the webhook's pull")
    assert qbo.get(f"{records}/4").json()["record"]["data"]["Notes"] == "from QuickBooks"
