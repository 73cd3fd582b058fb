"""A listing's cursor is bound to the listing that handed it out (its kind
and owner: the sync config, the connection): another organization's cursor
taken as a position would silently skip records, and one of another listing
taken for the first page would repeat them. Refused: 422 ``invalid_cursor``."""

from __future__ import annotations

from tests.conftest import API, make_org
from tests.sync_support import wait_run
from tests.test_example_end_to_end import connect


def _organization(app, name):
    headers = make_org(app, name)
    headers.pop("org_id")
    return headers


def _stored_notes(client, headers, titles):
    connection = connect(client, headers)
    base = f"{API}/connections/{connection['id']}"
    config = client.post(f"{base}/sync-configs", json={"entity": "notes", "direction": "both"},
                         headers=headers).json()["sync_config"]
    url = f"{base}/sync-configs/{config['id']}/records"
    for title in titles:
        made = client.post(url, json={"data": {"title": title}, "sync": False}, headers=headers)
        assert made.status_code == 201, made.text
    return base, url


def test_a_stored_records_cursor_of_another_organization_is_refused_not_used_to_skip(client, hub_app):
    alice, bob = _organization(hub_app, "alice"), _organization(hub_app, "bob")
    _base, alice_url = _stored_notes(client, alice, [f"alice {i}" for i in range(8)])
    _base, bob_url = _stored_notes(client, bob, [f"bob {i}" for i in range(8)])
    # Alice's cursor after a first page whose last record's id sorts after some of Bob's.
    cursor = None
    for _page in range(3):
        page = client.get(alice_url, params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                          headers=alice).json()
        cursor = page["next_cursor"]
    assert cursor is not None

    answer = client.get(bob_url, params={"cursor": cursor, "limit": 100}, headers=bob)
    # Taken as a position in Bob's listing, it answers 200 with some of Bob's 8 records missing.
    assert answer.status_code == 422, f"{answer.status_code}: {len(answer.json().get('records', []))} of 8 records"
    assert answer.json()["code"] == "invalid_cursor"


def test_a_cursor_of_another_listing_is_refused_by_the_stored_records_listing(client, auth):
    base, url = _stored_notes(client, auth, [f"note {i}" for i in range(3)])
    # A next page of the live listing of the same entity: a cursor this API handed out, for another listing.
    for i in range(3):
        assert client.post(f"{base}/entities/notes/records", json={"data": {"title": f"live {i}"}},
                           headers=auth).status_code == 201
    live_cursor = client.get(f"{base}/entities/notes/records", params={"limit": 1}, headers=auth).json()["next_cursor"]
    assert live_cursor is not None
    answer = client.get(url, params={"cursor": live_cursor}, headers=auth)
    # Answered as the first page again: a client paging with it sees the same records twice.
    assert answer.status_code == 422, f"{answer.status_code}: {[r['data'].get('title') for r in answer.json()['records']]}"
    assert answer.json()["code"] == "invalid_cursor"


def test_a_run_logs_cursor_of_another_connection_is_refused(client, hub_app):
    alice, bob = _organization(hub_app, "alice"), _organization(hub_app, "bob")
    alice_base, _url = _stored_notes(client, alice, [])
    bob_base, _url = _stored_notes(client, bob, [])
    for base, headers in ((alice_base, alice), (alice_base, alice), (bob_base, bob)):
        started = client.post(f"{base}/sync", json={"entity": "notes", "direction": "pull"}, headers=headers)
        assert started.status_code == 202, started.text
        # (Ended before the next is asked: one asked while another is queued joins it.)
        wait_run(client, headers, base.rsplit("/", 1)[-1], started.json()["run"]["id"])
    cursor = client.get(f"{alice_base}/sync/logs", params={"limit": 1}, headers=alice).json()["next_cursor"]
    assert cursor is not None
    assert client.get(f"{alice_base}/sync/logs", params={"limit": 1, "cursor": cursor},
                      headers=alice).status_code == 200
    answer = client.get(f"{bob_base}/sync/logs", params={"cursor": cursor}, headers=bob)
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_cursor"), answer.text
