"""A restricted key without Balance read connects; a delivery of another connected account is refused."""

from __future__ import annotations

from hub_stripe.testing import make_event, signed_delivery

API = "/api/v1/integrations"
SECRET = "whsec_review4"


def test_a_restricted_key_without_balance_read_still_connects(client, auth, fake):
    """Stripe's restricted keys (rk_) grant each resource separately; a key for
    customers and invoices only has no Balance read. test_connection reads
    /v1/balance first and lets the 403 through, so such a key cannot connect
    at all, while the README says rk_ keys are supported and the key works for
    every entity it was given."""
    fake.state.forbidden.add("balance")
    created = client.post(f"{API}/connections", json={"provider": "stripe", "credentials": {
        "api_key": "sk_test_hubfake4242"}, "config": {}}, headers=auth)
    assert created.status_code == 201, created.text
    connection = created.json()["connection"]
    assert connection["status"] == "connected", connection
    listed = client.get(f"{API}/connections/{connection['id']}/entities/customers/records", headers=auth)
    assert listed.status_code == 200, listed.text


def test_a_delivery_for_another_connected_account_is_refused(client, auth, hub_app, fake, connect):
    """A Connect endpoint signs the events of every connected account with one
    secret, and each event names its account. Delivered with ?connection_id=,
    an event of acct_Other was applied to the connection of acct_Mine (its
    customer stored among acct_Mine's). Shopify's plugin refuses a delivery
    for another shop than the connection's; Stripe's should refuse one for
    another account than the connection's ``account``."""
    connection = connect(config={"account": "acct_Mine"}, webhook_secret=SECRET)
    url = f"{API}/webhooks/stripe?connection_id={connection['id']}"
    event = make_event("customer.created", {"id": "cus_NotMine", "object": "customer", "email": "x@example.com"},
                       account="acct_Other")
    body, headers = signed_delivery(SECRET, event)
    answer = client.post(url, content=body, headers=headers)
    assert answer.status_code == 401, answer.text
