"""Findings of a review of the changes of 2026-11-28: each test showed a
finding, and failed on the code as reviewed."""

from __future__ import annotations

from hub_hubspot import testing as fake


def test_a_modified_since_page_of_more_than_100_on_a_portal_of_hundreds_of_properties(hubspot):
    """Every property the properties API lists is now asked for, so on any
    real portal (hundreds of HubSpot's own) a search's body passes its 3,000
    characters and a page is searched for its ids, then batch read. A search
    page holds up to 200 (SEARCH_LIMIT), a batch read takes at most 100
    inputs: a records listing with ``since`` and a limit above 100 (the API
    takes up to 250) is refused by HubSpot (400), answered as an error."""
    portal = hubspot.fake.state.portal(fake.PORTAL_ID)
    for i in range(300):  # (HubSpot's own, as a real portal lists them)
        name = f"hs_defined_property_number_{i:03d}"
        portal.properties["contacts"][name] = fake.property_definition(name, hubspot_defined=True)
    connection = hubspot.connect()
    fake.seed(hubspot.fake, "contacts", 150, ago=60)
    listed = hubspot.get(hubspot.records(connection, "contacts"), since="2020-01-01T00:00:00Z", limit=150)
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["records"]) == 150

