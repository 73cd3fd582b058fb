"""A constant of the mapping is the tenant's own value: a write giving it
another value is refused (read_only_field), a create as an update, rather than
the tenant's value silently dropped."""
from __future__ import annotations

from tests.sync_support import stripe_env  # noqa: F401  (fixture)

MAPPINGS = [{"source": "email", "target": "email"},
            {"target": "source_system", "transform": "constant", "value": "stripe"}]


def test_a_create_giving_a_constant_another_value_is_refused_as_an_update_is(stripe_env):
    env = stripe_env
    env.use("customers", MAPPINGS)
    made = env.post({"email": "a@example.com"}, sync=False)
    assert made.status_code == 201, made.text
    changed = env.put(made.json()["record"]["id"], {"source_system": "crm"}, sync=False)
    assert changed.status_code == 422 and changed.json()["code"] == "read_only_field", changed.text

    created = env.post({"email": "b@example.com", "source_system": "crm"}, sync=False)
    # Refused as the update is: accepted, the record would read source_system "stripe", the
    # tenant's "crm" gone nowhere.
    assert created.status_code == 422 and created.json()["code"] == "read_only_field", (
        created.status_code, created.json().get("record", {}).get("data"))
