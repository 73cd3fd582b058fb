"""Salesforce records through the hub's records API against the fake org:
SOQL batches followed by their query locators, the batch size asked, a
modified-since listing (SystemModstamp) with the delete log's deletions,
writes read back whole, and Salesforce's error arrays as clear API errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hub_salesforce import testing as fake


def listed(sfdc, connection, entity, limit, **params):
    """Every page through the API: the pages' ids, and the last body."""
    pages, cursor = [], None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = sfdc.get(sfdc.records(connection, entity), **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([r["Id"] for r in body["records"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages, body


@pytest.mark.parametrize("fake_options", [{"max_batch": 3}])
def test_batches_follow_the_query_locator_to_the_last(sfdc, connection):
    ids = fake.seed(sfdc.app, "accounts", 7)
    pages, _ = listed(sfdc, connection, "accounts", 250)
    assert pages == [ids[:3], ids[3:6], ids[6:]]  # in SystemModstamp order, as Salesforce batched them
    paths = [path for _host, _method, path in sfdc.api_calls() if "/query" in path]
    assert paths[-3] == "/services/data/v62.0/query"
    assert all(path.startswith("/services/data/v62.0/query/01g") for path in paths[-2:])
    assert sfdc.app.state.batch_sizes[-3:] == [250, 250, 250]  # limit=250: batchSize=500 asked

    record = sfdc.get(sfdc.records(connection, "accounts"), limit=1).json()["records"][0]
    # Salesforce's fields, without its attributes (the type and a URL naming the API version).
    assert "attributes" not in record
    assert (record["Id"], record["Name"], record["BillingCity"], record["Phone"]) == (
        ids[0], "Seed account 1", "Paris", None)
    assert record == sfdc.get(sfdc.records(connection, "accounts", ids[0])).json()["record"]


def test_a_small_limit_still_asks_salesforces_smallest_batch(sfdc, connection):
    ids = fake.seed(sfdc.app, "leads", 5)
    pages, _ = listed(sfdc, connection, "leads", 2)
    assert pages == [ids[:2], ids[2:4], ids[4:]]  # the hub hands the batch out in slices
    assert set(sfdc.app.state.batch_sizes) == {200}


@pytest.mark.parametrize("fake_options", [{"max_batch": 3}])
def test_a_cursor_is_only_a_query_locator(sfdc, connection):
    fake.seed(sfdc.app, "contacts", 5)
    first = sfdc.get(sfdc.records(connection, "contacts"), limit=250).json()
    assert first["next_cursor"]
    # A locator Salesforce no longer has (expired after 15 minutes unused): list again from the start.
    fake.expire_locators(sfdc.app)
    expired = sfdc.get(sfdc.records(connection, "contacts"), limit=250, cursor=first["next_cursor"])
    assert expired.status_code == 422 and expired.json()["code"] == "invalid_cursor", expired.text
    assert "invalid query locator" in expired.json()["error"]


def test_since_lists_what_changed_and_what_was_deleted(sfdc, connection):
    ids = fake.seed(sfdc.app, "opportunities", 6, ago=60)
    fake.touch(sfdc.app, "opportunities", ids[4], StageName="Closed Won")
    fake.touch(sfdc.app, "opportunities", ids[1], Amount=99.0)
    sfdc.org().delete("Opportunity", ids[2])
    since = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    pages, body = listed(sfdc, connection, "opportunities", 10, since=since)
    assert sorted(pages[0]) == sorted([ids[1], ids[4]])
    assert body["deleted_ids"] == [ids[2]]
    queries = [q for q in sfdc.app.state.calls if q[2].endswith("/deleted/")]
    assert queries == [(sfdc.login, "GET", "/services/data/v62.0/sobjects/Opportunity/deleted/")]
    won = next(r for r in body["records"] if r["Id"] == ids[4])
    assert (won["IsClosed"], won["IsWon"], won["StageName"]) == (True, True, "Closed Won")


def test_records_are_created_updated_and_deleted_with_read_back(sfdc, connection):
    created = sfdc.post(sfdc.records(connection, "contacts"),
                        {"data": {"FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com"}})
    assert created.status_code == 201, created.text
    record = created.json()["record"]
    # Salesforce answers only the id: read again, the record is whole, as listed.
    assert record["Id"].startswith("003") and len(record["Id"]) == 18
    assert (record["Email"], record["MobilePhone"], record["SystemModstamp"][:2]) == ("ada@example.com", None, "20")
    listed_record = sfdc.get(sfdc.records(connection, "contacts")).json()["records"][0]
    assert record == listed_record

    updated = sfdc.put(sfdc.records(connection, "contacts", record["Id"]),
                       {"data": {"Title": "Analyst", "attributes": {"type": "Contact"}}})
    assert updated.status_code == 200, updated.text
    assert (updated.json()["record"]["Title"], updated.json()["record"]["FirstName"]) == ("Analyst", "Ada")
    methods = [(method, path.rsplit("/", 2)[-2]) for _host, method, path in sfdc.api_calls()[-2:]]
    assert methods == [("PATCH", "Contact"), ("GET", "Contact")]

    assert sfdc.delete(sfdc.records(connection, "contacts", record["Id"])).status_code == 200
    assert sfdc.get(sfdc.records(connection, "contacts", record["Id"])).status_code == 404
    again = sfdc.delete(sfdc.records(connection, "contacts", record["Id"]))
    assert again.status_code == 404 and again.json()["code"] == "entity_is_deleted", again.text
    # Not an id of Salesforce's: no call is made for it.
    calls = len(sfdc.api_calls())
    assert sfdc.get(sfdc.records(connection, "contacts", "003%2F..%2Fx")).status_code == 404
    assert len(sfdc.api_calls()) == calls


#: Writes Salesforce refuses: its errorCode (lower case) and the fields it names.
REFUSED = {
    "a required field missing": ("opportunities", {"Name": "No stage"}, "required_field_missing",
                                 ["StageName", "CloseDate"], "Required fields are missing: [StageName, CloseDate]"),
    "an unknown field": ("accounts", {"Name": "X", "Tier__c": "Gold"}, "invalid_field", [],
                         "No such column 'Tier__c' on sobject of type Account"),
    "a read-only field": ("leads", {"LastName": "X", "Company": "Y", "IsConverted": True},
                          "invalid_field_for_insert_update", ["IsConverted"], None),
    "a bad email": ("contacts", {"LastName": "X", "Email": "not-an-email"}, "invalid_email_address", ["Email"],
                    "Email: invalid email address: not-an-email"),
    "a bad date": ("opportunities", {"Name": "X", "StageName": "Prospecting", "CloseDate": "next week"},
                   "json_parser_error", ["CloseDate"], None),
}


def test_refused_writes_are_clear_errors_with_salesforces_code_and_fields(sfdc, connection):
    for what, (entity, data, code, fields, message) in REFUSED.items():
        refused = sfdc.post(sfdc.records(connection, entity), {"data": data})
        assert refused.status_code == 422, (what, refused.text)
        body = refused.json()
        assert (body["code"], body.get("fields", [])) == (code, fields), what
        assert body["details"][0]["errorCode"] == code.upper(), what
        if message:
            assert body["error"] == message, what
    assert not any(sfdc.org().tables.values())

    fake.seed(sfdc.app, "contacts", 1)
    taken = sfdc.org().tables["Contact"]
    email = next(iter(taken.values()))["Email"]
    duplicate = sfdc.post(sfdc.records(connection, "contacts"), {"data": {"LastName": "Again", "Email": email}})
    assert duplicate.status_code == 422
    assert (duplicate.json()["code"], duplicate.json()["error"]) == ("duplicates_detected", "Use one of these records?")
    matched = duplicate.json()["details"][0]["duplicateResult"]["matchResults"][0]["matchRecords"][0]["record"]
    assert matched["Id"] in taken and len(taken) == 1


def test_a_create_made_whose_reading_back_is_refused_is_a_success_and_made_once(sfdc, connection):
    """The create is the org's last call of its allocation: Salesforce made
    the account, the reading of it whole is refused (403
    REQUEST_LIMIT_EXCEEDED). What was written stands: an error would have the
    client, or sync, send the create again (no idempotency key: a second account)."""
    org = sfdc.org()
    org.api_used = org.api_limit - 1
    created = sfdc.post(sfdc.records(connection, "accounts"), {"data": {"Name": "Last call"},
                                                               "idempotency_key": "order-7"})
    assert created.status_code == 201, created.text
    record = created.json()["record"]
    assert record["Name"] == "Last call" and record["Id"] in org.tables["Account"]
    assert [r["Name"] for r in org.tables["Account"].values()] == ["Last call"]


@pytest.mark.parametrize("ahead", [timedelta(minutes=59), timedelta(days=2)])
def test_a_since_to_come_lists_nothing_rather_than_fail(sfdc, connection, ahead):
    """(A client's clock ahead: the delete log takes no window ending before it starts.)"""
    fake.seed(sfdc.app, "accounts", 2, ago=60)
    since = (datetime.now(timezone.utc) + ahead).replace(microsecond=0).isoformat()
    response = sfdc.get(sfdc.records(connection, "accounts"), since=since)
    assert response.status_code == 200 and response.json()["records"] == [], response.text


def test_a_query_longer_than_salesforce_runs_is_a_clear_error_before_any_call(sfdc, connection, monkeypatch):
    """A query too long for a URL goes in a composite body (test_salesforce_wide_objects), but
    Salesforce runs no SOQL statement over 100,000 characters: one naming so many fields is
    refused before it is sent, not listed without some of them."""
    for n in range(2_100):  # (more than Salesforce allows an object: the guard, not an org)
        fake.add_custom_field(sfdc.app, "accounts", f"Managed_Package_Rollup_Forecast_Attribute_{n:04d}__c")
    calls = len(sfdc.api_calls())
    response = sfdc.get(sfdc.records(connection, "accounts"))
    assert response.status_code == 502 and response.json()["code"] == "too_many_fields", response.text
    assert "100,000 characters" in response.json()["error"]
    assert [path for _host, _method, path in sfdc.api_calls(calls)] == [
        "/services/data/v62.0/sobjects/Account/describe"]  # (the query itself not sent)

    # Sent all the same, Salesforce refuses it: its error, not records.
    import hub_salesforce
    monkeypatch.setattr(hub_salesforce, "MAX_SOQL_CHARS", 10**6)
    refused = sfdc.get(sfdc.records(connection, "accounts"))
    assert refused.status_code == 422 and refused.json()["code"] == "malformed_query", refused.text
    assert refused.json()["error"] == "SOQL statements cannot be longer than 100000 characters"
