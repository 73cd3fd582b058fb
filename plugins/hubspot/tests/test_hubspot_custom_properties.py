"""A portal's own (custom) properties through the hub's API against the fake
HubSpot: the properties API names them, listings, searches and reads ask for
them (once a few minutes per connection, not once a page), sync's mappings
name them (``properties.<name>``, the schemas' ``custom_fields``) on pull and
push, and a portal of so many that a URL would be refused is read through
batch reads."""

from __future__ import annotations

import httpx
import pytest

from hub.testing import wait_for_run
from hub_hubspot import testing as fake

API = "/api/v1/integrations"
PROPERTIES = "/crm/v3/properties/contacts"


def properties_calls(hubspot, entity: str = "contacts") -> int:
    return sum(path == f"/crm/v3/properties/{entity}" for _, path in hubspot.fake.state.calls)


def add_crm_properties(hubspot) -> None:
    """What every portal has: properties of its own (a tier, an ERP's id, a number)."""
    fake.add_property(hubspot.fake, "contacts", "customer_tier", "enumeration", options=("gold", "silver", "bronze"))
    fake.add_property(hubspot.fake, "contacts", "erp_id")
    fake.add_property(hubspot.fake, "contacts", "seats", "number")
    fake.add_property(hubspot.fake, "contacts", "old_segment", archived=True)


def test_a_sync_stores_the_portals_properties_and_maps_them_on_pull_and_push(hubspot):
    add_crm_properties(hubspot)
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "contacts", 230, ago=3600)  # three pages of HubSpot's 100
    table = hubspot.fake.state.portal(fake.PORTAL_ID).tables["contacts"]
    table[ids[0]]["properties"] |= {"customer_tier": "silver", "erp_id": "ERP-1", "seats": "12", "fax": "555"}
    base = f"{API}/connections/{connection['id']}"
    refused = hubspot.post(f"{base}/sync-configs", {"entity": "contacts", "mappings": [
        {"source": "properties.Customer-Tier", "target": "tier"}]})
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_field", refused.text
    created = hubspot.post(f"{base}/sync-configs", {"entity": "contacts", "direction": "both", "mappings": [
        {"source": "properties.email", "target": "email"},
        {"source": "properties.customer_tier", "target": "tier"},
        {"source": "properties.erp_id", "target": "erp_id"},
        {"source": "properties.seats", "target": "seats", "transform": "int"}]})
    assert created.status_code == 201, created.text
    records = f"{base}/sync-configs/{created.json()['sync_config']['id']}/records"

    def pull() -> dict:
        return hubspot.sync(connection, "contacts", direction="pull")

    def stored(**params) -> dict[str, dict]:
        return hubspot.stored(records, **params)

    assert pull()["created"] == 230
    assert properties_calls(hubspot) == 1  # for the pass's three pages
    raw = stored()[ids[0]]["properties"]
    assert (raw["customer_tier"], raw["erp_id"], raw["seats"]) == ("silver", "ERP-1", "12")
    # HubSpot's own properties the plugin does not declare (fax) are asked for too; archived ones are not.
    assert raw["fax"] == "555" and "old_segment" not in raw
    mapped = stored(mapped="true")
    assert mapped[ids[0]] == {"email": table[ids[0]]["properties"]["email"], "tier": "silver", "erp_id": "ERP-1",
                              "seats": 12}
    assert (mapped[ids[1]]["tier"], mapped[ids[1]]["seats"]) == (None, None)  # asked for, unset: null

    # The tenant's change reaches HubSpot's own property of the portal.
    written = hubspot.put(f"{records}/{ids[1]}", {"data": {"tier": "gold", "erp_id": "ERP-2", "seats": 40},
                                                   "mapped": True, "sync": True})
    assert written.status_code == 200, written.text
    push = wait_for_run(hubspot.client, hubspot.auth, connection["id"], written.json()["run_id"])
    assert push["status"] == "succeeded" and push["pushed"] == 1, push
    row = table[ids[1]]["properties"]
    assert (row["customer_tier"], row["erp_id"], row["seats"]) == ("gold", "ERP-2", "40")

    fake.touch(hubspot.fake, "contacts", ids[0], customer_tier="bronze")
    again = pull()  # by its changes: a search
    assert again["updated"] == 1, again  # the contact changed there; the hub's own write is no change
    assert stored(mapped="true")[ids[0]]["tier"] == "bronze"
    assert properties_calls(hubspot) == 1  # the list is kept a few minutes: not asked each pass either


def test_records_read_through_the_api_hold_the_portals_properties(hubspot):
    add_crm_properties(hubspot)
    connection = hubspot.connect()
    created = hubspot.post(hubspot.records(connection, "contacts"), {"data": {"properties": {
        "email": "ada@example.com", "customer_tier": "gold", "erp_id": "ERP-7"}}})
    assert created.status_code == 201, created.text
    record = created.json()["record"]
    assert (record["properties"]["customer_tier"], record["properties"]["erp_id"]) == ("gold", "ERP-7")
    assert record["properties"]["seats"] is None and "old_segment" not in record["properties"]
    read = hubspot.get(hubspot.records(connection, "contacts", record["id"])).json()["record"]
    assert read == record
    listed = hubspot.get(hubspot.records(connection, "contacts")).json()["records"]
    assert listed == [record]

    # Searched page by page (since): the property list is not asked again for each page.
    fake.seed(hubspot.fake, "contacts", 4)
    pages, cursor = 0, None
    while True:
        body = hubspot.get(hubspot.records(connection, "contacts"), since="2020-01-01T00:00:00Z", limit=1,
                           **({"cursor": cursor} if cursor else {})).json()
        assert "customer_tier" in body["records"][0]["properties"]
        pages += 1
        if not (cursor := body["next_cursor"]):
            break
    assert pages == 5 and properties_calls(hubspot) == 1

    # A property the portal added since the list was kept: the write's answer holds it.
    fake.add_property(hubspot.fake, "contacts", "renewal_quarter")
    updated = hubspot.put(hubspot.records(connection, "contacts", record["id"]),
                          {"data": {"properties": {"renewal_quarter": "Q3"}}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["record"]["properties"]["renewal_quarter"] == "Q3"
    assert properties_calls(hubspot) == 2
    # One of HubSpot's own the plugin does not declare (fax) is no property added since: not asked again.
    faxed = hubspot.put(hubspot.records(connection, "contacts", record["id"]), {"data": {"properties": {"fax": "5"}}})
    assert faxed.status_code == 200 and faxed.json()["record"]["properties"]["fax"] == "5", faxed.text
    assert properties_calls(hubspot) == 2


def test_writes_of_properties_the_portal_does_not_have_are_refused_as_hubspot_does(hubspot):
    add_crm_properties(hubspot)
    connection = hubspot.connect()
    for data, problem in (({"customer_tier": "platinum"}, "INVALID_OPTION"),
                          ({"old_segment": "smb"}, "PROPERTY_DOESNT_EXIST"),  # (archived)
                          ({"customer_teir": "gold"}, "PROPERTY_DOESNT_EXIST")):
        refused = hubspot.post(hubspot.records(connection, "contacts"),
                               {"data": {"properties": {"email": "a@example.com", **data}}})
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert (body["code"], body["fields"]) == ("validation_error", [f"properties.{next(iter(data))}"])
        assert f'"error": "{problem}"' in body["error"]
    assert not hubspot.fake.state.portal(fake.PORTAL_ID).tables["contacts"]


@pytest.mark.parametrize("fake_options", [{"ten_secondly": (10_000, 10.0), "url_limit": 4_000}])
def test_the_fake_answers_the_properties_asked_for_and_none_other(hubspot):
    add_crm_properties(hubspot)
    [contact] = fake.seed(hubspot.fake, "contacts", 1)
    fake.touch(hubspot.fake, "contacts", contact, customer_tier="gold", erp_id="E")
    headers = {"Authorization": f"Bearer {fake.PRIVATE_APP_TOKEN}"}
    base = f"{hubspot.fake_url}/crm/v3/objects/contacts"
    read = httpx.get(f"{base}/{contact}", params={"properties": "customer_tier,nope"}, headers=headers).json()
    assert set(read["properties"]) == {"customer_tier", "createdate", "hs_object_id", "lastmodifieddate"}
    searched = httpx.post(f"{base}/search", json={"properties": ["erp_id"]}, headers=headers).json()
    assert set(searched["results"][0]["properties"]) == {"erp_id", "createdate", "hs_object_id", "lastmodifieddate"}
    batch = httpx.post(f"{base}/batch/read", json={"properties": ["customer_tier"],
                                                   "inputs": [{"id": contact}, {"id": "999"}]}, headers=headers)
    assert batch.status_code == 207 and batch.json()["errors"][0]["context"] == {"ids": ["999"]}
    assert batch.json()["results"][0]["properties"]["customer_tier"] == "gold"
    described = httpx.get(f"{hubspot.fake_url}{PROPERTIES}", headers=headers).json()["results"]
    own = {p["name"] for p in described if not p.get("hubspotDefined")}
    assert own == {"customer_tier", "erp_id", "seats"}  # (archived ones: ?archived=true)
    too_long = httpx.get(f"{base}/{contact}", params={"properties": ",".join(["x" * 40] * 100)}, headers=headers)
    assert too_long.status_code == 414


def test_a_portal_of_many_properties_is_read_through_batch_reads(hubspot):
    """Hundreds of properties, each named in ``properties=``, would pass
    HubSpot's URL length (a 414): listing and reading then send them in a
    batch read's body."""
    names = [f"integration_field_number_{i:03d}_of_many" for i in range(400)]
    for name in names:
        fake.add_property(hubspot.fake, "contacts", name)
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "contacts", 5)
    fake.touch(hubspot.fake, "contacts", ids[3], **{names[-1]: "last"})
    pages, cursor = [], None
    while True:
        response = hubspot.get(hubspot.records(connection, "contacts"), limit=2,
                               **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        pages.append(response.json()["records"])
        if not (cursor := response.json()["next_cursor"]):
            break
    assert [[r["id"] for r in page] for page in pages] == [ids[:2], ids[2:4], ids[4:]]
    listed = {r["id"]: r for page in pages for r in page}
    assert listed[ids[3]]["properties"][names[-1]] == "last" and len(listed[ids[0]]["properties"]) > 400
    read = hubspot.get(hubspot.records(connection, "contacts", ids[3]))
    assert read.status_code == 200 and read.json()["record"] == listed[ids[3]]
    assert hubspot.get(hubspot.records(connection, "contacts", "999")).status_code == 404
    assert sum(path.endswith("/batch/read") for _, path in hubspot.fake.state.calls) == 3 + 2
    assert properties_calls(hubspot) == 1


def test_a_grant_refused_the_properties_list_reads_the_declared_properties(hubspot):
    """A grant with none of the scopes the properties API takes: HubSpot
    refuses it the properties list (403), once a few minutes, and its
    records hold the declared properties."""
    add_crm_properties(hubspot)
    hubspot.fake.state.withheld_scopes = {"crm.schemas.contacts.read", "crm.objects.contacts.read"}
    connection = hubspot.connect()
    fake.seed(hubspot.fake, "contacts", 3)
    for _ in range(2):
        listed = hubspot.get(hubspot.records(connection, "contacts"), limit=2)
        assert listed.status_code == 200, listed.text
        assert listed.json()["records"][0]["properties"]["email"]
        assert "customer_tier" not in listed.json()["records"][0]["properties"]
    assert properties_calls(hubspot) == 1
