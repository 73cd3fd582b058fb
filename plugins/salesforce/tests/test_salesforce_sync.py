"""A sync of Salesforce accounts through ``POST /connections/{id}/sync``
against the fake org: the first pass lands every account in the hub's store
batch by batch; the next one pulls what changed since (SystemModstamp) and
what the delete log says was deleted, and, when a query locator expires in
the middle of it, starts its pass over and still ends with exactly the org's
accounts."""

from __future__ import annotations

import pytest

from hub.testing import wait_for_run
from hub_salesforce import testing as fake

API = "/api/v1/integrations"


def _org_accounts(sfdc) -> dict[str, dict]:
    # (A record holds every field, but those a user's viewing it moves.)
    return {i: {k: v for k, v in row.items() if k not in ("LastViewedDate", "LastReferencedDate")}
            for i, row in sfdc.org().tables["Account"].items()}


@pytest.mark.parametrize("fake_options", [{"max_batch": 3}])
def test_accounts_sync_in_batches_then_by_changes_through_an_expired_locator(sfdc, connection):
    ids = fake.seed(sfdc.app, "accounts", 7, ago=3600)  # changed before the sync's margin for clock skew
    records = sfdc.sync_config(connection, "accounts", direction="pull")

    def pull() -> dict:
        return sfdc.sync(connection, "accounts", direction="pull")

    def stored() -> dict[str, dict]:
        return sfdc.stored(records)

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


def test_an_orgs_own_fields_are_read_mapped_and_pushed_both_ways(sfdc, connection):
    """Fields the org added (``Tier__c``, ``Seats__c``): listed records hold
    them (the query selects what ``describe`` names), mappings may name them
    (the schema's ``custom_fields``), and a mapped change is pushed to them;
    a name that is no custom field is still refused when the mapping is saved."""
    fake.add_custom_field(sfdc.app, "accounts", "Tier__c")
    fake.add_custom_field(sfdc.app, "accounts", "Seats__c", "double")
    [first, second] = fake.seed(sfdc.app, "accounts", 2, ago=3600)
    fake.touch(sfdc.app, "accounts", first, Tier__c="Silver", Seats__c=12)
    base = f"{API}/connections/{connection['id']}"
    refused = sfdc.post(f"{base}/sync-configs", {"entity": "accounts", "direction": "both", "mappings": [
        {"source": "Tier", "target": "tier"}]})
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_field", refused.text
    created = sfdc.post(f"{base}/sync-configs", {"entity": "accounts", "direction": "both", "mappings": [
        {"source": "Name", "target": "name"}, {"source": "Tier__c", "target": "tier"},
        {"source": "Seats__c", "target": "seats", "transform": "int"}]})
    assert created.status_code == 201, created.text
    records = f"{base}/sync-configs/{created.json()['sync_config']['id']}/records"

    started = sfdc.post(f"{base}/sync", {"entity": "accounts", "direction": "pull"})
    assert wait_for_run(sfdc.client, sfdc.auth, connection["id"], started.json()["run"]["id"])["status"] == "succeeded"
    mapped = {r["remote_id"]: r["data"] for r in sfdc.get(records, mapped="true").json()["records"]}
    assert mapped[first]["tier"] == "Silver" and mapped[first]["seats"] == 12
    assert mapped[second]["tier"] is None

    changed = sfdc.put(f"{records}/{second}", {"data": {"tier": "Gold", "seats": 40}, "mapped": True, "sync": True})
    assert changed.status_code == 200, changed.text
    wait_for_run(sfdc.client, sfdc.auth, connection["id"], changed.json()["run_id"])
    row = sfdc.org().tables["Account"][second]
    assert (row["Tier__c"], row["Seats__c"]) == ("Gold", 40)
    # A read of one record holds the org's fields as a listing does (no change seen where none was made).
    live = sfdc.get(sfdc.records(connection, "accounts", first)).json()["record"]
    assert live["Tier__c"] == "Silver" and "attributes" not in live


def test_a_record_a_user_only_looked_at_is_no_conflict_for_a_push(sfdc, connection):
    """Viewing a record moves its LastViewedDate, not its SystemModstamp: those
    fields are not read, so the push's check finds the record unchanged."""
    [account] = fake.seed(sfdc.app, "accounts", 1, ago=3600)
    base = f"{API}/connections/{connection['id']}"
    created = sfdc.post(f"{base}/sync-configs", {"entity": "accounts", "direction": "both",
                                                 "conflict_policy": "review"})
    records = f"{base}/sync-configs/{created.json()['sync_config']['id']}/records"
    started = sfdc.post(f"{base}/sync", {"entity": "accounts", "direction": "pull"})
    assert wait_for_run(sfdc.client, sfdc.auth, connection["id"], started.json()["run"]["id"])["status"] == "succeeded"
    fake.view_in_ui(sfdc.app, "accounts", account)
    changed = sfdc.put(f"{records}/{account}", {"data": {"Industry": "Energy"}, "sync": True})
    assert changed.status_code == 200, changed.text
    run = wait_for_run(sfdc.client, sfdc.auth, connection["id"], changed.json()["run_id"])
    assert run["status"] == "succeeded" and run["conflicts"] == 0 and run["pushed"] == 1, run
    assert sfdc.org().tables["Account"][account]["Industry"] == "Energy"
