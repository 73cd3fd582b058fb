"""A connection is bound to the Stripe account its key reaches: a key of
another account (or a connected account in its config) is refused while the
connection holds that account's records, since the next full pass would
take them for deleted and waiting changes would be pushed to the other."""

from __future__ import annotations

import os
import threading

import httpx
from sqlmodel import select

from hub.models import Connection, SyncRecord
from hub.testing import wait_for_run, wait_until
from hub_stripe.testing import API_KEY, seed_customers

API = "/api/v1/integrations"
ROLLED = "sk_test_rolledkey0001"  # a new key of the same account
OTHER = "sk_test_otheraccount1"  # a key of another account
KEYS = {ROLLED: "acct_1Fake", OTHER: "acct_1Other"}


def other_account_customers(count):
    with httpx.Client(base_url=os.environ["HUB_STRIPE_ORIGIN"], auth=(OTHER, "")) as stripe:
        return [stripe.post("/v1/customers", data={"email": f"other{i}@example.com"}).json()["id"]
                for i in range(count)]


def pull(client, auth, connection):
    run = client.post(f"{API}/connections/{connection['id']}/sync", json={"entity": "customers"},
                      headers=auth).json()["run"]
    assert wait_for_run(client, auth, connection["id"], run["id"])["status"] == "succeeded"


def stored_ids(hub_app, connection):
    with hub_app.state.hub.session() as session:
        return {r.remote_id for r in session.exec(select(SyncRecord).where(
            SyncRecord.connection_id == connection["id"], SyncRecord.deleted == False))}  # noqa: E712


def test_the_connection_shows_the_account_its_key_reaches(client, auth, start_fake, connect):
    start_fake(keys=KEYS)
    connection = connect()
    assert connection["provider_account"] == "acct_1Fake (test mode)"
    tested = client.post(f"{API}/connections/{connection['id']}/test", headers=auth).json()
    assert tested["details"]["account"] == "acct_1Fake (test mode)"
    assert tested["details"]["name"] == "Business acct_1Fake"


def test_a_key_of_another_account_is_refused_while_the_connection_holds_records(
        client, auth, hub_app, start_fake, connect):
    fake = start_fake(keys=KEYS)
    ours = set(seed_customers(fake, 3))
    other_account_customers(2)
    connection = connect()
    pull(client, auth, connection)
    url = f"{API}/connections/{connection['id']}"

    refused = client.put(url, json={"credentials": {"api_key": OTHER}}, headers=auth)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["code"] == "account_mismatch" and "delete this connection" in body["error"]
    assert body["details"] == {"account": "acct_1Other (test mode)", "connected": "acct_1Fake (test mode)"}
    assert OTHER not in refused.text and OTHER[-4:] not in refused.text
    kept = client.get(url, headers=auth).json()["connection"]
    assert kept["provider_account"] == "acct_1Fake (test mode)" and kept["credentials_hint"].endswith(API_KEY[-4:])
    pull(client, auth, connection)  # still the first account's key: nothing taken for deleted
    assert stored_ids(hub_app, connection) == ours

    # A connected account of the platform is another account too.
    moved = client.put(url, json={"config": {"account": "acct_1Connected"}}, headers=auth)
    assert moved.status_code == 409 and moved.json()["code"] == "account_mismatch", moved.text
    assert "settings reach" in moved.json()["error"]

    rolled = client.put(url, json={"credentials": {"api_key": ROLLED}}, headers=auth)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["connection"]["credentials_hint"].endswith(ROLLED[-4:])
    pull(client, auth, connection)
    assert stored_ids(hub_app, connection) == ours


def test_before_it_holds_anything_a_connection_may_change_accounts(client, auth, hub_app, start_fake, connect):
    """A key of the wrong account sent at first is fixed without losing the
    connection's sync configs: nothing of the first account is held yet."""
    start_fake(keys=KEYS)
    theirs = set(other_account_customers(2))
    connection = connect()
    url = f"{API}/connections/{connection['id']}"
    client.post(f"{url}/sync-configs", json={"entity": "customers", "direction": "pull"}, headers=auth)
    changed = client.put(url, json={"credentials": {"api_key": OTHER}}, headers=auth)
    assert changed.status_code == 200, changed.text
    assert changed.json()["connection"]["provider_account"] == "acct_1Other (test mode)"
    pull(client, auth, connection)
    assert stored_ids(hub_app, connection) == theirs


def test_a_connection_made_before_accounts_were_kept_learns_its_own_first(
        client, auth, hub_app, start_fake, connect):
    fake = start_fake(keys=KEYS)
    seed_customers(fake, 2)
    connection = connect()
    pull(client, auth, connection)
    url = f"{API}/connections/{connection['id']}"
    _forget_account(hub_app, connection)

    refused = client.put(url, json={"credentials": {"api_key": OTHER}}, headers=auth)
    assert refused.status_code == 409 and refused.json()["code"] == "account_mismatch", refused.text

    # POST /test teaches it too.
    _forget_account(hub_app, connection)
    client.post(f"{url}/test", headers=auth)
    assert client.get(url, headers=auth).json()["connection"]["provider_account"] == "acct_1Fake (test mode)"

    # Its key revoked (the usual reason to send a new one), it cannot tell: the new key is taken.
    _forget_account(hub_app, connection)
    del fake.state.keys[API_KEY]
    taken = client.put(url, json={"credentials": {"api_key": ROLLED}}, headers=auth)
    assert taken.status_code == 200, taken.text
    assert taken.json()["connection"]["provider_account"] == "acct_1Fake (test mode)"


def test_a_restricted_key_that_cannot_read_the_account_still_connects(client, auth, start_fake, connect):
    fake = start_fake(keys=KEYS)
    fake.state.forbidden.add("account")
    connection = connect()
    assert connection["provider_account"] is None
    changed = client.put(f"{API}/connections/{connection['id']}", json={"credentials": {"api_key": OTHER}},
                         headers=auth)
    assert changed.status_code == 200, changed.text


def test_a_key_that_cannot_tell_its_account_is_refused_once_records_are_held(
        client, auth, hub_app, start_fake, connect):
    """A restricted key without the account's read permission cannot show
    it reaches the same account: taken, it could be another's (audit)."""
    fake = start_fake(keys=KEYS)
    connection = connect()
    url = f"{API}/connections/{connection['id']}"
    fake.state.forbidden.add("account")
    # Nothing held yet: taken, and the connection no longer claims an account it cannot vouch for.
    taken = client.put(url, json={"credentials": {"api_key": OTHER}}, headers=auth)
    assert taken.status_code == 200 and taken.json()["connection"]["provider_account"] is None, taken.text
    fake.state.forbidden.discard("account")
    assert client.put(url, json={"credentials": {"api_key": API_KEY}}, headers=auth).status_code == 200
    ours = set(seed_customers(fake, 2))
    pull(client, auth, connection)
    fake.state.forbidden.add("account")
    refused = client.put(url, json={"credentials": {"api_key": OTHER}}, headers=auth)
    assert refused.status_code == 409 and refused.json()["code"] == "account_unverifiable", refused.text
    assert refused.json()["details"] == {"account": None, "connected": "acct_1Fake (test mode)"}
    assert "allowed to read the account" in refused.json()["error"]
    pull(client, auth, connection)
    assert stored_ids(hub_app, connection) == ours


def test_the_account_does_not_change_under_a_running_sync(client, auth, hub_app, start_fake, connect, monkeypatch):
    """A run reads the credentials once, at its start: a switch taken while
    it had stored nothing yet got the first account's records stored under
    the second, then taken for deleted (audit)."""
    from hub.sync.engine import SyncEngine

    fake = start_fake(keys=KEYS)
    ours = set(seed_customers(fake, 3))
    connection = connect()
    begin, switched = SyncEngine._begin_pass, threading.Event()

    def held_begin(self, *args, **kwargs):
        switched.wait(30)  # (as a wait for the entity's write lock would) until the switch was answered
        return begin(self, *args, **kwargs)

    monkeypatch.setattr(SyncEngine, "_begin_pass", held_begin)
    run = client.post(f"{API}/connections/{connection['id']}/sync", json={"entity": "customers"},
                      headers=auth).json()["run"]
    try:
        wait_until(lambda: client.get(f"{API}/connections/{connection['id']}/sync/runs/{run['id']}",
                                      headers=auth).json()["run"]["status"] == "running", "the run under way")
        refused = client.put(f"{API}/connections/{connection['id']}", json={"credentials": {"api_key": OTHER}},
                             headers=auth)
    finally:
        switched.set()
    assert refused.status_code == 409 and refused.json()["code"] == "account_mismatch", refused.text
    assert "a sync running" in refused.json()["error"] and "wait for it to end" in refused.json()["error"]
    assert wait_for_run(client, auth, connection["id"], run["id"])["status"] == "succeeded"
    assert stored_ids(hub_app, connection) == ours


def test_unreadable_credentials_of_a_connection_that_predates_accounts_can_be_replaced(
        client, auth, hub_app, start_fake, connect):
    """Complete new credentials replace ones the hub's key cannot decrypt;
    learning the old account from them must not stand in the way (audit)."""
    start_fake(keys=KEYS)
    connection = connect()
    _forget_account(hub_app, connection, credentials_encrypted="not a ciphertext")
    replaced = client.put(f"{API}/connections/{connection['id']}", json={"credentials": {"api_key": ROLLED}},
                          headers=auth)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["connection"]["provider_account"] == "acct_1Fake (test mode)"


def _forget_account(hub_app, connection, **also):
    with hub_app.state.hub.session() as session:
        row = session.get(Connection, connection["id"])
        row.provider_account = None
        for name, value in also.items():
            setattr(row, name, value)
        session.add(row)
        session.commit()


def test_a_refused_connection_leaves_no_rate_limit_bucket_of_the_account_it_named(client, auth, hub_app, start_fake):
    """Its account is what its user typed, untested: a saved connection of that
    account must not share (or find drained) a bucket of refused attempts."""
    start_fake(keys=KEYS)
    for attempt in range(3):
        refused = client.post(f"{API}/connections", json={
            "provider": "stripe", "credentials": {"api_key": "sk_test_wrong"},
            "config": {"account": f"acct_junk{attempt}"}}, headers=auth)
        assert refused.status_code == 424, refused.text
    assert not [key for key in hub_app.state.hub.pool._limiters if key.startswith("account|")]
