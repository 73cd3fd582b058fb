"""Stripe fields that Stripe takes only when a record is created (a price's
unit_amount, currency, product...) are declared create_only: a mapped change
to one is refused when written (read_only_field), not accepted by the hub and
refused by Stripe at push."""
from __future__ import annotations

import os

import httpx

from hub_stripe.testing import API_KEY
from tests.sync_support import stripe_env  # noqa: F401  (fixture)


def test_a_change_to_a_price_amount_stripe_cannot_update_is_refused_when_written(stripe_env):
    env = stripe_env
    with httpx.Client(base_url=os.environ["HUB_STRIPE_ORIGIN"], headers={"Authorization": f"Bearer {API_KEY}"}) as s:
        product = s.post("/v1/products", data={"name": "Widget"}).json()
        price = s.post("/v1/prices", data={"product": product["id"], "unit_amount": "1999", "currency": "usd"}).json()
    env.use("prices", [{"source": "unit_amount", "target": "amount", "transform": "cents_to_decimal",
                        "currency_field": "currency"},
                       {"source": "nickname", "target": "nickname"}])
    assert env.run()["status"] == "succeeded"
    assert env.get(price["id"]).json()["record"]["data"]["amount"] == 19.99

    written = env.put(price["id"], {"amount": "25.00"})
    # Stripe's API takes unit_amount when a price is created only: the hub refuses the change
    # (read_only_field, as for any create-only field) rather than queue a push Stripe refuses.
    if written.status_code == 200:
        env.wait(written.json()["run_id"])
        record = env.get(price["id"]).json()["record"]
        assert record["push_status"] is None, (
            f"accepted (200), then refused at push: push_status={record['push_status']!r}, "
            f"push_error={record['push_error']!r}")
    assert written.status_code == 422 and written.json()["code"] == "read_only_field", written.text
