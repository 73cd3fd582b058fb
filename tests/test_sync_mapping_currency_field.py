"""A mapping's currency_field must name a text field the entity declares (or
one an account adds): a field that holds no currency code (a number, an
object, a time) or a path into a text field is refused when the mapping is
saved, not taken and then a mapping error on every record."""
from __future__ import annotations

import pytest

from hub_stripe.testing import seed_customers
from tests.sync_support import stripe_env  # noqa: F401  (fixture)


@pytest.mark.parametrize("currency_field", ["email.code", "balance", "address", "created"])
def test_a_currency_field_that_cannot_hold_a_currency_code_is_refused_when_saved(stripe_env, currency_field):
    env = stripe_env
    ids = seed_customers(env.fake, 1, balance=1999, currency="usd")
    env.use("customers", [{"source": "email", "target": "email"}])
    assert env.run()["status"] == "succeeded"
    saved = env.put_mappings([{"source": "balance", "target": "balance", "transform": "cents_to_decimal",
                               "currency_field": currency_field}])
    if saved.status_code == 200:
        shown = env.get(ids[0]).json()["record"]
        pytest.fail(f"saved (200); then every record reads balance {shown['data']['balance']!r} with "
                    f"mapping_errors {shown['mapping_errors']!r}")
    assert saved.status_code == 422 and saved.json()["code"] in ("unknown_field", "invalid_mapping",
                                                                  "impossible_cast"), saved.text
