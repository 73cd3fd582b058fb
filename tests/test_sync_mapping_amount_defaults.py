"""An amount mapping's default is checked against its currency's decimals
when the mapping is saved: a default finer than the currency (a fraction of a
cent, of a yen) is refused (invalid_mapping), not shown in records and
refused only when written back."""
from __future__ import annotations

import pytest

from tests.sync_support import stripe_env  # noqa: F401  (fixture)


@pytest.mark.parametrize("currency, default", [("USD", "1.234"), ("JPY", "1.5")])
def test_an_amount_default_finer_than_its_currency_is_refused_when_saved(stripe_env, currency, default):
    env = stripe_env
    env.use("customers", [{"source": "email", "target": "email"}])
    saved = env.put_mappings([{"source": "balance", "target": "balance", "transform": "cents_to_decimal",
                               "currency": currency, "default": default}])
    # (As decimal_to_cents refuses a default of 1.5 cents: not a whole number of them.)
    assert saved.status_code == 422 and saved.json()["code"] == "invalid_mapping", saved.text
