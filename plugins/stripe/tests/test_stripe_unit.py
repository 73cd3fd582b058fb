"""Unit tests of the Stripe plugin's pure parts: form encoding, signature
checks, event mapping, error reading and the bundled field schemas."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import httpx
import pytest

import hub_stripe
from hub.types import ProviderUnavailable, ValidationFailed, WebhookRejected, WebhookRequest
from hub_stripe import encode, form, verify_webhook, webhook_connection_key
from hub_stripe.spec import decode_form, render_fields
from hub_stripe.testing import make_event, signed_delivery

SECRET = "whsec_unit"


def test_encode_uses_stripes_bracket_notation():
    pairs = encode({
        "email": "a@example.com",
        "metadata": {"plan": "pro", "seats": 3},
        "items": [{"price": "price_1", "quantity": 2}, {"price": "price_2", "metadata": {"k": "v"}}],
        "expand": ["latest_invoice", "customer"],
        "confirm": True,
        "off_session": False,
        "description": None,
        "created": {"gte": datetime(2024, 1, 1, tzinfo=timezone.utc)},
        "tax_id_data": [],
    })
    assert pairs == [
        ("email", "a@example.com"),
        ("metadata[plan]", "pro"), ("metadata[seats]", "3"),
        ("items[0][price]", "price_1"), ("items[0][quantity]", "2"),
        ("items[1][price]", "price_2"), ("items[1][metadata][k]", "v"),
        ("expand[]", "latest_invoice"), ("expand[]", "customer"),
        ("confirm", "true"), ("off_session", "false"),
        ("description", ""),
        ("created[gte]", "1704067200"),
        ("tax_id_data", ""),
    ]


def test_encoding_round_trips_through_the_fakes_decoder():
    data = {"a": {"b": [{"c": "1"}, {"c": "2", "d": {"e": "x"}}]}, "unset": None, "list": ["x", "y"], "n": 5}
    body = urlencode(encode(data))
    decoded = decode_form(httpx.QueryParams(body).multi_items())
    assert decoded == {"a": {"b": [{"c": "1"}, {"c": "2", "d": {"e": "x"}}]}, "unset": "", "list": ["x", "y"],
                       "n": "5"}


def test_form_groups_repeated_keys_for_httpx():
    assert form({"expand": ["a", "b"], "name": "x"}) == {"expand[]": ["a", "b"], "name": ["x"]}
    request = httpx.Request("POST", "https://api.stripe.com/v1/x", data=form({"expand": ["a", "b"], "m": {"k": 1}}))
    assert request.content == b"expand%5B%5D=a&expand%5B%5D=b&m%5Bk%5D=1"


def test_decode_form_keeps_sparse_numeric_keys_as_objects():
    assert decode_form([("metadata[1]", "a"), ("metadata[3]", "b")]) == {"metadata": {"1": "a", "3": "b"}}
    assert decode_form([("x[0]", "a"), ("x[1]", "b")]) == {"x": ["a", "b"]}


# ---------------------------------------------------------------- webhooks


def ctx(secret=SECRET):
    return SimpleNamespace(credentials={"webhook_secret": secret} if secret else {}, provider=hub_stripe.INFO, config={})


def delivery(event, secret=SECRET, timestamp=None):
    body, headers = signed_delivery(secret, event, timestamp)
    return WebhookRequest(headers=headers, body=body)


@pytest.mark.parametrize(("type_", "obj", "hub_type", "entity", "action"), [
    ("customer.created", {"id": "cus_1", "object": "customer"}, "customer.created", "customers", "created"),
    # A canceled subscription stays at Stripe (and in its lists): an update.
    ("customer.subscription.deleted", {"id": "sub_1", "object": "subscription"}, "subscription.deleted",
     "subscriptions", "updated"),
    ("customer.deleted", {"id": "cus_1", "object": "customer"}, "customer.deleted", "customers", "deleted"),
    ("invoice.finalized", {"id": "in_1", "object": "invoice"}, "invoice.finalized", "invoices", "updated"),
    ("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent"}, "payment_intent.succeeded",
     "payment_intents", "updated"),
    ("balance.available", {"object": "balance"}, "balance.available", None, "changed"),
    ("customer.source.created", {"id": "card_1", "object": "card"}, "customer.source.created", None, "changed"),
])
def test_events_map_to_hub_entities(type_, obj, hub_type, entity, action):
    event = make_event(type_, obj, event_id="evt_map", created=1_700_000_000)
    [result] = verify_webhook(ctx=ctx(), request=delivery(event))
    assert (result.dedup_key, result.type, result.entity, result.action) == ("evt_map", hub_type, entity, action)
    assert result.raw["type"] == type_
    assert result.record_id == obj.get("id")
    assert result.record == (None if action == "deleted" else obj)
    assert result.occurred_at == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)


def test_signature_checks():
    event = make_event("customer.updated", {"id": "cus_1", "object": "customer"})
    assert verify_webhook(ctx=ctx(), request=delivery(event, secret=["whsec_old", SECRET]))
    with pytest.raises(WebhookRejected) as wrong:
        verify_webhook(ctx=ctx(), request=delivery(event, secret="whsec_wrong"))
    assert wrong.value.code == "webhook_rejected"
    with pytest.raises(WebhookRejected) as stale:
        verify_webhook(ctx=ctx(), request=delivery(event, timestamp=int(time.time()) - 301))
    assert stale.value.code == "webhook_stale"
    assert verify_webhook(ctx=ctx(), request=delivery(event, timestamp=int(time.time()) - 290))
    request = delivery(event)
    for header in ("", "t=abc,v1=00", "v1=00", f"t={int(time.time())}", "garbage", "t=\u00b2,v1=00",
                   "t=" + "9" * 5000 + ",v1=00"):
        request.headers["Stripe-Signature"] = header
        with pytest.raises(WebhookRejected):
            verify_webhook(ctx=ctx(), request=request)
    with pytest.raises(WebhookRejected):
        verify_webhook(ctx=ctx(secret=None), request=delivery(event))


@pytest.mark.parametrize("body", [
    b'{"id": "evt_1", "type": "customer.created"}',
    # A created time no datetime holds, and JSON nested past the parser's depth.
    b'{"id": "evt_1", "type": "customer.created", "created": 1e20, "data": {"object": {"object": "customer"}}}',
    b"[" * 100_000 + b"]" * 100_000,
])
def test_malformed_but_signed_body_is_rejected(body):
    from hub_stripe.testing import signature_header

    request = WebhookRequest(headers={"Stripe-Signature": signature_header(SECRET, body)}, body=body)
    with pytest.raises(WebhookRejected, match="malformed"):
        verify_webhook(ctx=ctx(), request=request)


def test_connection_key_is_the_connected_account():
    with_account = make_event("customer.created", {"id": "cus_1", "object": "customer"}, account="acct_9")
    assert webhook_connection_key(request=delivery(with_account)) == "acct_9"
    assert webhook_connection_key(request=delivery(make_event("customer.created", {"object": "customer"}))) is None
    assert webhook_connection_key(request=WebhookRequest(headers={}, body=b"not json")) is None


# ---------------------------------------------------------------- errors and schemas


def test_describe_error_reads_stripes_error_body():
    body = {"error": {"type": "invalid_request_error", "code": "parameter_missing", "param": "amount",
                      "message": "Missing required param: amount."}}
    response = httpx.Response(400, json=body)
    missing = hub_stripe.describe_error(response=response)
    assert isinstance(missing, ValidationFailed) and missing.code == "validation_error"
    assert missing.message == "Missing required param: amount. (param: amount)"
    assert missing.details == {"type": "invalid_request_error", "code": "parameter_missing", "param": "amount"}
    assert missing.fields == ("amount",)
    nested = hub_stripe.describe_error(response=httpx.Response(400, json={"error": {
        "type": "invalid_request_error", "param": "items[0][price]", "message": "No such price"}}))
    assert nested.fields == ("items.0.price",)  # a path into Stripe's objects, as mappings name them
    assert hub_stripe.field_path("address[city]") == "address.city"
    reused = hub_stripe.describe_error(response=httpx.Response(400, json={"error": {
        "type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same "
                                                "parameters they were first used with."}}))
    assert isinstance(reused, ValidationFailed) and reused.code == "idempotency_key_reused"
    in_progress = hub_stripe.describe_error(response=httpx.Response(409, headers={"Stripe-Should-Retry": "true"},
                                                                    json={"error": {"type": "idempotency_error",
                                                                                    "message": "Try again later."}}))
    assert isinstance(in_progress, ProviderUnavailable) and in_progress.code == "provider_unavailable"
    assert hub_stripe.describe_error(response=httpx.Response(404, json={"error": {
        "type": "invalid_request_error", "message": "No such customer: 'cus_1'", "param": "id"}})) == (
        "No such customer: 'cus_1' (param: id)")
    card = httpx.Response(402, json={"error": {"type": "card_error", "code": "card_declined",
                                               "decline_code": "insufficient_funds", "message": "Declined."}})
    error = hub_stripe.describe_error(response=card)
    assert isinstance(error, ValidationFailed) and error.code == "card_declined"
    assert error.details == {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"}
    assert hub_stripe.describe_error(response=httpx.Response(502, text="<html>")) is None


def test_bundled_field_schemas_match_the_official_spec():
    bundled = Path(hub_stripe.__file__).with_name("fields.json").read_text()
    assert bundled == render_fields(), "regenerate with: python -m hub_stripe.spec"
    fields = {f["name"]: f for f in json.loads(bundled)["customers"]}
    assert fields["id"]["readonly"] and not fields["email"]["readonly"] and fields["created"]["type"] == "datetime"


def test_schemas_flags_follow_what_stripe_allows():
    schemas = {s.name: s for s in hub_stripe.entity_schemas()}
    assert schemas["balance_transactions"].readonly
    assert (schemas["charges"].supports_create, schemas["charges"].supports_update,
            schemas["charges"].supports_delete) == (True, True, False)
    assert schemas["payouts"].supports_update and not schemas["payouts"].supports_delete
    assert all(s.supports_since and "created[gte]" in s.description for s in schemas.values())


def test_the_spec_the_fake_validates_with_ships_with_the_package():
    """It was read from a path only the development machine had: the fake failed elsewhere."""
    from pathlib import Path

    import hub_stripe
    from hub_stripe.spec import DEFAULT_SPEC_PATH

    assert DEFAULT_SPEC_PATH.is_file() and DEFAULT_SPEC_PATH.is_relative_to(Path(hub_stripe.__file__).parent)
