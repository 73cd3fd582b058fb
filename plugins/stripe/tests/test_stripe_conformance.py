"""The hub's provider conformance suite against the Stripe plugin and its fake."""

from __future__ import annotations

import time

import pytest

from hub.testing.conformance import ConformanceSuite, ConformanceTarget
from hub_stripe import testing as fake


def connect(h):
    connection = h.create_connection({"api_key": fake.API_KEY, "webhook_secret": fake.CONFORMANCE_SECRET},
                                     {"account": fake.CONFORMANCE_ACCOUNT})
    return connection


def webhook(h, kind):
    customer = h.fake_app.state.store.rows["customers"]["cus_conformance"]
    event = fake.make_event("customer.updated", customer, account=fake.CONFORMANCE_ACCOUNT)
    body, headers = fake.signed_delivery(fake.CONFORMANCE_SECRET, event,
                                         int(time.time()) - 3600 if kind == "stale" else None)
    return headers, body


class TestStripeConformance(ConformanceSuite):
    target = ConformanceTarget(
        provider="stripe",
        fake_app=fake.conformance_app,
        settings={"requests_per_second": "200", "burst": "200"},
        connect=connect,
        seed=fake.seed,
        samples={
            "customers": {"email": "ada@example.com", "name": "Ada Lovelace"},
            "products": {"name": "Conformance widget"},
            "prices": {"product": "prod_conformance", "currency": "usd", "unit_amount": 1200},
            "payment_intents": {"amount": 2000, "currency": "usd", "description": "Conformance intent"},
            "charges": {"amount": 500, "currency": "usd", "customer": "cus_conformance", "description": "Charge"},
            "payouts": {"amount": 1000, "currency": "usd", "description": "Conformance payout"},
            "invoices": {"customer": "cus_conformance", "description": "Conformance invoice"},
            "subscriptions": {"customer": "cus_conformance", "items": [{"price": "price_conformance"}]},
        },
        updates={
            "customers": {"name": "Grace Hopper"}, "products": {"name": "Renamed"}, "prices": {"nickname": "Gold"},
            "payment_intents": {"description": "Changed"}, "charges": {"description": "Changed"},
            "payouts": {"metadata": {"batch": "7"}}, "invoices": {"description": "Changed"},
        },
        webhook=webhook,
    )

    def test_writes_round_trip(self, conformance, entity):
        if entity == "subscriptions":
            pytest.skip("Stripe answers a subscription's `items` as a list object, not the items sent, so the "
                        "suite's equality check cannot hold; test_stripe_hub.py covers subscription writes")
        super().test_writes_round_trip(conformance, entity)
