"""Writes are checked against the entity's declared field types, in the
provider's shape (``"mapped": false``) as through a ``rename`` mapping: text
under an integer field, a fraction of a cent under an amount in cents, text
under an object are refused when written (invalid_value), not accepted and
refused by Stripe at push."""
from __future__ import annotations

import pytest

from hub_stripe.testing import seed_customers
from tests.sync_support import stripe_env  # noqa: F401  (fixture)


@pytest.mark.parametrize("change", [{"balance": "abc"}, {"balance": 12.5}, {"next_invoice_sequence": "two"},
                                    {"address": "Paris"}])
def test_a_raw_write_of_a_value_its_field_cannot_hold_is_refused_when_written(stripe_env, change):
    env = stripe_env
    ids = seed_customers(env.fake, 1, balance=1999)
    env.use("customers", [{"source": "email", "target": "email"}])
    assert env.run()["status"] == "succeeded"
    written = env.put(ids[0], change, mapped=False)
    if written.status_code == 200:
        env.wait(written.json()["run_id"])
        record = env.get(ids[0], mapped=False).json()["record"]
        pytest.fail(f"accepted (200); at push: push_status={record['push_status']!r}, "
                    f"push_error={record['push_error']!r}")
    assert written.status_code == 422 and written.json()["code"] == "invalid_value", written.text


@pytest.mark.parametrize("change", [{"seq": "abc"}, {"email": {"a": 1}}, {"balance": 12.5}])
def test_a_mapped_rename_of_a_value_its_field_cannot_hold_is_refused_when_written(stripe_env, change):
    """The same through ``rename`` mappings (the default transform, in the
    default mapped shape): nothing checks the value against the provider
    field's declared type."""
    env = stripe_env
    ids = seed_customers(env.fake, 1, balance=1999)
    env.use("customers", [{"source": "email", "target": "email"},
                          {"source": "next_invoice_sequence", "target": "seq"},
                          {"source": "balance", "target": "balance"}])
    assert env.run()["status"] == "succeeded"
    written = env.put(ids[0], change)
    if written.status_code == 200:
        env.wait(written.json()["run_id"])
        record = env.get(ids[0]).json()["record"]
        pytest.fail(f"accepted (200); at push: push_status={record['push_status']!r}, "
                    f"push_error={record['push_error']!r}")
    assert written.status_code == 422 and written.json()["code"] == "invalid_value", written.text
