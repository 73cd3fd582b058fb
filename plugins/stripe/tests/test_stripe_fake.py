"""The fake Stripe itself, over real HTTP: it must refuse what Stripe refuses
(checked against the official OpenAPI spec) and answer in Stripe's shapes."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
from openapi_core.testing import MockRequest, MockResponse

from hub.testing import serve
from hub_stripe import encode
from hub_stripe.spec import openapi
from hub_stripe.testing import API_KEY, create_app, seed_customers

HEADERS = {"Authorization": f"Bearer {API_KEY}", "Stripe-Version": "2020-08-27"}


@pytest.fixture(scope="module")
def shared_stripe():
    """One fake for the table of refused requests (none of them changes anything)."""
    app = create_app(rate=1000)
    with serve(app) as url, httpx.Client(base_url=url, headers=HEADERS) as client:
        yield client, app


def post(client, path, data, **headers):
    return client.post(path, data=_multi(encode(data)), headers=headers)


def _multi(pairs):
    grouped = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def assert_conforms(response):
    """The response is valid for its operation in Stripe's spec (no field missing, none extra)."""
    request = response.request
    body = request.content or b""
    mock = MockRequest("https://api.stripe.com", request.method, request.url.path,
                       args=dict(httpx.QueryParams(request.url.query).multi_items()), headers=dict(request.headers),
                       data=body, content_type="application/x-www-form-urlencoded")
    openapi().validate_response(mock, MockResponse(response.content, response.status_code))


@pytest.mark.parametrize(("method", "path", "data", "code", "param"), [
    ("POST", "/v1/customers", {"colour": "red"}, "parameter_unknown", "colour"),
    ("POST", "/v1/customers", {"address": {"planet": "Mars"}}, "parameter_unknown", "address[planet]"),
    ("POST", "/v1/customers", {"balance": "ten"}, "parameter_invalid_integer", "balance"),
    ("POST", "/v1/customers", {"metadata": "flat"}, "parameter_invalid", "metadata"),
    ("POST", "/v1/customers", {"email": {"nested": "x"}}, "parameter_invalid", "email"),
    ("POST", "/v1/payment_intents", {"currency": "usd"}, "parameter_missing", "amount"),
    ("POST", "/v1/payment_intents", {"amount": 5, "currency": "usd", "confirm": "maybe"}, "parameter_invalid",
     "confirm"),
    ("POST", "/v1/subscriptions", {"customer": "cus_1", "items": [{"price": "p", "quantity": "two"}]},
     "parameter_invalid_integer", "items"),
    ("POST", "/v1/webhook_endpoints", {"url": "https://x.test", "enabled_events": ["nope.never"]},
     "parameter_invalid", "enabled_events[0]"),
    ("GET", "/v1/customers", {"limit": "many"}, "parameter_invalid_integer", "limit"),
    ("GET", "/v1/customers", {"colour": "red"}, "parameter_unknown", "colour"),
])
def test_requests_stripe_would_refuse_get_a_400(shared_stripe, method, path, data, code, param):
    client, app = shared_stripe
    errors_before = app.state.validation_errors
    if method == "GET":
        response = client.get(path, params=encode(data))
    else:
        response = post(client, path, data)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code
    assert error["param"].startswith(param)
    assert app.state.validation_errors == errors_before + 1 and app.state.store.events == []


def test_bodies_that_are_not_bracket_forms_are_refused(stripe):
    client, _ = stripe
    as_json = client.post("/v1/customers", json={"email": "a@example.com"})
    assert as_json.status_code == 400 and "Content-Type" in as_json.json()["error"]["message"]
    dotted = client.post("/v1/customers", data={"metadata.plan": "pro"})
    assert dotted.status_code == 400 and dotted.json()["error"]["code"] == "parameter_unknown"


def test_validation_can_be_turned_off(serve_app):
    app = create_app(validate=False)
    with httpx.Client(base_url=serve_app(app), headers=HEADERS) as client:
        response = client.post("/v1/customers", data={"colour": "red", "email": "a@example.com"})
    assert response.status_code == 200 and response.json()["email"] == "a@example.com"
    assert app.state.validation_seconds == 0


def test_answers_conform_to_the_spec(stripe):
    client, app = stripe
    customer = post(client, "/v1/customers", {"email": "a@example.com", "metadata": {"k": "v"},
                                              "address": {"city": "Paris"}})
    product = post(client, "/v1/products", {"name": "Plan"})
    price = post(client, "/v1/prices", {"product": product.json()["id"], "currency": "usd", "unit_amount": 900,
                                        "recurring": {"interval": "month"}})
    one_off = post(client, "/v1/prices", {"product_data": {"name": "Setup"}, "currency": "usd", "unit_amount": 100})
    customer_id = customer.json()["id"]
    responses = [
        customer, product, price, one_off,
        post(client, "/v1/subscriptions", {"customer": customer_id, "items": [{"price": price.json()["id"]}]}),
        post(client, "/v1/invoiceitems", {"customer": customer_id, "price": one_off.json()["id"]}),
        post(client, "/v1/payment_intents", {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa",
                                             "confirm": True}),
        post(client, "/v1/charges", {"amount": 500, "currency": "usd", "source": "tok_visa"}),
        post(client, "/v1/payouts", {"amount": 700, "currency": "usd"}),
        post(client, "/v1/webhook_endpoints", {"url": "https://hub.test/hook", "enabled_events": ["*"]}),
        post(client, f"/v1/customers/{customer_id}", {"name": "Ada"}),
    ]
    invoice = post(client, "/v1/invoices", {"customer": customer_id})
    responses += [invoice, post(client, f"/v1/invoices/{invoice.json()['id']}/finalize", {})]
    for resource in ("customers", "products", "prices", "subscriptions", "invoiceitems", "invoices",
                     "payment_intents", "charges", "payouts", "balance_transactions", "webhook_endpoints"):
        listed = client.get(f"/v1/{resource}", params={"limit": 3})
        responses += [listed, client.get(f"/v1/{resource}/{listed.json()['data'][0]['id']}")]
    responses += [client.get("/v1/balance"), client.delete(f"/v1/customers/{customer_id}"),
                  client.get(f"/v1/customers/{customer_id}")]
    for response in responses:
        assert response.status_code == 200, (response.request.url, response.text)
        assert_conforms(response)
    assert app.state.validation_errors == 0
    assert "secret" in responses[9].json() and "secret" not in client.get("/v1/webhook_endpoints").json()["data"][0]


def test_error_bodies_conform_to_the_spec(stripe):
    client, _ = stripe
    for response in (client.get("/v1/customers/cus_missing"), post(client, "/v1/customers", {"colour": "red"}),
                     client.get("/v1/customers", headers={"Authorization": "Bearer sk_test_nope"})):
        assert response.status_code in (400, 401, 404)
        assert_conforms(response)


def test_keys_are_checked(stripe):
    client, _ = stripe
    missing = client.get("/v1/balance", headers={"Authorization": ""})
    assert missing.status_code == 401 and "did not provide an API key" in missing.json()["error"]["message"]
    wrong = client.get("/v1/balance", headers={"Authorization": "Bearer sk_test_other_key_1234"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"].endswith("1234")
    assert API_KEY not in wrong.text
    basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
    assert client.get("/v1/balance", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    bad_version = client.get("/v1/balance", headers={"Stripe-Version": "latest"})
    assert bad_version.status_code == 400


def test_unknown_ids_and_urls(stripe):
    client, _ = stripe
    by_url = client.get("/v1/customers/cus_nope")
    assert by_url.status_code == 404 and by_url.json()["error"]["code"] == "resource_missing"
    by_param = post(client, "/v1/invoices", {"customer": "cus_nope"})
    assert by_param.status_code == 400 and by_param.json()["error"]["param"] == "customer"
    assert client.get("/v1/nothing_here").status_code == 404


def test_pagination_both_ways_and_created_filters(stripe):
    client, app = stripe
    ids = seed_customers(app, 12, start=int(time.time()) - 50)
    newest_first = ids[::-1]
    first = client.get("/v1/customers", params={"limit": 5}).json()
    assert [c["id"] for c in first["data"]] == newest_first[:5] and first["has_more"] is True
    assert first["object"] == "list" and first["url"] == "/v1/customers"
    last = client.get("/v1/customers", params={"limit": 5, "starting_after": newest_first[9]}).json()
    assert [c["id"] for c in last["data"]] == newest_first[10:] and last["has_more"] is False
    back = client.get("/v1/customers", params={"limit": 3, "ending_before": newest_first[5]}).json()
    assert [c["id"] for c in back["data"]] == newest_first[2:5] and back["has_more"] is True
    created = app.state.store.rows["customers"][ids[6]]["created"]
    window = client.get("/v1/customers", params=encode({"created": {"gte": created, "lt": created + 3}})).json()
    assert [c["id"] for c in window["data"]] == ids[6:9][::-1]
    exact = client.get("/v1/customers", params={"created": created}).json()
    assert [c["id"] for c in exact["data"]] == [ids[6]]
    unknown = client.get("/v1/customers", params={"starting_after": "cus_gone"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "starting_after"
    assert client.get("/v1/customers", params={"limit": 101}).status_code == 400


def test_idempotency_keys_replay_or_conflict(stripe):
    client, app = stripe
    first = post(client, "/v1/customers", {"email": "a@example.com"}, **{"Idempotency-Key": "key-1"})
    assert post(client, f"/v1/customers/{first.json()['id']}", {"name": "Changed since"}).status_code == 200
    replay = post(client, "/v1/customers", {"email": "a@example.com"}, **{"Idempotency-Key": "key-1"})
    assert replay.json() == first.json() and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["name"] is None, "a replay answers what the first request answered"
    conflict = post(client, "/v1/customers", {"email": "b@example.com"}, **{"Idempotency-Key": "key-1"})
    assert conflict.status_code == 400 and conflict.json()["error"]["type"] == "idempotency_error"
    declined = {"amount": 100, "currency": "usd", "payment_method": "pm_card_chargeDeclined", "confirm": True}
    assert post(client, "/v1/payment_intents", declined, **{"Idempotency-Key": "key-2"}).status_code == 402
    again = post(client, "/v1/payment_intents", declined, **{"Idempotency-Key": "key-2"})
    assert again.status_code == 402 and again.headers["Idempotent-Replayed"] == "true"
    assert post(client, "/v1/customers", {}, **{"Idempotency-Key": "k" * 256}).status_code == 400
    assert len(app.state.store.rows["customers"]) == 1 and app.state.idempotent_replays == 2


def test_rate_limit_answers_429_like_stripe(serve_app):
    app = create_app(rate=2, burst=2, tolerance=0)
    with httpx.Client(base_url=serve_app(app), headers=HEADERS) as client:
        statuses = [client.get("/v1/balance") for _ in range(4)]
    limited = [r for r in statuses if r.status_code == 429]
    assert [r.status_code for r in statuses[:2]] == [200, 200] and limited
    assert "retry-after" not in limited[0].headers
    assert limited[0].json()["error"] == {
        "type": "invalid_request_error", "code": "rate_limit",
        "doc_url": "https://stripe.com/docs/error-codes/rate-limit",
        "message": "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."}
    assert limited[0].headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    assert app.state.rate_limited == len(limited) and app.state.limiter.allowed == 2


def test_each_account_has_its_own_rate_limit(serve_app):
    """Stripe limits each account: another account's calls did not count against
    the first's in one bucket for every key (a multi-process exercise found it)."""
    app = create_app(rate=2, burst=2, tolerance=0, keys={"sk_test_rolled": "acct_1Fake", "sk_test_other": "acct_2"})
    url = serve_app(app)
    with httpx.Client(base_url=url, headers=HEADERS) as main, \
            httpx.Client(base_url=url, headers={"Authorization": "Bearer sk_test_rolled"}) as rolled, \
            httpx.Client(base_url=url, headers={"Authorization": "Bearer sk_test_other"}) as other:
        assert [main.get("/v1/balance").status_code for _ in range(2)] == [200, 200]
        assert rolled.get("/v1/balance").status_code == 429  # the same account's bucket
        assert [other.get("/v1/balance").status_code for _ in range(2)] == [200, 200]
    assert set(app.state.limiters) == {"acct_1Fake", "acct_2"}


def test_changes_are_recorded_as_events(stripe):
    client, app = stripe
    customer = post(client, "/v1/customers", {"email": "e@example.com"}).json()
    post(client, f"/v1/customers/{customer['id']}", {"name": "E"})
    client.delete(f"/v1/customers/{customer['id']}")
    events = app.state.store.events
    assert [e["type"] for e in events] == ["customer.created", "customer.updated", "customer.deleted"]
    assert events[1]["data"]["previous_attributes"] == {"name": None}
    assert all(e["id"].startswith("evt_") and e["api_version"] == "2020-08-27" for e in events)


def test_validation_cost_is_measured(stripe):
    client, app = stripe
    seed_customers(app, 100)
    started = time.perf_counter()
    for _ in range(15):
        assert client.get("/v1/customers", params={"limit": 100}).status_code == 200
        assert post(client, "/v1/customers", {"email": "x@example.com", "metadata": {"a": "b"}}).status_code == 200
    elapsed = time.perf_counter() - started
    per_request = app.state.validation_seconds / app.state.requests
    print(f"\nvalidation {per_request * 1000:.1f} ms/request; {app.state.requests / elapsed:.0f} requests/s")
    assert per_request < 0.05


def test_a_customer_is_charged_through_its_card_only(stripe):
    """Stripe refuses to charge a customer without a card; the fake charged anyone."""
    client, _ = stripe
    bare = post(client, "/v1/customers", {"email": "bare@example.com"}).json()
    refused = post(client, "/v1/charges", {"amount": 500, "currency": "usd", "customer": bare["id"]})
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "missing", refused.text
    carded = post(client, "/v1/customers", {"email": "card@example.com", "source": "tok_visa"}).json()
    assert carded["default_source"].startswith("card_")
    charged = post(client, "/v1/charges", {"amount": 500, "currency": "usd", "customer": carded["id"]})
    assert charged.status_code == 200 and charged.json()["status"] == "succeeded", charged.text
    declining = post(client, "/v1/customers", {"email": "d@example.com", "source": "tok_chargeDeclined"}).json()
    declined = post(client, "/v1/charges", {"amount": 500, "currency": "usd", "customer": declining["id"]})
    assert declined.status_code == 402 and declined.json()["error"]["code"] == "card_declined"


def test_list_filters_are_exact_and_none_is_ignored(stripe):
    """Filters were compared case-insensitively, and one the fake did not know
    (a subscription's ``price``) was ignored: every subscription came back."""
    client, _ = stripe
    post(client, "/v1/customers", {"email": "Ada@example.com"})
    assert client.get("/v1/customers", params={"email": "ada@example.com"}).json()["data"] == []
    assert [c["email"] for c in client.get("/v1/customers", params={"email": "Ada@example.com"}).json()["data"]] == [
        "Ada@example.com"]
    customer = post(client, "/v1/customers", {"email": "sub@example.com"}).json()["id"]
    product = post(client, "/v1/products", {"name": "Plan"}).json()["id"]
    prices = [post(client, "/v1/prices", {"product": product, "currency": "usd", "unit_amount": amount,
                                          "recurring": {"interval": "month"}}).json()["id"] for amount in (5, 9)]
    subscriptions = [post(client, "/v1/subscriptions", {"customer": customer, "items": [{"price": price}]}).json()["id"]
                     for price in prices]
    listed = client.get("/v1/subscriptions", params={"price": prices[1]}).json()["data"]
    assert [s["id"] for s in listed] == [subscriptions[1]]


def test_an_empty_string_unsets_only_what_can_be_null(stripe):
    client, _ = stripe
    product = post(client, "/v1/products", {"name": "Widget", "description": "Blue"}).json()
    cleared = post(client, f"/v1/products/{product['id']}", {"description": None})
    assert cleared.status_code == 200 and cleared.json()["description"] is None
    refused = post(client, f"/v1/products/{product['id']}", {"name": None})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "name", refused.text
    assert "cannot be unset" in refused.json()["error"]["message"]
    assert client.get(f"/v1/products/{product['id']}").json()["name"] == "Widget"


def test_a_card_given_to_a_customer_later_is_charged(stripe):
    client, _ = stripe
    customer = post(client, "/v1/customers", {"email": "later@example.com"}).json()
    updated = post(client, f"/v1/customers/{customer['id']}", {"source": "tok_visa"}).json()
    assert updated["default_source"].startswith("card_")
    charged = post(client, "/v1/charges", {"amount": 500, "currency": "usd", "customer": customer["id"]})
    assert charged.status_code == 200, charged.text
