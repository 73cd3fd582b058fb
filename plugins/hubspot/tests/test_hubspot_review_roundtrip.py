"""Found by a review of bidirectional sync: a mapping naming a property the
portal does not have must be refused when it is saved, not fail when a record
is pushed."""

from __future__ import annotations

from hub_hubspot import testing as fake

API = "/api/v1/integrations"


def test_a_mapping_of_a_property_the_portal_does_not_have_is_refused_when_saved(hubspot):
    """``properties.loyalty_tierr`` (a typo of the portal's ``loyalty_tier``)
    fits the pattern of the portal's own properties: it was saved, read null
    on every record, and the first write through it was refused by HubSpot
    (PROPERTY_DOESNT_EXIST). The portal's properties are asked when saving."""
    fake.add_property(hubspot.fake, "contacts", "loyalty_tier")
    connection = hubspot.connect()
    base = f"{API}/connections/{connection['id']}"
    mappings = [{"source": "properties.email", "target": "email"},
                {"source": "properties.loyalty_tierr", "target": "tier"}]
    created = hubspot.post(f"{base}/sync-configs", {"entity": "contacts", "direction": "both", "mappings": mappings})
    assert created.status_code == 422 and created.json()["code"] == "unknown_field", created.text
    assert created.json()["fields"] == ["mappings.1.source"] and "loyalty_tierr" in created.json()["error"]
    assert hubspot.get(f"{base}/sync-configs").json()["sync_configs"] == []
    mappings[1]["source"] = "properties.loyalty_tier"
    created = hubspot.post(f"{base}/sync-configs", {"entity": "contacts", "direction": "both", "mappings": mappings})
    assert created.status_code == 201, created.text
    # Replacing them is checked the same way.
    replaced = hubspot.client.put(
        f"{base}/sync-configs/{created.json()['sync_config']['id']}/mappings",
        json={"mappings": [{"source": "properties.no_such_property", "target": "x"}]}, headers=hubspot.auth)
    assert replaced.status_code == 422 and replaced.json()["code"] == "unknown_field", replaced.text
