"""What a review of the portal's own properties found, mended: an app set up
with the object scopes reads them (no crm.schemas scopes asked), and a portal
of a hundred of them is searched within HubSpot's 3,000 characters of body."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from hub_hubspot import testing as fake

API = "/api/v1/integrations"

#: The scopes of a HubSpot app set up for this plugin: the objects' own, no crm.schemas.*.
OBJECT_SCOPES = {"oauth", "tickets", "crm.objects.contacts.read", "crm.objects.contacts.write",
                 "crm.objects.companies.read", "crm.objects.companies.write", "crm.objects.deals.read",
                 "crm.objects.deals.write"}


def test_an_app_with_the_object_scopes_connects_and_reads_the_portals_own_properties(hubspot, monkeypatch):
    """HubSpot's properties API (``GET /crm/v3/properties/{type}``) takes
    any one of a list of scopes, the object's own read scope among them
    (``crm.objects.contacts.read``; developers.hubspot.com, CRM API |
    Properties, "Scope requirements"): ``crm.schemas.*.read`` is not needed
    to read the portal's properties. Asking for it in the authorize URL
    breaks every deployment whose HubSpot app was set up with the scopes the
    plugin asked for before: HubSpot refuses an install URL naming scopes the
    app is not configured with, so no new connection can be made, and no
    existing one can be connected again."""
    monkeypatch.setattr(fake, "SCOPES", OBJECT_SCOPES)  # the app as its operator configured it
    fake.add_property(hubspot.fake, "contacts", "customer_tier", "enumeration", options=("gold", "silver"))
    authorize = hubspot.authorize()
    install = httpx.get(authorize, follow_redirects=False, timeout=10)
    assert install.status_code == 302, (parse_qs(urlsplit(authorize).query)["scope"], install.text)
    consent = hubspot.client.get(hubspot.consent(authorize, fake.PORTAL_ID))
    assert consent.status_code == 200, consent.text
    connection = consent.json()["connection"]
    fake.seed(hubspot.fake, "contacts", 2)
    listed = hubspot.get(hubspot.records(connection, "contacts"), limit=2)
    assert listed.status_code == 200, listed.text
    assert "customer_tier" in listed.json()["records"][0]["properties"], listed.json()


def test_a_portal_with_a_hundred_custom_properties_is_synced_by_its_changes(hubspot):
    """Sync's incremental passes search HubSpot (``POST …/search``) naming
    every property in the body: the declared ones (about 540 characters of
    body) and now every one the portal added. A portal with a hundred or so
    of its own (common: each form, each integration adds some) passes
    HubSpot's 3,000 characters, and every incremental pass fails with a 400,
    where before this change it synced."""
    for i in range(110):
        fake.add_property(hubspot.fake, "contacts", f"integration_field_{i:03d}")
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "contacts", 5, ago=3600)
    first = hubspot.sync(connection, "contacts", direction="pull")  # a full pass: GET listings
    assert first["created"] == 5, first
    fake.touch(hubspot.fake, "contacts", ids[0], integration_field_007="changed")
    again = hubspot.sync(connection, "contacts", direction="pull")  # by its changes: a search, then a batch read
    assert again["updated"] >= 1, again
    records = f"{API}/connections/{connection['id']}/entities/contacts/records"
    assert hubspot.get(f"{records}/{ids[0]}").json()["record"]["properties"]["integration_field_007"] == "changed"
