"""The fake Stripe refuses amounts and currencies Stripe refuses (an audit
found it lenient: a negative payout raised the balance, payment intents of 1
cent, -5 or in "zzz" were accepted), with Stripe's error body; and its
``lose_next`` knob loses the answer of an applied POST."""

from __future__ import annotations

import pytest

from hub_stripe import encode
from hub_stripe.testing import seed_customers

API = "/api/v1/integrations"


def post(client, path, data, **headers):
    grouped: dict[str, list[str]] = {}
    for key, value in encode(data):
        grouped.setdefault(key, []).append(value)
    return client.post(path, data=grouped, headers=headers)


def snapshot(app):
    store = app.state.store
    return ({name: len(rows) for name, rows in store.rows.items()}, dict(store.available), dict(store.pending),
            len(store.events))


@pytest.mark.parametrize(("path", "data", "param", "code", "message"), [
    ("/v1/payouts", {"amount": -500, "currency": "usd"}, "amount", "parameter_invalid_integer",
     "Invalid positive integer"),
    ("/v1/payouts", {"amount": 0, "currency": "usd"}, "amount", "parameter_invalid_integer",
     "Invalid positive integer"),
    ("/v1/payouts", {"amount": 500, "currency": "zzz"}, "currency", None, "Invalid currency: zzz."),
    ("/v1/payment_intents", {"amount": 1, "currency": "usd"}, "amount", "amount_too_small",
     "Amount must be at least $0.50 usd"),
    ("/v1/payment_intents", {"amount": 49, "currency": "usd"}, "amount", "amount_too_small",
     "Amount must be at least $0.50 usd"),
    ("/v1/payment_intents", {"amount": -5, "currency": "usd"}, "amount", "parameter_invalid_integer",
     "Invalid positive integer"),
    ("/v1/payment_intents", {"amount": 20, "currency": "gbp"}, "amount", "amount_too_small",
     "Amount must be at least 0.30 gbp"),
    ("/v1/payment_intents", {"amount": 2000, "currency": "zzz"}, "currency", None, "Invalid currency: zzz."),
    ("/v1/charges", {"amount": 10, "currency": "usd", "source": "tok_visa"}, "amount", "amount_too_small",
     "Amount must be at least $0.50 usd"),
    ("/v1/charges", {"amount": -100, "currency": "usd", "source": "tok_visa"}, "amount",
     "parameter_invalid_integer", "Invalid positive integer"),
    ("/v1/charges", {"amount": 1000, "currency": "zzz", "source": "tok_visa"}, "currency", None,
     "Invalid currency: zzz."),
])
def test_amounts_and_currencies_stripe_refuses_get_its_400(stripe, path, data, param, code, message):
    client, app = stripe
    before = snapshot(app)
    response = post(client, path, data)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error.get("code") == code and error["message"].startswith(message)
    assert snapshot(app) == before  # nothing made, no balance moved, no event


def test_valid_amounts_still_go_through(stripe):
    client, app = stripe
    available = app.state.store.available["usd"]
    payout = post(client, "/v1/payouts", {"amount": 1, "currency": "usd"})
    assert payout.status_code == 200 and payout.json()["currency"] == "usd"
    assert app.state.store.available["usd"] == available - 1
    assert post(client, "/v1/payment_intents", {"amount": 50, "currency": "USD"}).json()["currency"] == "usd"
    assert post(client, "/v1/payment_intents", {"amount": 50, "currency": "jpy"}).status_code == 200
    assert post(client, "/v1/charges", {"amount": 50, "currency": "usd", "source": "tok_visa"}).status_code == 200
    # Invoice items may be credits (negative), prices free (0); the currency still has to exist.
    [customer] = seed_customers(app, 1)
    assert post(client, "/v1/invoiceitems", {"customer": customer, "amount": -300,
                                             "currency": "usd"}).status_code == 200
    bad = post(client, "/v1/invoiceitems", {"customer": customer, "amount": 300, "currency": "zzz"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "currency"
    product = post(client, "/v1/products", {"name": "Free"}).json()["id"]
    assert post(client, "/v1/prices", {"product": product, "currency": "usd", "unit_amount": 0}).status_code == 200
    negative = post(client, "/v1/prices", {"product": product, "currency": "usd", "unit_amount": -1})
    assert negative.status_code == 400 and negative.json()["error"]["param"] == "unit_amount"


def test_a_refusal_is_saved_under_its_idempotency_key(stripe):
    client, app = stripe
    first = post(client, "/v1/payouts", {"amount": -5, "currency": "usd"}, **{"Idempotency-Key": "k-negative"})
    again = post(client, "/v1/payouts", {"amount": -5, "currency": "usd"}, **{"Idempotency-Key": "k-negative"})
    assert first.status_code == again.status_code == 400
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()


def test_the_hub_reports_the_refusal_with_its_param(client, auth, fake, connect):
    connection = connect()
    response = client.post(f"{API}/connections/{connection['id']}/actions/create_payment_intent",
                           json={"params": {"amount": 1, "currency": "usd"}}, headers=auth)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "Amount must be at least $0.50 usd (param: amount)"
    payout = client.post(f"{API}/connections/{connection['id']}/entities/payouts/records",
                         json={"data": {"amount": -500, "currency": "usd"}}, headers=auth)
    assert payout.status_code == 422, payout.text
    assert payout.json()["error"] == "Invalid positive integer (param: amount)"
    assert fake.state.store.rows["payouts"] == {} and fake.state.store.available["usd"] == 50_000


def test_lose_next_applies_the_write_and_loses_the_answer(stripe):
    client, app = stripe
    app.state.lose_next = 1
    lost = post(client, "/v1/customers", {"email": "lost@example.com"}, **{"Idempotency-Key": "k-lost"})
    assert lost.status_code == 502 and lost.json()["error"]["type"] == "api_error"
    assert app.state.lose_next == 0 and app.state.lost == 1
    [made] = [c for c in app.state.store.rows["customers"].values() if c["email"] == "lost@example.com"]
    replay = post(client, "/v1/customers", {"email": "lost@example.com"}, **{"Idempotency-Key": "k-lost"})
    assert replay.status_code == 200 and replay.json()["id"] == made["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(app.state.store.rows["customers"]) == 1
    # Refused writes are not counted down; reads never are.
    app.state.lose_next = 1
    assert post(client, "/v1/payouts", {"amount": -1, "currency": "usd"}).status_code == 400
    assert client.get("/v1/customers").status_code == 200
    assert app.state.lose_next == 1
