"""Xero records through the hub's records API against the fake Xero: pages
(with and without Xero's ``pagination``), ``If-Modified-Since`` listing,
``/Date(...)/`` times read as ISO 8601, creates sent with an Idempotency-Key
(a lost answer re-sent makes one record), deletes that keep the record
(invoices DELETED or VOIDED, contacts archived, payments DELETED), and
Xero's validation errors as clear API errors."""

from __future__ import annotations

from datetime import datetime, timezone

from hub.testing import serve
from hub.testing.fakes import Scripted
from hub_xero import testing as fake


def listed(xero, connection, entity, limit, **params):
    """Every page through the API: the pages' records."""
    pages, cursor = [], None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = xero.get(xero.records(connection, entity), **query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["records"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def contact_calls(xero):
    return [(query, since) for method, path, query, since in xero.fake.state.calls
            if method == "GET" and path == "/api.xro/2.0/Contacts"]


def test_pages_follow_xeros_pages_to_the_last(xero):
    connection = xero.connect()
    ids = fake.seed(xero.fake, "contacts", 7)
    for paginated in (True, False):
        xero.fake.state.pagination = paginated  # (older answers say no page count: a short page is the last)
        pages = listed(xero, connection, "contacts", 3)
        flat = [r["ContactID"] for page in pages for r in page]
        assert set(ids) < set(flat) and sorted(flat) == sorted(xero.tenant().tables["Contacts"]) and len(flat) == 8
        assert [len(p) for p in pages][:3] == [3, 3, 2]
    first_query, _ = contact_calls(xero)[0]
    assert first_query == {"order": "UpdatedDateUTC ASC, ContactID ASC", "includeArchived": "true", "page": "1",
                           "pageSize": "3"}
    # Xero's times read as ISO 8601 (the core orders and filters on them).
    record = pages[0][0]
    assert datetime.fromisoformat(record["UpdatedDateUTC"]).tzinfo is not None


def test_a_change_while_paging_misses_no_record(xero):
    """Xero pages by number: a record changed meanwhile moves to the end. Paged from
    the last record's time, the records after it are all still listed."""
    connection = xero.connect()
    ids = fake.seed(xero.fake, "contacts", 5, ago=60)
    table = xero.tenant().tables["Contacts"]
    for n, record_id in enumerate(ids):  # two seconds apart, as real data is spread
        table[record_id]["UpdatedDateUTC"] -= (5 - n) * 2000
    first = xero.get(xero.records(connection, "contacts"), limit=2).json()
    fake.touch(xero.fake, "contacts", first["records"][0]["ContactID"], FirstName="Changed")
    rest = listed(xero, connection, "contacts", 2, cursor=first["next_cursor"])
    seen = {r["ContactID"] for r in first["records"]} | {r["ContactID"] for page in rest for r in page}
    assert seen == set(table)
    assert any(since for _query, since in contact_calls(xero)[1:])  # (went on from a time)


def test_since_lists_only_what_changed_with_if_modified_since(xero):
    connection = xero.connect()
    old = fake.seed(xero.fake, "invoices", 3, ago=600)
    new = fake.seed(xero.fake, "invoices", 2)
    table = xero.tenant().tables["Invoices"]
    since = datetime.fromtimestamp(table[new[0]]["UpdatedDateUTC"] / 1000, tz=timezone.utc)
    records = [r for page in listed(xero, connection, "invoices", 5, since=since.isoformat()) for r in page]
    assert sorted(r["InvoiceID"] for r in records) == sorted(new)
    assert not set(old) & {r["InvoiceID"] for r in records}
    sent = [s for method, path, _q, s in xero.fake.state.calls if path == "/api.xro/2.0/Invoices"]
    # UTC to the second, no zone, a second early: the plugin leaves out what came before since.
    early = datetime.fromtimestamp(int(since.timestamp()) - 1, tz=timezone.utc)
    assert sent == [early.strftime("%Y-%m-%dT%H:%M:%S")]
    # Xero's /Date(...)/ of a day read as the day.
    invoice = records[0]
    assert invoice["Date"] == invoice["DateString"][:10] == table[invoice["InvoiceID"]]["Date"]


def test_a_create_whose_answer_was_lost_is_sent_again_with_its_key_and_made_once(xero):
    connection = xero.connect()
    xero.fake.state.lose_next = 1  # Xero applied it, and the answer was lost: 503
    created = xero.post(xero.records(connection, "contacts"), {"data": {"Name": "Ada Lovelace"},
                                                                "idempotency_key": "create-ada-1"})
    assert created.status_code == 201, created.text
    puts = [c for c in xero.fake.state.calls if c[0] == "PUT"]
    assert len(puts) == 2  # sent again with the same Idempotency-Key: Xero answered the first result
    named = [c for c in xero.tenant().tables["Contacts"].values() if c["Name"] == "Ada Lovelace"]
    assert len(named) == 1 and named[0]["ContactID"] == created.json()["record"]["ContactID"]
    again = xero.post(xero.records(connection, "contacts"), {"data": {"Name": "Ada Lovelace"},
                                                              "idempotency_key": "create-ada-1"})
    assert again.json()["record"]["ContactID"] == named[0]["ContactID"]
    assert len([c for c in xero.tenant().tables["Contacts"].values() if c["Name"] == "Ada Lovelace"]) == 1


def test_invoices_are_deleted_or_voided_by_status_and_kept(xero):
    connection = xero.connect()
    url = xero.records(connection, "invoices")
    lines = [{"Description": "Engine", "Quantity": 2, "UnitAmount": 50}]
    draft = xero.post(url, {"data": {"Type": "ACCREC", "Contact": {"Name": "Opening Customer"},
                                     "LineItems": lines, "Date": "2026-03-01"}}).json()["record"]
    assert (draft["Status"], draft["Total"], draft["Date"]) == ("DRAFT", 100.0, "2026-03-01")
    deleted = xero.delete(xero.records(connection, "invoices", draft["InvoiceID"]))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["record"]["Status"] == "DELETED"
    assert xero.get(xero.records(connection, "invoices", draft["InvoiceID"])).json()["record"]["Status"] == "DELETED"

    authorised = xero.post(url, {"data": {"Type": "ACCREC", "Contact": {"Name": "Opening Customer"},
                                          "LineItems": lines, "Status": "AUTHORISED"}}).json()["record"]
    voided = xero.delete(xero.records(connection, "invoices", authorised["InvoiceID"]))
    assert voided.status_code == 200 and voided.json()["record"]["Status"] == "VOIDED", voided.text

    paid = xero.post(url, {"data": {"Type": "ACCREC", "Contact": {"Name": "Opening Customer"}, "LineItems": lines,
                                    "Status": "AUTHORISED"}}).json()["record"]
    payment = xero.post(xero.records(connection, "payments"), {"data": {
        "Invoice": {"InvoiceID": paid["InvoiceID"]}, "Account": {"Code": fake.BANK_CODE}, "Amount": 100.0}})
    assert payment.status_code == 201, payment.text
    refused = xero.delete(xero.records(connection, "invoices", paid["InvoiceID"]))
    assert refused.status_code == 422 and refused.json()["code"] == "validation_exception", refused.text
    assert "payments allocated" in refused.json()["error"]
    # Deleting the payment (kept, DELETED) makes the invoice due again; then it voids.
    gone = xero.delete(xero.records(connection, "payments", payment.json()["record"]["PaymentID"]))
    assert gone.json()["record"]["Status"] == "DELETED"
    assert xero.tenant().tables["Invoices"][paid["InvoiceID"]]["AmountDue"] == 100.0
    assert xero.delete(xero.records(connection, "invoices", paid["InvoiceID"])).json()["record"]["Status"] == "VOIDED"


def test_contacts_are_archived_and_still_listed(xero):
    connection = xero.connect()
    [contact] = fake.seed(xero.fake, "contacts", 1)
    archived = xero.delete(xero.records(connection, "contacts", contact))
    assert archived.json()["record"]["ContactStatus"] == "ARCHIVED"
    listed_ids = {r["ContactID"] for r in xero.get(xero.records(connection, "contacts")).json()["records"]}
    assert contact in listed_ids


def test_validation_errors_read_as_clear_api_errors(xero):
    connection = xero.connect()
    url = xero.records(connection, "contacts")
    nameless = xero.post(url, {"data": {"FirstName": "Ada"}})
    assert nameless.status_code == 422, nameless.text
    assert nameless.json()["code"] == "validation_exception"
    assert nameless.json()["error"] == "The contact name must be specified."
    taken = xero.post(url, {"data": {"Name": "Opening Customer"}})
    assert (taken.status_code, taken.json()["code"]) == (422, "validation_exception")
    assert "already assigned to another contact" in taken.json()["error"]
    too_much = xero.post(xero.records(connection, "payments"), {"data": {
        "Invoice": {"InvoiceID": fake.OPEN_INVOICE}, "Account": {"Code": fake.BANK_CODE}, "Amount": 10**9}})
    assert too_much.status_code == 422
    assert too_much.json()["error"] == "Payment amount exceeds the amount outstanding on this document"
    missing = xero.get(xero.records(connection, "contacts", "00000000-0000-4000-8000-000000000000"))
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    read_only = xero.post(xero.records(connection, "accounts"), {"data": {"Code": "999", "Name": "x"}})
    assert read_only.status_code == 405


def test_an_empty_page_said_to_be_followed_is_a_provider_error_not_a_last_page(xero, monkeypatch):
    scripted = Scripted(xero.fake)
    with serve(scripted) as url:
        monkeypatch.setenv("HUB_XERO_ORIGIN", url)
        connection = xero.connect()
        scripted.script("/api.xro/2.0/Contacts", (200, {"Contacts": [], "pagination": {
            "page": 1, "pageSize": 5, "pageCount": 3, "itemCount": 12}}))
        response = xero.get(xero.records(connection, "contacts"), limit=5)
        assert (response.status_code, response.json()["code"]) == (502, "provider_error"), response.text
        scripted.script("/api.xro/2.0/Contacts", (200, {"Contacts": None}))
        assert xero.get(xero.records(connection, "contacts"), limit=5).status_code == 502


def test_a_create_refused_then_sent_again_with_its_key_once_the_cause_is_gone_is_made(xero):
    """Xero answers a key's first result again: the hub sends a create refused
    once with another key to Xero, derived from the client's key and the
    refusal (a create that may have been made keeps its key: see the
    idempotency tests)."""
    connection = xero.connect()
    url = xero.records(connection, "contacts")
    body = {"data": {"Name": "Opening Customer", "EmailAddress": "new@example.com"}, "idempotency_key": "k-1"}
    refused = xero.post(url, body)
    assert refused.status_code == 422 and "already assigned" in refused.json()["error"], refused.text
    other = next(c for c in xero.tenant().tables["Contacts"].values() if c["Name"] == "Opening Customer")
    assert xero.delete(xero.records(connection, "contacts", other["ContactID"])).status_code == 200  # archived
    again = xero.post(url, body)
    assert again.status_code == 201, again.text
    replayed = xero.post(url, body)  # (and the key now answers the record made)
    assert replayed.status_code in (200, 201) and replayed.json()["record"] == again.json()["record"]
