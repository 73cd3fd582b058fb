"""The provider account a connection's credentials reach stays with them
when two updates race, on SQLite and PostgreSQL (the Stripe plugin's tests,
plugins/stripe/tests/test_stripe_accounts.py, show the refusals themselves)."""

from __future__ import annotations

import contextlib
import threading
import time

from hub.models import Connection
from hub.services import connections as service
from tests.test_example_end_to_end import connect

#: The account each key reaches, in this test's story.
ACCOUNTS = {"key-other": "acct_other", "key-rolled": "acct_example"}


def test_two_updates_at_once_leave_the_key_and_its_account_together(client, auth, hub_app, monkeypatch):
    """Each decides under the connection's lock, on the row as the other left
    it. Without it both read the row first, and the one committing last kept
    its key beside the other's account (its own, unchanged, was not written)."""
    connection = connect(client, auth)
    hub = hub_app.state.hub
    provider = hub.provider("example")
    with hub.session() as session:
        organization_id = session.get(Connection, connection["id"]).organization_id
    both_read = threading.Barrier(2, timeout=1)
    find = type(hub).find_connection

    def find_then_wait(self, session, organization, connection_id):
        found = find(self, session, organization, connection_id)
        if threading.current_thread().name in ACCOUNTS:
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait()  # (under the lock the second cannot read before the first commits)
            if threading.current_thread().name == "key-rolled":
                time.sleep(0.3)  # it commits last
        return found

    monkeypatch.setattr(type(hub), "find_connection", find_then_wait)
    outcomes = {}

    def update(key):
        try:
            outcomes[key] = service._apply_update(hub, provider, organization_id, connection["id"], {}, None,
                                                  {"api_key": key}, (ACCOUNTS[key], "acct_example"))
        except Exception as exc:  # noqa: BLE001 - what each got is the point
            outcomes[key] = exc

    first = threading.Thread(target=update, args=("key-other",), name="key-other")
    second = threading.Thread(target=update, args=("key-rolled",), name="key-rolled")
    first.start()
    time.sleep(0.05)
    second.start()
    first.join()
    second.join()
    with hub.session() as session:
        row = session.get(Connection, connection["id"])
    key = hub.cipher.decrypt_json(row.credentials_encrypted)["api_key"]
    assert row.provider_account == ACCOUNTS[key], (key, row.provider_account, outcomes)
