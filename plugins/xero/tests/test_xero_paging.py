"""Listings that neither skip nor drop records: records of the same seconds
(a bulk import) with one of them changed during the listing, and records of
one millisecond that Xero orders otherwise than by their ids' text."""

from __future__ import annotations

import uuid

from hub_xero import testing as fake

from test_xero_records import listed

API = "/api/v1/integrations"


def test_records_of_the_same_second_one_changed_during_the_listing_are_all_listed(xero):
    connection = xero.connect()
    ids = fake.seed(xero.fake, "contacts", 6, ago=60)  # six contacts of one second (a bulk import)
    first = xero.get(xero.records(connection, "contacts"), limit=2).json()
    assert [r["ContactID"] for r in first["records"]] == ids[:2]
    fake.touch(xero.fake, "contacts", ids[0], FirstName="Changed")  # meanwhile: it moves to the end
    rest = listed(xero, connection, "contacts", 2, cursor=first["next_cursor"])
    assert all(len(page) <= 2 for page in rest)
    seen = {r["ContactID"] for r in first["records"]} | {r["ContactID"] for page in rest for r in page}
    assert seen == set(xero.tenant().tables["Contacts"])


def test_a_full_pass_over_a_bulk_import_changed_during_it_deletes_nothing(xero, monkeypatch):
    """110 contacts of one second, one edited in Xero after the pass's first
    page: every contact is still stored as live (none swept as deleted)."""
    connection = xero.connect()
    ids = fake.seed(xero.fake, "contacts", 110, ago=3600)
    base = f"{API}/connections/{connection['id']}"
    created = xero.post(f"{base}/sync-configs", {"entity": "contacts", "direction": "pull"})
    assert created.status_code == 201, created.text
    records = f"{base}/sync-configs/{created.json()['sync_config']['id']}/records"

    def pull(full: bool) -> dict:
        return xero.sync(connection, "contacts", direction="pull", full_refresh=full)

    pull(False)
    original, calls = fake._order_key, []

    def order_key(spec, id_field):  # (the edit lands right after the first page is answered)
        calls.append(spec)
        if len(calls) == 1:
            fake.touch(xero.fake, "contacts", ids[0], FirstName="Edited in Xero")
        return original(spec, id_field)

    monkeypatch.setattr(fake, "_order_key", order_key)
    run = pull(True)
    body = xero.get(records, limit=250, include_deleted=True).json()
    assert [r["remote_id"] for r in body["records"] if r.get("deleted")] == [], run
    assert {r["remote_id"] for r in body["records"]} == set(xero.tenant().tables["Contacts"])


def _sql_server_order(value: str):
    g = uuid.UUID(value).bytes  # (SQL Server compares a uniqueidentifier's last six bytes first)
    return (g[10:16], g[8:10], g[7:5:-1], g[5:3:-1], g[3::-1])


def test_records_of_one_millisecond_are_all_listed_however_xero_orders_them(xero, monkeypatch):
    connection = xero.connect()
    org = xero.tenant()
    ms = org.stamp() - 60_000
    ids = [org.write("Contacts", {"Name": f"Batch {n}"}, f"0000000{n}-0000-4000-8000-00000000000{7 - n}",
                     ms=ms)["ContactID"] for n in range(1, 7)]
    monkeypatch.setattr(fake, "_order_key", lambda spec, id_field: lambda row: (
        row["UpdatedDateUTC"], _sql_server_order(row[id_field])))
    pages = listed(xero, connection, "contacts", 2)
    listed_ids = [r["ContactID"] for page in pages for r in page]
    assert sorted(listed_ids) == sorted(org.tables["Contacts"]) and set(ids) <= set(listed_ids)


def test_past_xero_s_largest_page_in_the_same_seconds_the_listing_goes_on_by_page_number(xero, monkeypatch):
    """(Xero's largest page made 4 here: more records of one second than that.)"""
    import hub_xero

    monkeypatch.setattr(hub_xero, "MAX_PAGE", 4)
    connection = xero.connect()
    fake.seed(xero.fake, "contacts", 9, ago=60)
    pages = listed(xero, connection, "contacts", 2)
    listed_ids = [r["ContactID"] for page in pages for r in page]
    assert sorted(listed_ids) == sorted(xero.tenant().tables["Contacts"])  # each once
    assert max(len(page) for page in pages) <= 4
