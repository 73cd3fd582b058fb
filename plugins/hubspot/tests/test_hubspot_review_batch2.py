"""Findings of a review (batch 2) of the ``account_fields`` check of sync
mappings as HubSpot answers it: each test showed a finding, and failed on the
code as reviewed."""

from __future__ import annotations

import pytest

from hub_hubspot import testing as fake

API = "/api/v1/integrations"


def _configs(connection: dict) -> str:
    return f"{API}/connections/{connection['id']}/sync-configs"


def test_a_property_the_portal_added_minutes_ago_is_taken_by_a_mapping_saved_now(hubspot):
    """The usual order of work: a tenant adds ``loyalty_tier`` in HubSpot's
    settings, then maps it. The list ``account_fields`` answers is the one a
    listing kept for up to PROPERTIES_TTL (5 minutes): the property the
    portal has is refused as one it has not ("this account's contacts have
    no field"), 422, until the list is asked again."""
    connection = hubspot.connect()
    fake.seed(hubspot.fake, "contacts", 2)
    listed = hubspot.get(hubspot.records(connection, "contacts"))  # (a listing, a sync: the list is kept)
    assert listed.status_code == 200, listed.text
    fake.add_property(hubspot.fake, "contacts", "loyalty_tier")  # the tenant adds it in HubSpot
    created = hubspot.post(_configs(connection), {
        "entity": "contacts", "direction": "both",
        "mappings": [{"source": "properties.email", "target": "email"},
                     {"source": "properties.loyalty_tier", "target": "tier"}]})
    assert created.status_code == 201, created.text


def test_a_grant_refused_the_properties_list_does_not_say_the_portal_lacks_its_properties(hubspot):
    """A grant HubSpot refuses the properties list (403: a private app given
    fewer scopes) reads the declared properties only, and ``account_fields``
    answers those: a mapping of any property of the portal's own is then
    refused as one the portal does not have. The plugin cannot tell; before
    the check it was taken (and a push-only config wrote it, which the grant
    may do)."""
    fake.add_property(hubspot.fake, "contacts", "loyalty_tier")
    hubspot.fake.state.withheld_scopes = {"crm.schemas.contacts.read", "crm.objects.contacts.read"}
    connection = hubspot.connect()
    created = hubspot.post(_configs(connection), {
        "entity": "contacts", "direction": "push",
        "mappings": [{"source": "properties.email", "target": "email"},
                     {"source": "properties.loyalty_tier", "target": "tier"}]})
    assert created.status_code == 201, created.text


def test_a_currency_field_naming_a_property_the_portal_does_not_have_is_refused_when_saved(hubspot):
    """A mapping's ``currency_field`` is a provider path too: a typo of the
    portal's currency property (``deal_currency_codee``) is saved (the new
    check looks at ``source`` only, and ``properties`` is a declared object,
    so any path into it passes; with a source of the portal's own, the
    currency_field is not looked at at all), reads null on every deal, and
    every amount then fails to convert (``the record has no currency code``):
    mapped to null on each pull, and each push refused."""
    fake.add_property(hubspot.fake, "deals", "deal_currency_code")
    fake.add_property(hubspot.fake, "deals", "net_amount", "number")
    connection = hubspot.connect()
    created = hubspot.post(_configs(connection), {
        "entity": "deals", "direction": "pull",
        "mappings": [{"source": "properties.net_amount", "target": "net_cents", "transform": "decimal_to_cents",
                      "currency_field": "properties.deal_currency_codee"}]})
    assert created.status_code == 422 and created.json()["code"] == "unknown_field", created.text


@pytest.mark.parametrize("hub_settings", ["own"], indirect=True)
def test_with_properties_own_a_mapping_of_hubspots_others_maps_null_as_the_readme_says(hubspot):
    """plugins/hubspot/README.md: ``HUB_HUBSPOT_PROPERTIES=own`` asks for the
    declared and the portal's own only "(a mapping of one of HubSpot's others
    then maps `null`)". It is now refused when saved, 422 ``unknown_field``
    ("this account's contacts have no field 'properties.hs_analytics_source'",
    which the portal has), a push-only config writing it too; the README (and
    the CHANGELOG's "reads as before") were not changed with the check."""
    connection = hubspot.connect()
    created = hubspot.post(_configs(connection), {
        "entity": "contacts", "direction": "both",
        "mappings": [{"source": "properties.email", "target": "email"},
                     {"source": "properties.hs_analytics_source", "target": "source"}]})
    assert created.status_code == 201, created.text
