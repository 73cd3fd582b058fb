"""Odd answers Stripe gives now and then, over real HTTP through the hub's
API: a full pass the provider cannot go on with fails clearly and leaves
the record store as it was, instead of ending early and taking the
customers it did not list for deleted."""

from __future__ import annotations

import pytest

from hub.testing import wait_for_run
from hub.testing.fakes import Scripted
from hub_stripe.testing import create_app as create_fake
from hub_stripe.testing import seed_customers

API = "/api/v1/integrations"


@pytest.fixture
def scripted(serve_app, monkeypatch):
    fake = Scripted(create_fake(rate=1000, available=50_000))
    monkeypatch.setenv("HUB_STRIPE_ORIGIN", serve_app(fake))
    return fake


def pull(client, auth, connection_id, full=False):
    started = client.post(f"{API}/connections/{connection_id}/sync",
                          json={"entity": "customers", "full_refresh": full}, headers=auth)
    assert started.status_code == 202, started.text
    return wait_for_run(client, auth, connection_id, started.json()["run"]["id"])


def stored(client, auth, connection_id):
    configs = client.get(f"{API}/connections/{connection_id}/sync-configs", headers=auth).json()["sync_configs"]
    url = f"{API}/connections/{connection_id}/sync-configs/{configs[0]['id']}/records"
    return client.get(url, params={"include_deleted": True, "limit": 500}, headers=auth).json()["records"]


@pytest.mark.parametrize(("odd", "why"), [
    ({"object": "list", "data": [], "has_more": True}, "more customers follow an empty page"),
    ({"object": "list", "data": [], "has_more": "false"}, "without a list"),
    ({"object": "list", "data": None, "has_more": False}, "without a list"),
])
def test_a_listing_stripe_cannot_go_on_with_fails_the_pass_and_deletes_nothing(client, auth, connect, scripted,
                                                                                odd, why):
    ids = seed_customers(scripted.app, 3, start=1_700_000_000)
    connection = connect()
    assert pull(client, auth, connection["id"])["created"] == 3
    first = sorted(scripted.state.store.rows["customers"].values(), key=lambda c: -c["created"])[0]
    # A first page saying more follow, then the odd one.
    scripted.script("/v1/customers", (200, {"object": "list", "data": [first], "has_more": True}), (200, odd))
    run = pull(client, auth, connection["id"], full=True)
    assert (run["status"], run["error_code"]) == ("failed", "provider_error"), run
    assert why in run["error"]
    records = stored(client, auth, connection["id"])
    assert sorted(r["remote_id"] for r in records) == sorted(ids) and not any(r["deleted"] for r in records)
