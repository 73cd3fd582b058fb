"""Odd answers Plaid gives now and then, over real HTTP through the hub's
API: /transactions/sync saying more follow but handing back the cursor it
was asked with (or none) fails the run at once, instead of paging forever
while the connection's other syncs wait."""

from __future__ import annotations

import pytest

from hub.testing import wait_for_run
from hub.testing.fakes import Scripted
from hub_plaid.testing import create_app as create_fake

API = "/api/v1/integrations"


@pytest.fixture
def fake(serve_app):
    app = create_fake(transactions=20, institutions=5)
    plaid = app.state.plaid
    plaid.scripted = Scripted(app)
    plaid.url = serve_app(plaid.scripted)
    return plaid


def page(next_cursor, *ids):
    added = [{"transaction_id": i, "account_id": "acc", "amount": 1.5, "date": "2026-01-02", "name": i}
             for i in ids]
    return 200, {"added": added, "modified": [], "removed": [], "has_more": True, "next_cursor": next_cursor,
                 "request_id": "r"}


@pytest.mark.parametrize("again", ["cursor-1", None, ""])
def test_a_sync_page_repeating_its_cursor_fails_the_run_at_once(client, auth, fake, connection, again):
    fake.scripted.script("/transactions/sync", page("cursor-1", "t1"), page(again, "t2"), *[page(again)] * 50)
    started = client.post(f"{API}/connections/{connection['id']}/sync", json={"entity": "transactions"},
                          headers=auth)
    assert started.status_code == 202, started.text
    run = wait_for_run(client, auth, connection["id"], started.json()["run"]["id"])
    assert (run["status"], run["error_code"]) == ("failed", "provider_error"), run
    assert "gave no new cursor" in run["error"]
    assert fake.scripted.answered.count("/transactions/sync") == 2
