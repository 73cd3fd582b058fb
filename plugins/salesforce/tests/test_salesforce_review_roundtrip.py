"""Review (bidirectional sync with field mappings), Salesforce contacts and
accounts through the hub's REST API against the fake org over real HTTP:
mapped writes pushed with ``"sync": true``, pulls, echo suppression and the
conflict policies."""

from __future__ import annotations

from typing import Any

from hub.testing import wait_for_run
from hub_salesforce import testing as fake

API = "/api/v1/integrations"


def _config(sfdc, connection, entity: str, mappings: list[dict[str, Any]], policy: str = "provider_wins") -> str:
    base = f"{API}/connections/{connection['id']}"
    created = sfdc.post(f"{base}/sync-configs", {"entity": entity, "direction": "both", "conflict_policy": policy,
                                                 "mappings": mappings})
    assert created.status_code == 201, created.text
    return f"{base}/sync-configs/{created.json()['sync_config']['id']}"


def _write(sfdc, connection, url: str, data: dict[str, Any]) -> dict[str, Any]:
    changed = sfdc.put(url, {"data": data, "mapped": True, "sync": True})
    assert changed.status_code == 200, changed.text
    return wait_for_run(sfdc.client, sfdc.auth, connection["id"], changed.json()["run_id"])


def test_a_contact_with_only_a_last_name_keeps_it_last_when_its_joined_name_changes(sfdc, connection):
    """Salesforce requires a contact's LastName, and many contacts have no
    FirstName. With ``FirstName`` + ``LastName`` joined into ``full_name``,
    a contact held as (null, "Smith") reads ``"Smith"``; the tenant
    correcting it to ``"Smyth"`` means the last name. The hub cuts the new
    value on its first separator (there is none) and sends FirstName
    "Smyth", LastName "": Salesforce refuses it (REQUIRED_FIELD_MISSING),
    and a provider that took it (Shopify) would hold the surname as the
    first name. The mapping's own rule, "a name is not moved from one field
    into the other because one part changed", is broken where one part is
    missing."""
    [contact] = fake.seed(sfdc.app, "contacts", 1, ago=3600)
    fake.touch(sfdc.app, "contacts", contact, FirstName=None, LastName="Smith")
    config = _config(sfdc, connection, "contacts", [
        {"source": ["FirstName", "LastName"], "target": "full_name", "transform": "join"},
        {"source": "Email", "target": "email"}])
    sfdc.sync(connection, "contacts", direction="pull")
    assert sfdc.get(f"{config}/records/{contact}", mapped="true").json()["record"]["data"]["full_name"] == "Smith"

    run = _write(sfdc, connection, f"{config}/records/{contact}", {"full_name": "Smyth"})

    record = sfdc.get(f"{config}/records/{contact}", mapped="true").json()["record"]
    held = sfdc.org().tables["Contact"][contact]
    assert (run["pushed"], record["push_status"], record["push_error"]) == (1, None, None), (run, record)
    assert (held.get("FirstName"), held["LastName"]) == (None, "Smyth"), held
    assert record["data"]["full_name"] == "Smyth"


def test_two_mapped_changes_pushed_one_after_the_other_are_both_made_under_provider_wins(sfdc, connection):
    """The push's answer (the record read back) is what the next push's check
    compares the provider's current version with: the hub's own first write
    must not make the second a conflict that provider_wins drops."""
    [account] = fake.seed(sfdc.app, "accounts", 1, ago=3600)
    config = _config(sfdc, connection, "accounts", [
        {"source": "Name", "target": "name"}, {"source": "AnnualRevenue", "target": "revenue_cents",
                                               "transform": "decimal_to_cents"},
        {"source": "NumberOfEmployees", "target": "staff", "transform": "str"}])
    sfdc.sync(connection, "accounts", direction="pull")
    url = f"{config}/records/{account}"
    first = _write(sfdc, connection, url, {"revenue_cents": 123456789, "staff": "40"})
    second = _write(sfdc, connection, url, {"name": "Renamed", "revenue_cents": 123456790})
    assert (first["pushed"], first["conflicts"], second["pushed"], second["conflicts"]) == (1, 0, 1, 0), (first, second)
    held = sfdc.org().tables["Account"][account]
    assert (held["Name"], held["AnnualRevenue"], held["NumberOfEmployees"]) == ("Renamed", 1234567.9, 40), held
    mapped = sfdc.get(url, mapped="true").json()["record"]
    assert mapped["data"] == {"name": "Renamed", "revenue_cents": 123456790, "staff": "40"}, mapped
    assert sfdc.get(f"{config.rsplit('/records', 1)[0]}/conflicts").json()["conflicts"] == []


def test_a_mapping_of_a_custom_field_the_org_does_not_have_is_refused_when_saved(sfdc, connection):
    """``Tierr__c`` (a typo of the org's ``Tier__c``) fits the pattern of the
    org's own fields: it was saved, read null on every record, and the first
    write through it was refused by Salesforce (INVALID_FIELD, "No such
    column"). The org's fields (``describe``) are asked when saving."""
    fake.add_custom_field(sfdc.app, "accounts", "Tier__c")
    base = f"{API}/connections/{connection['id']}"
    mappings = [{"source": "Name", "target": "name"}, {"source": "Tierr__c", "target": "tier"}]
    created = sfdc.post(f"{base}/sync-configs", {"entity": "accounts", "direction": "both", "mappings": mappings})
    assert created.status_code == 422 and created.json()["code"] == "unknown_field", created.text
    assert "Tierr__c" in created.json()["error"]
    mappings[1]["source"] = "Tier__c"
    created = sfdc.post(f"{base}/sync-configs", {"entity": "accounts", "direction": "both", "mappings": mappings})
    assert created.status_code == 201, created.text
