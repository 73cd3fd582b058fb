"""A sync of Salesforce accounts through ``POST /connections/{id}/sync``
against the fake org: the first pass lands every account in the hub's store
batch by batch; the next one pulls what changed since (SystemModstamp) and
what the delete log says was deleted, and, when a query locator expires in
the middle of it, starts its pass over and still ends with exactly the org's
accounts."""

from __future__ import annotations

import pytest

import hub_salesforce
from hub.testing import wait_for_run
from hub_salesforce import testing as fake

API = "/api/v1/integrations"


def _org_accounts(sfdc) -> dict[str, dict]:
    return {i: {k: row[k] for k in hub_salesforce.SELECTED["accounts"]}
            for i, row in sfdc.org().tables["Account"].items()}


@pytest.mark.parametrize("fake_options", [{"max_batch": 3}])
def test_accounts_sync_in_batches_then_by_changes_through_an_expired_locator(sfdc, connection):
    ids = fake.seed(sfdc.app, "accounts", 7, ago=3600)  # changed before the sync's margin for clock skew
    base = f"{API}/connections/{connection['id']}"
    created = sfdc.post(f"{base}/sync-configs", {"entity": "accounts", "direction": "pull"})
    assert created.status_code == 201, created.text
    records = f"{base}/sync-configs/{created.json()['sync_config']['id']}/records"

    def pull() -> dict:
        started = sfdc.post(f"{base}/sync", {"entity": "accounts", "direction": "pull"})
        assert started.status_code == 202, started.text
        run = wait_for_run(sfdc.client, sfdc.auth, connection["id"], started.json()["run"]["id"])
        assert run["status"] == "succeeded", run
        return run

    def stored() -> dict[str, dict]:
        body = sfdc.get(records, limit=100).json()
        return {r["remote_id"]: r["data"] for r in body["records"] if not r.get("deleted")}

    def queries(since: int) -> list[str]:
        return [path.rsplit("/", 1)[-1] for _host, _method, path in sfdc.api_calls(since) if "/query" in path]

    first = pull()
    assert (first["fetched"], first["created"]) == (7, 7)
    assert stored() == _org_accounts(sfdc)

    for record_id in ids[1:5]:
        fake.touch(sfdc.app, "accounts", record_id, Industry="Banking")
    sfdc.org().delete("Account", ids[6])
    new = fake.seed(sfdc.app, "accounts", 2)
    sfdc.app.state.refuse_locators = 1  # the second batch's locator is gone: the pass starts over
    calls = len(sfdc.api_calls())
    second = pull()
    asked = queries(calls)
    # The query, its locator refused, the query again, its locators to the end.
    assert asked[0] == asked[2] == "query" and asked[1].startswith("01g") and asked.count("query") == 2, asked
    assert stored() == _org_accounts(sfdc)
    assert set(stored()) == (set(ids) - {ids[6]}) | set(new)
    assert all(stored()[i]["Industry"] == "Banking" for i in ids[1:5])
    assert second["updated"] >= 4 and second["created"] == 2, second
    assert any(path.endswith("/sobjects/Account/deleted/") for _h, _m, path in sfdc.api_calls(calls))
