"""A sync of Xero contacts through ``POST /connections/{id}/sync`` against the
fake: the first pass lands every contact in the hub's store through the
tenant's mappings, the next one asks Xero only for what changed
(``If-Modified-Since``), and a change made in the hub reaches Xero."""

from __future__ import annotations

from hub.testing import wait_for_run
from hub_xero import testing as fake

API = "/api/v1/integrations"
MAPPINGS = [
    {"source": "ContactID", "target": "xero_id"},
    {"source": "Name", "target": "name"},
    {"source": "EmailAddress", "target": "email"},
]


def test_contacts_sync_into_the_store_then_by_their_changes(xero):
    connection = xero.connect()
    ids = fake.seed(xero.fake, "contacts", 6, ago=3600)  # changed before the sync's margin for clock skew
    table = xero.tenant().tables["Contacts"]
    base = f"{API}/connections/{connection['id']}"
    created = xero.post(f"{base}/sync-configs", {"entity": "contacts", "direction": "both", "mappings": MAPPINGS})
    assert created.status_code == 201, created.text
    records = f"{base}/sync-configs/{created.json()['sync_config']['id']}/records"

    def pull() -> dict:
        return xero.sync(connection, "contacts", direction="pull")

    def stored() -> dict[str, dict]:
        return xero.stored(records, mapped=True)

    first = pull()
    assert (first["fetched"], first["created"]) == (7, 7)  # (with the organisation's opening customer)
    assert {i: stored()[i] for i in ids} == {i: {"xero_id": i, "name": table[i]["Name"],
                                                 "email": table[i]["EmailAddress"]} for i in ids}

    fake.touch(xero.fake, "contacts", ids[2], Name="Grace Hopper")
    asked = len(xero.fake.state.calls)
    second = pull()
    assert second["updated"] == 1 and second["created"] == 0 and second["fetched"] < 7, second
    since = [s for _m, path, _q, s in xero.fake.state.calls[asked:] if path == "/api.xro/2.0/Contacts"]
    assert since and all(since)  # an incremental pass: If-Modified-Since
    assert stored()[ids[2]]["name"] == "Grace Hopper"

    # The tenant's change reaches Xero (POST /Contacts/{id}).
    written = xero.put(f"{records}/{ids[4]}", {"data": {"email": "ada@example.com"}, "mapped": True, "sync": True})
    assert written.status_code == 200, written.text
    push = wait_for_run(xero.client, xero.auth, connection["id"], written.json()["run_id"])
    assert push["status"] == "succeeded" and push["pushed"] == 1, push
    assert table[ids[4]]["EmailAddress"] == "ada@example.com"
    assert pull()["updated"] == 0  # the hub's own write does not come back as a change
