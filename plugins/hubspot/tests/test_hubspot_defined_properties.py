"""HubSpot's own properties the plugin does not declare (of the hundreds it
defines: ``hs_analytics_source``, ``fax``) through the hub's API against the
fake HubSpot: the properties API lists them (``hubspotDefined``), records
hold them, sync's mappings name them (``properties.<name>``) and map their
values, and a record holding HubSpot's read-only ones is still pushed.
``HUB_HUBSPOT_PROPERTIES=own`` reads the declared and the portal's own only."""

from __future__ import annotations

import pytest

from hub.testing import wait_for_run
from hub_hubspot import testing as fake

API = "/api/v1/integrations"


def sync_config(hubspot, connection: dict, mappings: list[dict]):
    return hubspot.post(f"{API}/connections/{connection['id']}/sync-configs",
                        {"entity": "contacts", "direction": "both", "mappings": mappings})


MAPPINGS = [{"source": "properties.email", "target": "email"},
            {"source": "properties.firstname", "target": "first_name"},
            {"source": "properties.hs_analytics_source", "target": "source"},
            {"source": "properties.fax", "target": "fax"},
            {"source": "properties.hs_analytics_num_page_views", "target": "page_views", "transform": "int"}]


def test_a_mapping_of_hubspots_own_properties_maps_their_values_on_pull_and_pushes(hubspot):
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "contacts", 3, ago=3600)
    table = hubspot.fake.state.portal(fake.PORTAL_ID).tables["contacts"]
    for n, record_id in enumerate(ids):
        table[record_id]["properties"] |= {"hs_analytics_source": "ORGANIC_SEARCH", "fax": f"555-{n}",
                                           "hs_analytics_num_page_views": str(10 + n)}
    # Validation: HubSpot's names are taken, as the portal's own are; a name HubSpot could not
    # give, or a property outside properties, is not.
    for wrong in ("properties.Hs-Analytics-Source", "hs_analytics_source"):
        refused = sync_config(hubspot, connection, [{"source": wrong, "target": "source"}])
        assert refused.status_code == 422 and refused.json()["code"] == "unknown_field", (wrong, refused.text)
    created = sync_config(hubspot, connection, MAPPINGS)
    assert created.status_code == 201, created.text
    records = f"{API}/connections/{connection['id']}/sync-configs/{created.json()['sync_config']['id']}/records"

    first = hubspot.sync(connection, "contacts", direction="pull")
    assert first["created"] == 3, first
    mapped = hubspot.stored(records, mapped="true")
    assert {i: (m["source"], m["fax"], m["page_views"]) for i, m in mapped.items()} == {
        i: ("ORGANIC_SEARCH", f"555-{n}", 10 + n) for n, i in enumerate(ids)}

    # The record holds HubSpot's read-only properties, sent back whole with the tenant's change:
    # HubSpot would refuse them written; those unchanged are left out, and the push goes through.
    written = hubspot.put(f"{records}/{ids[1]}", {"data": {"first_name": "Grace", "source": "OFFLINE",
                                                           "fax": "555-9"}, "mapped": True, "sync": True})
    assert written.status_code == 200, written.text
    push = wait_for_run(hubspot.client, hubspot.auth, connection["id"], written.json()["run_id"])
    assert push["status"] == "succeeded" and push["pushed"] == 1, (push, hubspot.stored(records))
    row = table[ids[1]]["properties"]
    assert (row["firstname"], row["hs_analytics_source"], row["fax"], row["hs_analytics_num_page_views"]) == (
        "Grace", "OFFLINE", "555-9", "11")
    patched = [p for m, p in hubspot.fake.state.calls if m == "PATCH"]
    assert patched == [f"/crm/v3/objects/contacts/{ids[1]}"]

    # A read-only one the tenant changes is sent, and refused as HubSpot refuses it.
    refused = hubspot.put(f"{records}/{ids[2]}", {"data": {"page_views": 99}, "mapped": True, "sync": True})
    push = wait_for_run(hubspot.client, hubspot.auth, connection["id"], refused.json()["run_id"])
    assert push["failed"] == 1, push
    stored = hubspot.get(f"{records}/{ids[2]}").json()["record"]
    assert stored["push_status"] == "failed" and "READ_ONLY_VALUE" in stored["push_error"], stored
    assert stored["push_error_fields"] == ["properties.hs_analytics_num_page_views"]
    assert table[ids[2]]["properties"]["hs_analytics_num_page_views"] == "12"


def test_records_read_and_listed_hold_hubspots_own_properties(hubspot):
    # A Sensitive Data property: listed by the properties API, its value taking scopes not asked for.
    fake.add_property(hubspot.fake, "contacts", "passport_number", data_sensitivity="sensitive")
    connection = hubspot.connect()
    [contact] = fake.seed(hubspot.fake, "contacts", 1)
    fake.touch(hubspot.fake, "contacts", contact, hs_analytics_source="REFERRALS")
    read = hubspot.get(hubspot.records(connection, "contacts", contact)).json()["record"]
    assert read["properties"]["hs_analytics_source"] == "REFERRALS"
    assert read["properties"]["hs_analytics_num_page_views"] is None  # (asked for, unset: null)
    listed = hubspot.get(hubspot.records(connection, "contacts")).json()["records"]
    searched = hubspot.get(hubspot.records(connection, "contacts"), since="2020-01-01T00:00:00Z").json()["records"]
    assert listed == searched == [read]
    assert "passport_number" not in read["properties"]
    [company] = fake.seed(hubspot.fake, "companies", 1)
    assert "num_associated_contacts" in hubspot.get(
        hubspot.records(connection, "companies", company)).json()["record"]["properties"]


@pytest.mark.parametrize("hub_settings", ["own"], indirect=True)
def test_an_operator_may_read_the_declared_and_the_portals_own_properties_only(hubspot):
    fake.add_property(hubspot.fake, "contacts", "customer_tier")
    connection = hubspot.connect()
    [contact] = fake.seed(hubspot.fake, "contacts", 1)
    fake.touch(hubspot.fake, "contacts", contact, hs_analytics_source="REFERRALS", customer_tier="gold")
    read = hubspot.get(hubspot.records(connection, "contacts", contact)).json()["record"]["properties"]
    assert read["customer_tier"] == "gold" and read["email"]
    assert "hs_analytics_source" not in read and "fax" not in read


def test_the_properties_api_lists_hubspots_own_as_hubspot_defined(hubspot):
    import httpx

    headers = {"Authorization": f"Bearer {fake.PRIVATE_APP_TOKEN}"}
    fake.add_property(hubspot.fake, "contacts", "customer_tier")
    listed = httpx.get(f"{hubspot.fake_url}/crm/v3/properties/contacts", headers=headers).json()["results"]
    by_name = {p["name"]: p for p in listed}
    assert by_name["hs_analytics_source"]["hubspotDefined"] is True
    assert by_name["hs_analytics_num_page_views"]["modificationMetadata"]["readOnlyValue"] is True
    assert by_name["fax"]["hubspotDefined"] is True
    assert "hubspotDefined" not in by_name["customer_tier"]
