"""QuickBooks records through the hub's records API against the fake:
position paging of the query language (the exact-multiple page, a listing
changed under the cursor), since as the LastUpdatedTime filter, creates with a
requestid QuickBooks answers again, SyncToken concurrency, deletion and
deactivation, Faults (in a 4xx and inside a 200) as clear API errors, and the
per-company limit answered 429 without Retry-After."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hub_quickbooks import testing as fake

API = "/api/v1/integrations"


def _pages(qbo, connection_id: str, entity: str, limit: int, **params) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        response = qbo.get(qbo.records(connection_id, entity), limit=limit, **params,
                           **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["records"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


@pytest.mark.parametrize("fake_options", [{"customers": 10, "per_second": 1000, "per_minute": 100_000}])
@pytest.mark.parametrize(("limit", "sizes"), [(4, [4, 4, 2]), (5, [5, 5, 0])])
def test_pages_by_position_give_every_record_once(qbo, connection, limit, sizes):
    pages = _pages(qbo, connection["id"], "customers", limit)
    assert [len(page) for page in pages] == sizes  # a page of exactly the size asked: one more (empty) page
    ids = [r["Id"] for page in pages for r in page]
    assert ids == sorted(fake.company(qbo.app).tables["Customer"], key=int)
    queries = qbo.queries()
    assert queries[0] == f"SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY Id STARTPOSITION 1 " \
                         f"MAXRESULTS {limit}"
    # Each next page is asked from the last record's position, one more: it must come first.
    assert queries[1].endswith(f"STARTPOSITION {limit} MAXRESULTS {limit + 1}")
    assert queries[2].endswith(f"STARTPOSITION {2 * limit} MAXRESULTS {limit + 1}")
    assert all(query["minorversion"] == "75" for _m, _p, query in qbo.app.state.calls)


def test_a_deletion_under_the_cursor_is_an_invalid_cursor(qbo, connection):
    fake.seed(qbo.app, "invoices", 6)
    first = qbo.get(qbo.records(connection["id"], "invoices"), limit=3).json()
    company = fake.company(qbo.app)
    gone = first["records"][0]
    company.delete("Invoice", {"Id": gone["Id"], "SyncToken": gone["SyncToken"]})
    response = qbo.get(qbo.records(connection["id"], "invoices"), limit=3, cursor=first["next_cursor"])
    assert response.status_code == 422 and response.json()["code"] == "invalid_cursor", response.text


def test_since_filters_on_last_updated_time_and_records_changed_meanwhile_move_nothing(qbo, connection):
    ids = fake.seed(qbo.app, "customers", 6)
    company = fake.company(qbo.app)
    stamps = {i: company.tables["Customer"][i]["MetaData"]["LastUpdatedTime"] for i in ids}
    since = stamps[ids[2]]
    first = qbo.get(qbo.records(connection["id"], "customers"), limit=2, since=since).json()
    assert [r["Id"] for r in first["records"]] == ids[2:4]
    utc = datetime.fromisoformat(since).astimezone(timezone.utc)
    assert f"MetaData.LastUpdatedTime >= '{utc:%Y-%m-%dT%H:%M:%S}+00:00'" in qbo.queries()[0]
    # An older record changed meanwhile now matches, before the cursor: the rest still come, once.
    row = company.tables["Customer"][ids[0]]
    company.update("Customer", {"Id": row["Id"], "SyncToken": row["SyncToken"], "sparse": True, "Notes": "x"})
    rest, cursor = [], first["next_cursor"]
    while cursor:
        body = qbo.get(qbo.records(connection["id"], "customers"), limit=2, since=since, cursor=cursor).json()
        rest += [r["Id"] for r in body["records"]]
        cursor = body["next_cursor"]
    assert rest == ids[4:]


def test_a_create_whose_answer_was_lost_is_sent_again_with_its_requestid_and_made_once(qbo, connection):
    before = len(fake.company(qbo.app).tables["Customer"])
    fake.lose_answers(qbo.app)
    response = qbo.post(qbo.records(connection["id"], "customers"),
                        {"data": {"DisplayName": "Grace Hopper"}, "idempotency_key": "client-key-1"})
    assert response.status_code == 201, response.text
    created = response.json()["record"]
    customers = fake.company(qbo.app).tables["Customer"]
    assert len(customers) == before + 1 and customers[created["Id"]]["DisplayName"] == "Grace Hopper"
    writes = [query for method, _path, query in qbo.app.state.calls if method == "POST"]
    assert len(writes) == 2 and writes[0]["requestid"] == writes[1]["requestid"]
    assert 0 < len(writes[0]["requestid"]) <= 50


def test_an_update_on_a_stale_sync_token_is_refused(qbo, connection):
    created = qbo.post(qbo.records(connection["id"], "customers"), {"data": {"DisplayName": "Ada"}}).json()["record"]
    # Someone changes it in QuickBooks meanwhile.
    fake.company(qbo.app).update("Customer", {"Id": created["Id"], "SyncToken": "0", "sparse": True, "Notes": "x"})
    stale = qbo.put(qbo.records(connection["id"], "customers", created["Id"]),
                    {"data": {"DisplayName": "Ada L.", "SyncToken": created["SyncToken"]}})
    assert stale.status_code == 409, stale.text
    assert stale.json()["code"] == "stale_version" and "Stale Object Error" in stale.json()["error"]
    assert fake.company(qbo.app).tables["Customer"][created["Id"]]["DisplayName"] == "Ada"

    # Without a version, the current one is read first (one get), and the change applies sparsely.
    calls = len(qbo.app.state.calls)
    updated = qbo.put(qbo.records(connection["id"], "customers", created["Id"]), {"data": {"DisplayName": "Ada L."}})
    assert updated.status_code == 200, updated.text
    record = updated.json()["record"]
    assert (record["DisplayName"], record["SyncToken"], record["Notes"]) == ("Ada L.", "2", "x")
    assert [method for method, _p, _q in qbo.app.state.calls[calls:]] == ["GET", "POST"]


def test_transactions_are_deleted_and_name_list_records_made_inactive(qbo, connection):
    [invoice] = fake.seed(qbo.app, "invoices", 1)
    assert qbo.delete(qbo.records(connection["id"], "invoices", invoice)).status_code == 200
    gone = qbo.get(qbo.records(connection["id"], "invoices", invoice))
    assert gone.status_code == 404 and "deleted" in gone.json()["error"]

    deleted = qbo.delete(qbo.records(connection["id"], "customers", "2"))
    assert deleted.status_code == 200 and deleted.json()["record"]["Active"] is False
    assert qbo.get(qbo.records(connection["id"], "customers", "2")).json()["record"]["Active"] is False
    listed = qbo.get(qbo.records(connection["id"], "customers")).json()["records"]
    assert {r["Id"]: r["Active"] for r in listed}["2"] is False  # inactive ones are listed too


def test_faults_are_clear_errors_with_their_fields(qbo, connection):
    duplicate = qbo.post(qbo.records(connection["id"], "customers"), {"data": {"DisplayName": "Customer 1"}})
    assert duplicate.status_code == 422, duplicate.text
    body = duplicate.json()
    assert body["code"] == "duplicate_name" and body["fields"] == ["DisplayName"]
    assert "already using this name" in body["error"] and body["details"]["errors"][0]["code"] == "6240"

    orphan = qbo.post(qbo.records(connection["id"], "invoices"), {"data": {"CustomerRef": {"value": "999"}, "Line": [
        {"Amount": 5.0, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {}}]}})
    assert orphan.status_code == 422 and orphan.json()["code"] == "object_not_found"
    assert orphan.json()["fields"] == ["CustomerRef"]


@pytest.mark.parametrize(("entity", "change"), [("customers", {"Notes": "x"}), ("invoices", {"PrivateNote": "x"})])
def test_an_update_of_an_id_quickbooks_never_had_is_not_found(qbo, connection, entity, change):
    """With a SyncToken (no read first), QuickBooks' Fault 610 to the write
    itself: read back, the record is not there, so 404, not a refused reference."""
    response = qbo.put(qbo.records(connection["id"], entity, "999"), {"data": {**change, "SyncToken": "0"}})
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found" and "999" in response.json()["error"]
    assert [method for method, _p, _q in qbo.app.state.calls[-2:]] == ["POST", "GET"]


def test_an_update_referencing_an_inactive_record_is_refused_not_missing(qbo, connection):
    [invoice] = fake.seed(qbo.app, "invoices", 1)
    company = fake.company(qbo.app)
    company.update("Customer", {"Id": "2", "SyncToken": "0", "sparse": True, "Active": False})
    response = qbo.put(qbo.records(connection["id"], "invoices", invoice),
                       {"data": {"CustomerRef": {"value": "2"}, "SyncToken": "0"}})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "object_not_found" and body["fields"] == ["CustomerRef"]
    assert "made inactive" in body["error"] and body["details"]["errors"][0]["code"] == "610"
    assert company.tables["Invoice"][invoice]["CustomerRef"]["value"] == "1"


FAULTS_IN_200 = [
    ({"Error": [{"Message": "Error parsing query", "Detail": "QueryParserError: Encountered \" \"FROM\"",
                 "code": "4000", "element": ""}], "type": "ValidationFault"}, 422, "invalid_query"),
    ({"Error": [{"Message": "A business validation error has occurred while processing your request",
                 "Detail": "Business Validation Error: the books are closed", "code": "6000", "element": "TxnDate"}],
      "type": "ValidationFault"}, 422, "validation_error"),
    ({"Error": [{"Message": "An application error has occurred", "Detail": "System Failure Error", "code": "10000"}],
      "type": "SystemFault"}, 503, "provider_unavailable"),
]


def test_a_fault_inside_a_200_is_an_error(qbo, connection):
    qbo.fake.script("/query", *[(200, {"Fault": fault, "time": "2026-01-01T00:00:00.000-07:00"})
                                for fault, _status, _code in FAULTS_IN_200])
    for fault, status, code in FAULTS_IN_200:
        response = qbo.get(qbo.records(connection["id"], "customers"))
        assert response.status_code == status, response.text
        body = response.json()
        assert body["code"] == code and body["error"] == fault["Error"][0]["Detail"]
        assert body["details"]["errors"][0]["code"] == fault["Error"][0]["code"]
    assert qbo.get(qbo.records(connection["id"], "customers")).status_code == 200


@pytest.mark.parametrize("fake_options", [{"per_second": 2, "per_minute": 100_000}])
def test_a_429_is_waited_out_and_the_call_succeeds(qbo, connection):
    for _ in range(4):
        response = qbo.get(qbo.records(connection["id"], "customers"), limit=1)
        assert response.status_code == 200, response.text
    assert fake.company(qbo.app).second.refused >= 1


@pytest.mark.parametrize("fake_options", [{"per_second": 1000, "per_minute": 2}])
@pytest.mark.parametrize("hub_env", [{"RATE_LIMITS": "off", "REQUESTS_PER_SECOND": "500", "BURST": "500"}])
def test_by_default_a_429_holds_the_company_s_calls_for_a_minute(qbo, connection):
    qbo.get(qbo.records(connection["id"], "customers"))  # (the test of the connection took the first place)
    refused = qbo.get(qbo.records(connection["id"], "customers"))
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited", refused.text
    assert 55 <= float(refused.headers["Retry-After"]) <= 61
    sent = len(qbo.app.state.calls)
    again = qbo.get(qbo.records(connection["id"], "invoices"))
    assert again.status_code == 429 and len(qbo.app.state.calls) == sent  # not even sent


def test_a_refused_update_sent_again_once_its_cause_is_gone_is_made(qbo, connection):
    """QuickBooks answers a repeated requestid with its first answer: an
    update refused (a name in use) and sent again once the name is freed
    must not carry the same one, or it meets the refusal for ever."""
    customers = qbo.records(connection["id"], "customers")
    refused = qbo.put(f"{customers}/2", {"data": {"DisplayName": "Customer 1"}})
    assert refused.status_code == 422 and refused.json()["code"] == "duplicate_name", refused.text
    assert qbo.put(f"{customers}/1", {"data": {"DisplayName": "Customer One"}}).status_code == 200
    again = qbo.put(f"{customers}/2", {"data": {"DisplayName": "Customer 1"}})
    assert again.status_code == 200 and again.json()["record"]["DisplayName"] == "Customer 1", again.text
    assert fake.company(qbo.app).tables["Customer"]["2"]["DisplayName"] == "Customer 1"
