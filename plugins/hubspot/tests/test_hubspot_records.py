"""HubSpot records through the hub's records API against the fake HubSpot:
pages of ``after`` cursors, modified-since listing through the search endpoint
(past its 10,000-result cap), writes answered whole, and HubSpot's refusals
as clear API errors."""

from __future__ import annotations

import httpx
import pytest

from hub.testing import serve
from hub.testing.fakes import Scripted
from hub_hubspot import testing as fake


def listed(hubspot, connection, entity, limit, **params):
    """Every page through the API: the pages' ids."""
    pages, cursor = [], None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = hubspot.get(hubspot.records(connection, entity), **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([r["id"] for r in body["records"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_pages_follow_hubspots_after_cursor_to_the_last(hubspot):
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "companies", 7)
    assert listed(hubspot, connection, "companies", 3) == [ids[:3], ids[3:6], ids[6:]]
    first = hubspot.get(hubspot.records(connection, "companies"), limit=1).json()["records"][0]
    # HubSpot's shape, with every declared property asked for (unset ones null).
    assert set(first) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert first["properties"]["name"] == "Seed company 1" and first["properties"]["phone"] is None
    assert first["properties"]["hs_lastmodifieddate"] == first["updatedAt"]


#: Answers HubSpot gives now and then: more said to follow, with no way to them.
ODD_PAGES = {
    "an empty page said to be followed": {"results": [], "paging": {"next": {"after": "9", "link": "https://x"}}},
    "a next link without after": {"results": [{"id": "51", "properties": {}}], "paging": {"next": {"link": "x"}}},
    "no results": {"results": None},
}


def test_a_listing_hubspot_cannot_continue_is_a_provider_error_not_a_last_page(hubspot, monkeypatch):
    scripted = Scripted(hubspot.fake)
    with serve(scripted) as url:
        monkeypatch.setenv("HUB_HUBSPOT_ORIGIN", url)
        connection = hubspot.connect()
        for what, answer in ODD_PAGES.items():
            scripted.script("/crm/v3/objects/contacts", (200, answer))
            response = hubspot.get(hubspot.records(connection, "contacts"), limit=5)
            assert response.status_code == 502 and response.json()["code"] == "provider_error", (what, response.text)
    assert scripted.answered == ["/crm/v3/objects/contacts"] * 3


def test_since_lists_what_changed_through_the_search_endpoint(hubspot):
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "contacts", 6)
    for record_id in (ids[4], ids[1]):
        fake.touch(hubspot.fake, "contacts", record_id, firstname="Changed")
    table = hubspot.fake.state.portal(fake.PORTAL_ID).tables["contacts"]
    since = table[ids[4]]["updatedAt"]  # the first change: the second is later
    pages = listed(hubspot, connection, "contacts", 1, since=since)
    assert pages == [[ids[1]], [ids[4]]]  # in ascending id order
    searches = [path for method, path in hubspot.fake.state.calls if path.endswith("/search")]
    assert searches == ["/crm/v3/objects/contacts/search"] * 2
    record = hubspot.get(hubspot.records(connection, "contacts"), since=since, limit=5).json()["records"][0]
    assert record["properties"]["firstname"] == "Changed" and record["properties"]["email"]


@pytest.mark.parametrize("fake_options", [{"ten_secondly": (10_000, 10.0), "search_cap": 5,
                                           "search_per_second": 100}])
@pytest.mark.parametrize("limits", [{"ten_secondly": (10_000, 10.0), "search": (100, 1.0)}])
def test_since_lists_past_the_searchs_result_cap(hubspot):
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "deals", 13)
    # The fake pages no search past its cap of 5 results, as HubSpot none past 10,000.
    token = next(iter(hubspot.fake.state.access))
    refused = httpx.post(f"{hubspot.fake_url}/crm/v3/objects/deals/search",
                         json={"limit": 3, "after": "6"}, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 400 and refused.json()["category"] == "VALIDATION_ERROR"
    pages = listed(hubspot, connection, "deals", 3, since="2020-01-01T00:00:00Z")
    assert [i for page in pages for i in page] == ids and len(pages) == 5


def test_records_are_created_updated_and_archived_through_the_api(hubspot):
    connection = hubspot.connect()
    created = hubspot.post(hubspot.records(connection, "contacts"),
                           {"data": {"properties": {"email": "ada@example.com", "firstname": "Ada"}}})
    assert created.status_code == 201, created.text
    record = created.json()["record"]
    # Read again after the write: whole, as listed (HubSpot answers only the properties written).
    assert record["properties"]["email"] == "ada@example.com" and "phone" in record["properties"]
    assert record == hubspot.get(hubspot.records(connection, "contacts", record["id"])).json()["record"]

    updated = hubspot.put(hubspot.records(connection, "contacts", record["id"]),
                          {"data": {"properties": {"lastname": "Lovelace", "phone": "+44 20 7946 0000"}}})
    assert updated.status_code == 200, updated.text
    properties = updated.json()["record"]["properties"]
    assert (properties["firstname"], properties["lastname"], properties["phone"]) == (
        "Ada", "Lovelace", "+44 20 7946 0000")
    assert updated.json()["record"]["updatedAt"] > record["updatedAt"]

    assert hubspot.delete(hubspot.records(connection, "contacts", record["id"])).status_code == 200
    assert hubspot.get(hubspot.records(connection, "contacts", record["id"])).status_code == 404
    # HubSpot archives with a 204 whatever the id.
    assert hubspot.delete(hubspot.records(connection, "contacts", record["id"])).status_code == 200


def test_a_second_contact_with_a_taken_email_is_a_clear_conflict(hubspot):
    connection = hubspot.connect()
    first = hubspot.post(hubspot.records(connection, "contacts"), {"data": {"properties": {"email": "a@example.com"}}})
    existing = first.json()["record"]["id"]
    again = hubspot.post(hubspot.records(connection, "contacts"),
                         {"data": {"properties": {"email": "a@example.com", "firstname": "Again"}}})
    assert again.status_code == 422, again.text
    body = again.json()
    assert body["code"] == "conflict"
    assert body["error"] == f"Contact already exists. Existing ID: {existing}"
    assert body["fields"] == ["properties.email"]
    assert body["details"]["existing_id"] == existing and body["details"]["category"] == "CONFLICT"
    assert len(hubspot.fake.state.portal(fake.PORTAL_ID).tables["contacts"]) == 1


#: Writes HubSpot (or the plugin) refuses, and the fields the API names.
REFUSED = {
    "a bad email": ("contacts", {"properties": {"email": "not-an-email"}}, "validation_error",
                    ["properties.email"]),
    "an unknown property": ("contacts", {"properties": {"favourite_colour": "blue"}}, "validation_error",
                            ["properties.favourite_colour"]),
    "a read-only property": ("contacts", {"properties": {"hs_object_id": "7"}}, "validation_error",
                             ["properties.hs_object_id"]),
    "missing required properties": ("deals", {"properties": {"amount": "10"}}, "validation_error",
                                    ["properties.dealname", "properties.dealstage"]),
    "fields not under properties": ("contacts", {"email": "flat@example.com"}, "invalid_data", ["email"]),
}


def test_refused_writes_name_the_properties_at_fault(hubspot):
    connection = hubspot.connect()
    for what, (entity, data, code, fields) in REFUSED.items():
        refused = hubspot.post(hubspot.records(connection, entity), {"data": data})
        assert refused.status_code == 422, (what, refused.text)
        assert (refused.json()["code"], refused.json()["fields"]) == (code, fields), what
    assert not any(hubspot.fake.state.portal(fake.PORTAL_ID).tables.values())
