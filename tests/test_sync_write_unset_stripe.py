"""Stripe takes an empty string to unset an object, array or timestamp
(metadata, address, cancel_at: anyOf [.., enum [""]] in its spec) and "now"
for a subscription's trial_end: the write checks must not refuse them."""
from __future__ import annotations

import pytest

from hub_stripe.testing import seed_customers
from tests.sync_support import stripe_env  # noqa: F401  (fixture)


@pytest.mark.parametrize("change", [{"metadata": ""}, {"address": ""}])
def test_a_raw_write_unsetting_a_stripe_object_with_empty_text_is_taken_and_pushed(stripe_env, change):
    env = stripe_env
    ids = seed_customers(env.fake, 1, metadata={"a": "1"}, address={"city": "Paris"})
    env.use("customers", [{"source": "email", "target": "email"}])
    assert env.run()["status"] == "succeeded"
    written = env.put(ids[0], change, mapped=False)
    assert written.status_code == 200, written.text
    env.wait(written.json()["run_id"])
    record = env.get(ids[0], mapped=False).json()["record"]
    assert record["push_status"] in (None, "pushed", "succeeded"), record


def test_a_raw_write_ending_a_trial_now_is_taken(stripe_env):
    """Stripe's subscription update takes trial_end "now" (its spec: anyOf [enum ["now"], unix-time]) and
    billing_cycle_anchor only "now" or "unchanged": the only values Stripe's update takes for the latter."""
    import os

    import httpx

    from hub_stripe.testing import API_KEY

    env = stripe_env
    customer = seed_customers(env.fake, 1)[0]
    with httpx.Client(base_url=os.environ["HUB_STRIPE_ORIGIN"], headers={"Authorization": f"Bearer {API_KEY}"}) as s:
        product = s.post("/v1/products", data={"name": "Widget"}).json()
        price = s.post("/v1/prices", data={"product": product["id"], "unit_amount": "1000", "currency": "usd",
                                           "recurring[interval]": "month"}).json()
        sub = s.post("/v1/subscriptions", data={"customer": customer, "items[0][price]": price["id"],
                                                "trial_period_days": "7"}).json()
    env.use("subscriptions", [{"source": "status", "target": "status"}])
    assert env.run()["status"] == "succeeded"
    refused = {}
    for change in ({"trial_end": "now"}, {"billing_cycle_anchor": "unchanged"}):
        written = env.put(sub["id"], change, mapped=False)
        if written.status_code != 200:
            refused[next(iter(change))] = written.text
        else:
            env.wait(written.json()["run_id"])
    assert not refused, refused
