"""Stripe's write shapes differ from its read shapes: a subscription's items
read as a list object and are written as an array of item changes (the
plugin's _writable takes both); default_tax_rates read as TaxRate objects and
are written as their ids; a price's tiers take up_to "inf". The write checks
judge the written value by the read shape and refuse what Stripe takes."""
from __future__ import annotations

import os

import httpx
import pytest

from hub_stripe.testing import API_KEY, seed_customers
from tests.sync_support import stripe_env  # noqa: F401  (fixture)


def _subscription(env):
    customer = seed_customers(env.fake, 1)[0]
    with httpx.Client(base_url=os.environ["HUB_STRIPE_ORIGIN"], headers={"Authorization": f"Bearer {API_KEY}"}) as s:
        product = s.post("/v1/products", data={"name": "Widget"}).json()
        prices = [s.post("/v1/prices", data={"product": product["id"], "unit_amount": str(amount), "currency": "usd",
                                             "recurring[interval]": "month"}).json()["id"] for amount in (1000, 2000)]
        sub = s.post("/v1/subscriptions", data={"customer": customer, "items[0][price]": prices[0]}).json()
    return customer, prices, sub


def test_a_stored_subscription_created_with_an_items_array_is_taken(stripe_env):
    env = stripe_env
    customer, prices, _sub = _subscription(env)
    env.use("subscriptions", [{"source": "status", "target": "status"}])
    assert env.run()["status"] == "succeeded"
    created = env.post({"customer": customer, "items": [{"price": prices[1], "quantity": 2}]}, mapped=False)
    assert created.status_code in (200, 201, 202), created.text


def test_a_stored_subscription_given_an_items_array_of_changes_is_taken(stripe_env):
    env = stripe_env
    _customer, prices, sub = _subscription(env)
    env.use("subscriptions", [{"source": "status", "target": "status"}])
    assert env.run()["status"] == "succeeded"
    written = env.put(sub["id"], {"items": [{"price": prices[1], "quantity": 3}]}, mapped=False)
    assert written.status_code == 200, written.text


def test_check_value_takes_stripe_write_shapes():
    from hub.sync.mapping import ConversionError, check_value
    import hub_stripe

    schemas = {s.name: s for s in hub_stripe.entity_schemas()}
    refused = {}
    for entity, name, value in (("subscriptions", "default_tax_rates", ["txr_123"]),
                                ("invoices", "default_tax_rates", ["txr_123"]),
                                ("prices", "tiers", [{"up_to": 10, "unit_amount": 1000},
                                                     {"up_to": "inf", "unit_amount": 800}])):
        try:
            check_value(schemas[entity].field(name), value)
        except ConversionError as exc:
            refused[f"{entity}.{name}"] = str(exc)
    assert not refused, refused
