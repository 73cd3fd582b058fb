"""The hub's provider conformance suite against the Stripe plugin and its fake."""

from __future__ import annotations

import time


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
            "subscriptions": {"customer": "cus_conformance", "items": [{"price": "price_conformance_monthly"}]},
        },
        updates={
            "customers": {"name": "Grace Hopper"}, "products": {"name": "Renamed"}, "prices": {"nickname": "Gold"},
            "payment_intents": {"description": "Changed"}, "charges": {"description": "Changed"},
            "payouts": {"metadata": {"batch": "7"}}, "invoices": {"description": "Changed"},
            "subscriptions": {"cancel_at_period_end": True},
        },
        webhook=webhook,
    )

    def test_subscription_round_trip(self, conformance):
        """The suite's round trip for subscriptions, but a delete cancels (as at Stripe)."""
        h = conformance
        sample = self.target.samples["subscriptions"]
        created = h.api.post(h.records_url("subscriptions"), json={"data": sample})
        assert created.status_code == 201, created.text
        record = created.json()["record"]
        assert record["customer"] == sample["customer"] and record["status"] == "active"
        assert [i["price"]["id"] for i in record["items"]["data"]] == [sample["items"][0]["price"]]
        fetched = h.api.get(h.records_url("subscriptions", record["id"])).json()["record"]
        assert fetched == record
        updated = h.api.put(h.records_url("subscriptions", record["id"]),
                            json={"data": self.target.updates["subscriptions"]})
        assert updated.status_code == 200 and updated.json()["record"]["cancel_at_period_end"] is True
        canceled = h.api.delete(h.records_url("subscriptions", record["id"]))
        assert canceled.status_code == 200 and canceled.json()["record"]["status"] == "canceled"
        gone = h.api.get(h.records_url("subscriptions", record["id"]))
        assert gone.status_code == 200 and gone.json()["record"]["status"] == "canceled"
