"""The hub's provider conformance suite, run against the Plaid plugin and its fake."""

from __future__ import annotations

import itertools
import time


from hub.testing import conformance
from hub_plaid import testing as fake

_deliveries = itertools.count(1)


def connect(h):
    token = h.api.post("/link/plaid/token", json={"user_id": "conformance-user",
                                                  "options": {"webhook": "https://hub.invalid/webhooks/plaid"}})
    assert token.status_code == 200, token.text
    link_token = token.json()["link_token"]
    public_token = h.fake_app.state.plaid.create_public_token("ins_109508", link_token=link_token)
    return h.link_exchange(public_token, {"institution": {"institution_id": "ins_109508", "name": "First Platypus Bank"}},
                           link_token=link_token)


def seed(app, entity, count):
    if entity != "transactions":
        return None
    plaid = app.state.plaid
    return [t["transaction_id"] for t in plaid.add_transactions(plaid.item().item_id, count)]


def webhook(h, kind):
    plaid = h.fake_app.state.plaid
    payload = plaid.webhook(plaid.item().item_id, "TRANSACTIONS", "DEFAULT_UPDATE", new_transactions=next(_deliveries))
    body, headers = plaid.signed_delivery(payload, iat=int(time.time()) - 3600 if kind == "stale" else None)
    return headers, body


class TestPlaidConformance(conformance.ConformanceSuite):
    target = conformance.ConformanceTarget(
        provider="plaid",
        fake_app=lambda: fake.create_app(transactions=10, institutions=12, rate_limits={}),
        settings={"client_id": fake.CLIENT_ID, "secret": fake.SECRET, "requests_per_second": "200", "burst": "200",
                  "endpoint_rate_limits": "off"},
        connect=connect,
        seed=seed,
        webhook=webhook,
    )
