"""A sync of HubSpot contacts through ``POST /connections/{id}/sync`` against
the fake: the first pass lands every contact in the hub's store through the
tenant's mappings (dotted paths into ``properties``), the next one pulls only
what changed, through the search endpoint, and a change made in the hub
reaches HubSpot."""

from __future__ import annotations

from hub.testing import wait_for_run
from hub_hubspot import testing as fake

API = "/api/v1/integrations"
MAPPINGS = [
    {"source": "id", "target": "hubspot_id"},
    {"source": "properties.email", "target": "email"},
    {"source": "properties.firstname", "target": "first_name"},
    {"source": "properties.lifecyclestage", "target": "stage"},
]


def test_contacts_sync_into_the_store_then_by_their_changes(hubspot):
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "contacts", 7, ago=3600)  # changed before the sync's margin for clock skew
    base = f"{API}/connections/{connection['id']}"
    created = hubspot.post(f"{base}/sync-configs", {"entity": "contacts", "direction": "both", "mappings": MAPPINGS})
    assert created.status_code == 201, created.text
    records = f"{base}/sync-configs/{created.json()['sync_config']['id']}/records"

    def pull() -> dict:
        return hubspot.sync(connection, "contacts", direction="pull")

    def stored() -> dict[str, dict]:
        return hubspot.stored(records, mapped=True)

    first = pull()
    assert (first["fetched"], first["created"]) == (7, 7)
    table = hubspot.fake.state.portal(fake.PORTAL_ID).tables["contacts"]
    assert stored() == {i: {"hubspot_id": i, "email": table[i]["properties"]["email"],
                            "first_name": table[i]["properties"]["firstname"], "stage": None} for i in ids}

    fake.touch(hubspot.fake, "contacts", ids[2], firstname="Grace", lifecyclestage="customer")
    searched = sum(path.endswith("/search") for _, path in hubspot.fake.state.calls)
    second = pull()
    # The changed contact, and the newest of the first pass (changed at the watermark itself).
    assert (second["fetched"], second["updated"], second["created"]) == (2, 1, 0)
    assert sum(path.endswith("/search") for _, path in hubspot.fake.state.calls) == searched + 1
    assert stored()[ids[2]] == {"hubspot_id": ids[2], "email": table[ids[2]]["properties"]["email"],
                                "first_name": "Grace", "stage": "customer"}

    # The tenant's change reaches HubSpot under properties.
    written = hubspot.put(f"{records}/{ids[4]}", {"data": {"first_name": "Ada", "stage": "lead"}, "mapped": True,
                                                   "sync": True})
    assert written.status_code == 200, written.text
    push = wait_for_run(hubspot.client, hubspot.auth, connection["id"], written.json()["run_id"])
    assert push["status"] == "succeeded" and push["pushed"] == 1, push
    assert (table[ids[4]]["properties"]["firstname"], table[ids[4]]["properties"]["lifecyclestage"]) == ("Ada", "lead")
    assert pull()["updated"] == 0  # the hub's own write does not come back as a change
