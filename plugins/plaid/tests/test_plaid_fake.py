"""The fake Plaid itself: it must refuse what Plaid refuses and answer in Plaid's shapes."""

from __future__ import annotations

import httpx
import pytest

from hub_plaid.testing import API_VERSION, CLIENT_ID, SECRET, SERVED, create_app, spec_validator

HEADERS = {"PLAID-CLIENT-ID": CLIENT_ID, "PLAID-SECRET": SECRET, "Plaid-Version": API_VERSION}


@pytest.fixture
def plaid(serve_app):
    app = create_app(transactions=30, institutions=10)
    state = app.state.plaid
    state.http = httpx.Client(base_url=serve_app(app), headers=HEADERS, timeout=10)
    yield state
    state.http.close()


@pytest.fixture
def token(plaid):
    public = plaid.http.post("/sandbox/public_token/create",
                             json={"institution_id": "ins_109508", "initial_products": ["transactions"]})
    assert public.status_code == 200, public.text
    exchanged = plaid.http.post("/item/public_token/exchange", json={"public_token": public.json()["public_token"]})
    assert exchanged.status_code == 200, exchanged.text
    return exchanged.json()["access_token"]


def error_of(response):
    body = response.json()
    assert set(body) >= {"error_type", "error_code", "error_message", "display_message", "request_id"}
    return response.status_code, body["error_type"], body["error_code"]


def test_spec_is_loaded_once_pruned_and_fast():
    validator = spec_validator()
    assert validator is spec_validator()
    assert validator.load_seconds < 10
    assert set(validator.fields) == set(SERVED)
    assert "count" in validator.fields["/transactions/sync"]


def test_keys_and_version_are_checked(plaid, token):
    assert error_of(plaid.http.post("/item/get", json={"access_token": token}, headers={"PLAID-SECRET": "nope"})) == (
        400, "INVALID_INPUT", "INVALID_API_KEYS")
    bare = httpx.post(plaid.http.base_url.join("/item/get"), json={"access_token": token})
    assert error_of(bare) == (400, "INVALID_REQUEST", "MISSING_FIELDS")
    assert error_of(plaid.http.post("/item/get", json={"access_token": token}, headers={"Plaid-Version": "2018-05-22"}))[2] == "INVALID_FIELD"
    assert error_of(plaid.http.post("/item/get", json={"access_token": "access-sandbox-x"}))[2] == "INVALID_ACCESS_TOKEN"
    assert plaid.http.post("/categories/get", json={}, headers={"PLAID-SECRET": ""}).status_code == 200


def test_requests_are_validated_against_the_official_spec(plaid, token):
    assert error_of(plaid.http.post("/transactions/sync", json={"access_token": token, "count": 501})) == (
        400, "INVALID_REQUEST", "INVALID_FIELD")
    unknown = plaid.http.post("/transactions/sync", json={"access_token": token, "limit": 5})
    assert error_of(unknown)[2] == "UNKNOWN_FIELDS" and "limit" in unknown.json()["error_message"]
    missing = plaid.http.post("/link/token/create", json={"language": "en", "country_codes": ["US"], "user": {}})
    assert error_of(missing)[2] == "MISSING_FIELDS"
    assert missing.json()["error_message"].endswith("user.client_user_id, client_name")
    assert error_of(plaid.http.post("/institutions/get", json={"count": 1, "offset": 0, "country_codes": ["XX"]}))[2] == "INVALID_FIELD"
    assert error_of(plaid.http.post("/item/get", content=b"{", headers={"Content-Type": "application/json"}))[2] == "INVALID_BODY"
    assert len(plaid.invalid_requests) == 5


def test_answers_are_checked_against_the_spec(plaid, token):
    plaid.routes["/item/get"] = lambda body: {"item": {"item_id": 42}}
    response = plaid.http.post("/item/get", json={"access_token": token})
    assert error_of(response) == (500, "API_ERROR", "INTERNAL_SERVER_ERROR")
    assert plaid.response_problems and plaid.response_problems[0][0] == "/item/get"


def test_transactions_sync_pages_a_run_and_detects_mutation(plaid, token):
    item = plaid.item()
    first = plaid.http.post("/transactions/sync", json={"access_token": token, "count": 20}).json()
    assert (len(first["added"]), first["modified"], first["removed"], first["has_more"]) == (20, [], [], True)
    second = plaid.http.post("/transactions/sync", json={"access_token": token, "count": 20,
                                                          "cursor": first["next_cursor"]}).json()
    assert len(second["added"]) == 10 and second["has_more"] is False
    assert {t["transaction_id"] for t in first["added"] + second["added"]} == set(item.transactions)
    quiet = plaid.http.post("/transactions/sync", json={"access_token": token, "cursor": second["next_cursor"]}).json()
    assert (quiet["added"], quiet["has_more"], quiet["next_cursor"]) == ([], False, second["next_cursor"])

    plaid.add_transactions(item.item_id, 1)
    mid_run = plaid.http.post("/transactions/sync", json={"access_token": token, "count": 20,
                                                           "cursor": first["next_cursor"]})
    assert error_of(mid_run) == (400, "TRANSACTIONS_ERROR", "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION")

    gone = first["added"][0]["transaction_id"]
    plaid.remove_transaction(item.item_id, gone)
    delta = plaid.http.post("/transactions/sync", json={"access_token": token, "cursor": second["next_cursor"]}).json()
    assert len(delta["added"]) == 1 and delta["removed"] == [
        {"transaction_id": gone, "account_id": first["added"][0]["account_id"]}]

    plaid.inject_mutation_error()
    restart = plaid.http.post("/transactions/sync", json={"access_token": token, "count": 5}).json()
    assert restart["has_more"] is True
    injected = plaid.http.post("/transactions/sync", json={"access_token": token, "count": 5,
                                                            "cursor": restart["next_cursor"]})
    assert error_of(injected)[2] == "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"
    assert plaid.http.post("/transactions/sync", json={"access_token": token, "count": 5,
                                                        "cursor": restart["next_cursor"]}).status_code == 200


def test_per_item_rate_limit_answers_429_without_retry_after(plaid, token):
    plaid.limit("/accounts/balance/get", capacity=2, per_second=0.01)
    answers = [plaid.http.post("/accounts/balance/get", json={"access_token": token}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert error_of(answers[2]) == (429, "RATE_LIMIT_EXCEEDED", "BALANCE_LIMIT")
    assert "retry-after" not in answers[2].headers
    assert plaid.http.post("/accounts/get", json={"access_token": token}).status_code == 200


def test_public_tokens_are_single_use_and_items_can_be_removed(plaid, token):
    public = plaid.create_public_token("ins_109509")
    assert plaid.http.post("/item/public_token/exchange", json={"public_token": public}).status_code == 200
    assert error_of(plaid.http.post("/item/public_token/exchange", json={"public_token": public}))[2] == "INVALID_PUBLIC_TOKEN"
    assert plaid.http.post("/item/remove", json={"access_token": token}).json().keys() == {"request_id"}
    assert error_of(plaid.http.post("/accounts/get", json={"access_token": token}))[2] == "INVALID_ACCESS_TOKEN"


def test_webhook_bodies_follow_the_spec(plaid, token):
    item = plaid.item()
    assert plaid.webhook(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")["historical_update_complete"] is True
    with pytest.raises(ValueError, match="off-spec"):
        plaid.webhook(item.item_id, "TRANSACTIONS", "DEFAULT_UPDATE", new_transactions="many")


def test_link_can_be_completed_over_http_for_a_hub_link_token(client, auth, fake):
    """Run alone (uvicorn), the fake needs a way to play the user's Link widget:
    a public token from /sandbox/public_token/create is not of the link token."""
    import httpx

    from tests.conftest import API

    link_token = client.post(f"{API}/link/plaid/token", json={"user_id": "u"}, headers=auth).json()["link_token"]
    made = httpx.post(f"{fake.url}/fake/link/complete", json={"link_token": link_token, "institution_id": "ins_109508"})
    assert made.status_code == 200, made.text
    exchanged = client.post(f"{API}/link/plaid/exchange", headers=auth,
                            json={"public_token": made.json()["public_token"], "link_token": link_token})
    assert exchanged.status_code == 201, exchanged.text
    refused = httpx.post(f"{fake.url}/fake/link/complete", json={"link_token": "link-sandbox-nope"})
    assert refused.status_code == 400 and "link_token" in refused.json()["error"]


def test_the_spec_the_fake_validates_with_ships_with_the_package_pruned_as_the_whole_one_is(tmp_path):
    """It was read from a path only the development machine had: the fake failed elsewhere."""
    from pathlib import Path

    import hub_plaid
    from hub_plaid.testing import DEFAULT_SPEC, SERVED, _pruned_spec, write_spec_subset

    assert DEFAULT_SPEC.is_file() and DEFAULT_SPEC.is_relative_to(Path(hub_plaid.__file__).parent)
    shipped = _pruned_spec(DEFAULT_SPEC)
    assert set(SERVED) <= set(shipped["paths"])  # an endpoint served later needs write_spec_subset
    again = tmp_path / "again.json"
    write_spec_subset(DEFAULT_SPEC, again)
    assert _pruned_spec(again) == shipped
