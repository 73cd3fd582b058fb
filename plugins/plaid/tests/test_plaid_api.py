"""The Plaid plugin through the hub's REST API, over real HTTP to the fake Plaid."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient
from plaid_helpers import API, WEBHOOK_URL, build_hub_app, link, list_pages, records_url

from hub.context import ProviderContext
from hub.models import Connection
from hub.services.orgs import create_organization
from hub.services.records import open_cursor, seal_cursor
from hub.types import ConfigurationError, ProviderUnavailable
from hub_plaid import INFO, _environment, request_auth


def test_provider_is_listed_with_read_only_entities_and_actions(client):
    provider = client.get(f"{API}/providers/plaid").json()["provider"]
    assert provider["category"] == "banking" and provider["auth_type"] == "link"
    assert provider["entities"] == ["accounts", "balances", "institutions", "transactions"]
    assert provider["actions"] == ["categories", "institution", "refresh_transactions"]
    assert provider["supports_webhooks"] is True
    entities = {e["name"]: e for e in client.get(f"{API}/providers/plaid/entities").json()["entities"]}
    assert all(e["readonly"] for e in entities.values())
    assert entities["transactions"]["id_field"] == "transaction_id"
    assert {"amount", "date", "merchant_name", "pending"} <= {f["name"] for f in entities["transactions"]["fields"]}
    assert {"balances", "mask", "subtype"} <= {f["name"] for f in entities["balances"]["fields"]}
    # A field picker shows what is inside an object: balances.available, .current...
    balances = next(f for f in entities["balances"]["fields"] if f["name"] == "balances")
    assert {(f["name"], f["type"]) for f in balances["fields"]} >= {("available", "number"), ("current", "number"),
                                                                   ("iso_currency_code", "string")}


def test_a_mapping_into_balances_names_a_field_plaid_has(client, auth, connection):
    configs = f"{API}/connections/{connection['id']}/sync-configs"
    mistyped = client.post(configs, json={"entity": "balances", "mappings": [
        {"source": "balances.avialable", "target": "available"}]}, headers=auth)
    assert mistyped.status_code == 422 and mistyped.json()["code"] == "unknown_field", mistyped.text
    assert "balances has no field 'avialable'" in mistyped.json()["error"]
    config = client.post(configs, json={"entity": "balances", "mappings": [
        {"source": "balances.available", "target": "available"}, {"source": "holder_category", "target": "holder"}]},
        headers=auth)
    assert config.status_code == 201, config.text


def test_link_flow_creates_a_connection_without_exposing_the_access_token(client, auth, fake):
    token = client.post(f"{API}/link/plaid/token", json={"user_id": "user-42", "options": {"webhook": WEBHOOK_URL}},
                        headers=auth).json()
    assert token["success"] is True and token["link_token"].startswith("link-sandbox-") and token["expiration"]
    sent = fake.link_tokens[token["link_token"]]
    assert sent["client_name"] == "Acme Books" and sent["user"] == {"client_user_id": "user-42"}
    assert sent["products"] == ["transactions"] and sent["country_codes"] == ["US"] and sent["webhook"] == WEBHOOK_URL

    public_token = fake.create_public_token("ins_109512", link_token=token["link_token"])
    response = client.post(f"{API}/link/plaid/exchange", headers=auth, json={
        "public_token": public_token, "link_token": token["link_token"],
        "metadata": {"institution": {"institution_id": "ins_109512", "name": "Houndstooth Bank"}}})
    assert response.status_code == 201, response.text
    connection = response.json()["connection"]
    item = fake.item()
    assert connection["status"] == "connected" and connection["category"] == "banking"
    assert connection["config"] == {"item_id": item.item_id, "environment": "sandbox",
                                    "institution_id": "ins_109512", "institution_name": "Houndstooth Bank"}
    assert item.access_token not in response.text
    assert connection["credentials_hint"].endswith(item.access_token[-4:])
    assert connection["credentials_hint"] != item.access_token

    tested = client.post(f"{API}/connections/{connection['id']}/test", headers=auth)
    assert tested.status_code == 200, tested.text
    assert tested.json()["connection"]["provider_account"] == item.item_id
    assert tested.json()["details"] == {"account": item.item_id, "item_id": item.item_id, "institution_id": "ins_109512",
                                        "institution_name": "Houndstooth Bank", "products": ["transactions"],
                                        "environment": "sandbox", "error": None}
    reused = client.post(f"{API}/link/plaid/exchange", json={"public_token": public_token,
                                                             "link_token": token["link_token"]}, headers=auth)
    # The tenant's to fix (run Link again), not the hub's Plaid keys.
    assert reused.status_code == 422 and reused.json()["code"] == "invalid_public_token"
    assert "INVALID_PUBLIC_TOKEN" in reused.json()["error"] and "Link again" in reused.json()["error"]


def test_an_exchange_whose_answer_was_lost_is_not_sent_again_and_says_run_link_again(client, auth, fake):
    """Plaid made the Item but a proxy's 502 lost its access token: a re-send
    would only meet INVALID_PUBLIC_TOKEN (a public token works once, and Plaid
    takes no idempotency key for it). The client is told to run Link again,
    and no connection is left without credentials."""
    token = client.post(f"{API}/link/plaid/token", json={"user_id": "user-1"}, headers=auth).json()["link_token"]
    public_token = fake.create_public_token("ins_109508", link_token=token)
    fake.lose_answers["/item/public_token/exchange"] = 1
    lost = client.post(f"{API}/link/plaid/exchange", json={"public_token": public_token, "link_token": token},
                       headers=auth)
    assert lost.status_code == 503, lost.text
    assert lost.json()["code"] == "exchange_outcome_unknown" and "run Link again" in lost.json()["error"]
    assert fake.calls["/item/public_token/exchange"] == 1 and fake.errors["INVALID_PUBLIC_TOKEN"] == 0
    assert len(fake.items) == 1  # (made at Plaid, its access token lost)
    assert client.get(f"{API}/connections", headers=auth).json()["connections"] == []

    connection = link(client, auth, fake)  # Link again: a new public token connects
    assert connection["status"] == "connected"
    assert [c["id"] for c in client.get(f"{API}/connections", headers=auth).json()["connections"]] == [connection["id"]]


def test_transactions_page_to_the_end_each_record_once(client, auth, fake, connection):
    pages = list_pages(client, auth, records_url(connection, "transactions"), limit=25)
    ids = [r["transaction_id"] for page in pages for r in page["records"]]
    assert len(pages) == 5
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == set(fake.item().transactions)
    assert pages[0]["records"][0]["amount"] == 3.5 and pages[0]["records"][0]["iso_currency_code"] == "USD"
    assert all(page["deleted_ids"] == [] for page in pages)
    assert fake.calls["/transactions/sync"] == 5


def test_mutation_error_mid_run_loses_and_repeats_nothing(client, auth, fake, connection):
    def inject(page):
        if page == 3:
            fake.inject_mutation_error()

    pages = list_pages(client, auth, records_url(connection, "transactions"), limit=25, before_page=inject)
    ids = [r["transaction_id"] for page in pages for r in page["records"]]
    assert len(ids) == len(set(ids)) == 120
    assert fake.errors["TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"] == 1
    # five pages, the failed request, and a replay of the two pages delivered before it
    assert fake.calls["/transactions/sync"] == 5 + 1 + 2


def test_transactions_added_during_a_run_arrive_once(client, auth, fake, connection):
    item = fake.item()
    late = []

    def mutate(page):
        if page == 3:
            late.extend(t["transaction_id"] for t in fake.add_transactions(item.item_id, 7))

    pages = list_pages(client, auth, records_url(connection, "transactions"), limit=25, before_page=mutate)
    ids = [r["transaction_id"] for page in pages for r in page["records"]]
    assert fake.errors["TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"] == 1
    assert len(ids) == len(set(ids)) == 127 and set(late) <= set(ids)


def test_a_delivered_record_changed_during_a_run_comes_again_current_and_nothing_is_lost(
        client, auth, fake, connection):
    item = fake.item()
    first_page_id = []

    def mutate(page):
        if page == 3:
            fake.modify_transaction(item.item_id, first_page_id[0], name="CORRECTED", amount=12.34)

    url = records_url(connection, "transactions")
    first = client.get(url, params={"limit": 25}, headers=auth).json()
    first_page_id.append(first["records"][0]["transaction_id"])
    pages = [first] + list_pages(client, auth, url, limit=25, cursor=first["next_cursor"],
                                 before_page=lambda n: mutate(n + 1))
    seen = {}
    for page in pages:
        for record in page["records"]:
            seen[record["transaction_id"]] = record
    assert set(seen) == set(item.transactions)
    # the pages already delivered changed, so the run started over: everything again, nothing lost
    assert fake.errors["TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION"] == 1
    assert [page["restarted"] for page in pages] == [False, False, True, False, False, False, False]
    assert sum(len(page["records"]) for page in pages) == 50 + 120
    assert seen[first_page_id[0]]["name"] == "CORRECTED" and seen[first_page_id[0]]["amount"] == 12.34


def test_removed_transactions_are_deleted_ids_and_the_watermark_resumes(client, auth, fake, connection):
    """An API client lists to the end, keeps the last page's ``watermark`` (Plaid's
    cursor, sealed to its entity like ``next_cursor``) and resumes from it later
    with ``?cursor=``: it gets what changed since, removals as ``deleted_ids``."""
    item = fake.item()
    url = records_url(connection, "transactions")
    first_run = list_pages(client, auth, url, limit=100)
    assert [len(p["records"]) for p in first_run] == [100, 20]
    watermark = first_run[-1]["watermark"]
    assert first_run[0]["watermark"] is None and watermark
    assert open_cursor(client.app.state.hub, connection["id"], watermark, "transactions") == fake.cursor_now(item.item_id)

    gone = list(item.transactions)[:2]
    for transaction_id in gone:
        fake.remove_transaction(item.item_id, transaction_id)
    changed = fake.modify_transaction(item.item_id, list(item.transactions)[5], pending=True)
    new = fake.add_transactions(item.item_id, 3)
    pages = list_pages(client, auth, url, limit=25, cursor=watermark)
    assert len(pages) == 1
    assert sorted(pages[0]["deleted_ids"]) == sorted(gone)
    assert {r["transaction_id"] for r in pages[0]["records"]} == {changed["transaction_id"]} | {
        t["transaction_id"] for t in new}
    assert pages[0]["watermark"] not in (None, watermark)
    # Bound to its entity, as next_cursor is; entities without a position give none.
    other = client.get(records_url(connection, "accounts"), params={"cursor": watermark}, headers=auth)
    assert other.status_code == 422 and other.json()["code"] == "invalid_cursor"
    assert client.get(records_url(connection, "accounts"), headers=auth).json()["watermark"] is None


def test_accounts_balances_and_institutions(client, auth, fake, connection):
    item = fake.item()
    accounts = client.get(records_url(connection, "accounts"), headers=auth).json()
    assert [a["name"] for a in accounts["records"]] == ["Plaid Checking", "Plaid Saving", "Plaid Credit Card"]
    assert accounts["next_cursor"] is None
    balances = client.get(records_url(connection, "balances"), headers=auth).json()["records"]
    assert [b["balances"]["current"] for b in balances] == [110, 210, 410]
    assert all(b["balances"]["last_updated_datetime"] for b in balances)

    account_id = item.accounts[2]["account_id"]
    one = client.get(f"{records_url(connection, 'accounts')}/{account_id}", headers=auth).json()["record"]
    assert one["subtype"] == "credit card" and one["balances"]["limit"] == 2000
    missing = client.get(f"{records_url(connection, 'accounts')}/nope", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"

    transaction_id = list(item.transactions)[-1]
    got = client.get(f"{records_url(connection, 'transactions')}/{transaction_id}", headers=auth).json()
    assert got["record"] == item.transactions[transaction_id]

    pages = list_pages(client, auth, records_url(connection, "institutions"), limit=15)
    ids = [i["institution_id"] for page in pages for i in page["records"]]
    us = [i for i, row in fake.institutions.items() if "US" in row["country_codes"]]
    assert len(pages) == 3 and ids == us
    gb = client.get(records_url(connection, "institutions"), params={"country_codes": "GB"}, headers=auth).json()
    assert [i["name"] for i in gb["records"]] == ["Royal Bank of Plaid", "Flexible Platypus Open Banking"]
    bank = client.get(f"{records_url(connection, 'institutions')}/ins_109509", headers=auth).json()["record"]
    assert bank["name"] == "First Gingham Credit Union"
    unknown = client.get(f"{records_url(connection, 'institutions')}/ins_0", headers=auth)
    assert unknown.status_code == 404 and "INVALID_INSTITUTION" in unknown.json()["error"]


def test_a_filter_plaid_does_not_take_is_refused_not_answered_unfiltered(client, auth, fake, connection):
    """?account_id= on transactions answered every transaction as if filtered (a review found it)."""
    account_id = fake.item().accounts[0]["account_id"]
    for entity in ("transactions", "accounts"):
        refused = client.get(records_url(connection, entity), params={"account_id": account_id}, headers=auth)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "unknown_filter" and "account_id" in refused.json()["error"]
    entity = client.get("/api/v1/integrations/providers/plaid/entities/institutions").json()["entity"]
    assert entity["filters"] == ["country_codes"]


@pytest.mark.parametrize("entity", ["accounts", "balances", "transactions", "institutions"])
def test_writes_are_refused_as_read_only(client, auth, connection, entity):
    url = records_url(connection, entity)
    responses = [client.post(url, json={"data": {"name": "x"}}, headers=auth),
                 client.put(f"{url}/some-id", json={"data": {"name": "x"}}, headers=auth),
                 client.delete(f"{url}/some-id", headers=auth)]
    assert [(r.status_code, r.json()["code"]) for r in responses] == [(405, "read_only")] * 3
    # Through its sync config too, saying it is the provider's, not a direction to change.
    config = client.post(f"{API}/connections/{connection['id']}/sync-configs", json={"entity": entity},
                         headers=auth).json()["sync_config"]
    stored_url = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/records"
    refused = client.post(stored_url, json={"data": {"name": "x"}}, headers=auth).json()
    assert refused["code"] == "read_only" and refused["error"] == (
        f"{entity} is read-only at the provider: records can only be pulled")


def test_actions(client, auth, fake, connection):
    base = f"{API}/connections/{connection['id']}/actions"
    listed = client.get(base, headers=auth).json()["actions"]
    assert {a["name"]: a["readonly"] for a in listed} == {
        "categories": True, "institution": True, "refresh_transactions": False}
    categories = client.post(f"{base}/categories", json={"params": {}}, headers=auth).json()["result"]["categories"]
    assert {"category_id": "10001000", "group": "special", "hierarchy": ["Bank Fees", "Overdraft"]} in categories
    institution = client.post(f"{base}/institution", json={"params": {"institution_id": "ins_109511"}}, headers=auth)
    assert institution.json()["result"]["institution"]["name"] == "Tartan Bank"
    missing = client.post(f"{base}/institution", json={"params": {}}, headers=auth)
    assert missing.status_code == 422 and missing.json()["code"] == "missing_fields"
    refreshed = client.post(f"{base}/refresh_transactions", json={"params": {}}, headers=auth).json()
    assert refreshed["result"] == {"refreshed": True} and fake.refreshes[fake.item().item_id] == 1



def test_there_is_no_action_that_removes_the_item_behind_a_connection_that_stays(client, auth, fake, connection):
    """remove_item revoked the Item but left its connection ``connected``, then ``error``
    inviting a repair no one can make, and its deletion reported the revocation refused.
    Deleting the connection is how an Item is removed (and reported revoked)."""
    removed = client.post(f"{API}/connections/{connection['id']}/actions/remove_item", json={"params": {}},
                          headers=auth)
    assert removed.status_code == 404 and removed.json()["code"] == "unknown_action", removed.text
    assert fake.removed_items == [] and fake.calls["/item/remove"] == 0
    status = client.get(f"{API}/connections/{connection['id']}", headers=auth).json()["connection"]
    assert status["status"] == "connected"
    assert client.delete(f"{API}/connections/{connection['id']}", headers=auth).json()["revocation"] == "revoked"
    assert fake.removed_items == [fake.item().item_id]


def test_deleting_the_connection_removes_the_item(client, auth, fake, connection):
    assert client.delete(f"{API}/connections/{connection['id']}", headers=auth).json() == {
        "success": True, "revocation": "revoked"}
    assert fake.calls["/item/remove"] == 1 and fake.removed_items == [fake.item().item_id]
    assert client.get(f"{API}/connections/{connection['id']}", headers=auth).status_code == 404


def test_item_login_required_marks_the_connection(client, auth, fake, connection):
    fake.break_item(fake.item().item_id)
    response = client.get(records_url(connection, "accounts"), headers=auth)
    assert response.status_code == 424 and response.json()["code"] == "provider_auth_failed"
    assert "ITEM_LOGIN_REQUIRED" in response.json()["error"]
    status = client.get(f"{API}/connections/{connection['id']}", headers=auth).json()["connection"]
    assert status["status"] == "error" and "ITEM_LOGIN_REQUIRED" in status["last_error"]
    tested = client.post(f"{API}/connections/{connection['id']}/test", headers=auth)
    assert tested.status_code == 424


@pytest.mark.parametrize("code", ["ITEM_LOCKED", "INVALID_CREDENTIALS", "USER_SETUP_REQUIRED",
                                  "INSUFFICIENT_CREDENTIALS", "INVALID_MFA", "NO_ACCOUNTS"])
def test_item_errors_only_the_user_can_fix_mark_the_connection_like_a_login_required(client, auth, fake,
                                                                                     connection, code):
    """Not ITEM_LOGIN_REQUIRED alone: every Item error that needs the user in Link's
    update mode is a refused connection (424, status error), from the test and from
    data calls alike (they were a 200 test and 422 validation errors)."""
    item = fake.item().item_id
    fake.break_item(item, code)
    path = f"{API}/connections/{connection['id']}"
    tested = client.post(f"{path}/test", headers=auth)
    assert tested.status_code == 424 and tested.json()["code"] == "provider_auth_failed", tested.text
    status = client.get(path, headers=auth).json()["connection"]
    assert status["status"] == "error" and code in status["last_error"] and "update mode" in status["last_error"]
    fake.mend_item(item)
    assert client.post(f"{path}/test", headers=auth).status_code == 200
    assert client.get(path, headers=auth).json()["connection"]["status"] == "connected"
    fake.break_item(item, code)
    for entity in ("accounts", "transactions"):
        response = client.get(records_url(connection, entity), headers=auth)
        assert response.status_code == 424 and response.json()["code"] == "provider_auth_failed", response.text
    assert client.get(path, headers=auth).json()["connection"]["status"] == "error"


def test_an_item_whose_first_data_is_not_ready_is_not_a_refused_connection():
    """PRODUCT_NOT_READY is an ITEM_ERROR too, but passes by itself: the error type alone decides nothing."""
    import httpx

    from hub_plaid import describe_error

    body = {"error_type": "ITEM_ERROR", "error_code": "PRODUCT_NOT_READY", "request_id": "r",
            "error_message": "the requested product is not yet ready. please provide a webhook or try the request "
                             "again later"}
    assert type(describe_error(httpx.Response(400, json=body))) is ProviderUnavailable


def test_testing_a_connection_while_its_bank_is_down_is_a_passing_unavailability(client, auth, fake, connection):
    fake.break_item(fake.item().item_id, "INSTITUTION_NOT_RESPONDING")
    tested = client.post(f"{API}/connections/{connection['id']}/test", headers=auth)
    assert tested.status_code == 503 and tested.json()["code"] == "provider_unavailable", tested.text
    assert "INSTITUTION_NOT_RESPONDING" in tested.json()["error"]
    # The connection is no worse for its bank's outage: it stays connected (it was marked error,
    # and stayed so once the bank was back).
    after = client.get(f"{API}/connections/{connection['id']}", headers=auth).json()["connection"]
    assert (after["status"], after["last_error"]) == ("connected", None)


def test_a_connection_whose_login_is_required_is_repaired_through_links_update_mode(client, auth, fake, connection):
    """Before, the only way back was a second connection (a new item), its sync state lost."""
    item = fake.item().item_id
    fake.break_item(item)
    assert client.post(f"{API}/connections/{connection['id']}/test", headers=auth).status_code == 424
    token = client.post(f"{API}/link/plaid/token", json={"connection_id": connection["id"]}, headers=auth)
    assert token.status_code == 200, token.text
    link_token = token.json()["link_token"]
    sent = fake.link_tokens[link_token]
    assert sent["access_token"] == fake.item(item).access_token and "products" not in sent
    public_token = fake.create_public_token(link_token=link_token)  # the user logs in again
    repaired = client.post(f"{API}/link/plaid/exchange", json={"public_token": public_token,
                                                               "link_token": link_token}, headers=auth)
    assert repaired.status_code == 200, repaired.text
    assert repaired.json()["connection"]["id"] == connection["id"]
    assert repaired.json()["connection"]["status"] == "connected" and repaired.json()["connection"]["last_error"] is None
    assert [c["id"] for c in client.get(f"{API}/connections", headers=auth).json()["connections"]] == [connection["id"]]
    assert list(fake.items) == [item] and fake.calls["/item/public_token/exchange"] == 1  # the first Link's only
    assert client.get(records_url(connection, "accounts"), headers=auth).status_code == 200
    # Only a Plaid connection of this organization can be repaired so.
    assert client.post(f"{API}/link/plaid/token", json={"connection_id": "nope"}, headers=auth).json()["code"] == \
        "connection_not_found"


def test_a_bank_that_is_down_is_a_passing_unavailability_not_a_refused_item(client, auth, fake, connection):
    fake.break_item(fake.item().item_id, "INSTITUTION_DOWN")
    response = client.get(records_url(connection, "accounts"), headers=auth)
    assert response.status_code == 503 and response.json()["code"] == "provider_unavailable"
    assert "INSTITUTION_DOWN" in response.json()["error"] and "try again later" in response.json()["error"]
    status = client.get(f"{API}/connections/{connection['id']}", headers=auth).json()["connection"]
    assert status["status"] == "connected"
    fake.mend_item(fake.item().item_id)
    assert client.get(records_url(connection, "accounts"), headers=auth).status_code == 200


@pytest.mark.parametrize("secret", ["not-the-secret", None])
def test_bad_or_missing_client_secret_is_a_clear_configuration_error(tmp_path, plaid_env, fake, monkeypatch, secret):
    if secret:
        monkeypatch.setenv("HUB_PLAID_SECRET", secret)
    else:
        monkeypatch.delenv("HUB_PLAID_SECRET")
    app = build_hub_app(tmp_path)
    with TestClient(app) as client:
        with app.state.hub.session() as session:
            key = create_organization(session, "acme")[1]
        response = client.post(f"{API}/link/plaid/token", json={"user_id": "u"},
                               headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400 and response.json()["code"] == "configuration_error"
    assert "HUB_PLAID_SECRET" in response.json()["error"]
    assert ("INVALID_API_KEYS" in response.json()["error"]) == bool(secret)
    assert fake.errors["INVALID_API_KEYS"] == (1 if secret else 0)
    assert fake.calls["/link/token/create"] == (1 if secret else 0)


def test_a_request_plaid_would_reject_fails(client, auth, fake):
    response = client.post(f"{API}/link/plaid/token", json={"user_id": "u", "options": {"products": ["loans"]}},
                           headers=auth)
    assert response.status_code == 422 and "INVALID_FIELD" in response.json()["error"]
    [(path, problem)] = fake.invalid_requests
    assert path == "/link/token/create" and problem.startswith("products.0: 'loans' is not one of")
    assert fake.link_tokens == {}


def test_rate_limit_429_is_retried_then_exhausted(client, auth, fake, connection):
    fake.throttle("/accounts/get", times=2)
    assert client.get(records_url(connection, "accounts"), headers=auth).status_code == 200
    assert fake.errors["ACCOUNTS_LIMIT"] == 2 and fake.calls["/accounts/get"] == 3

    fake.throttle("/accounts/get", times=3)
    limited = client.get(records_url(connection, "accounts"), headers=auth)
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert "ACCOUNTS_LIMIT" in limited.json()["error"] and fake.calls["/accounts/get"] == 6


def test_environment_selects_the_base_url():
    def url(config, settings):
        ctx = ProviderContext(provider=INFO, config=config, credentials={}, settings=settings, http=None)
        return ctx.url(path="/item/get", environment=_environment(ctx))

    assert url({}, {}) == "https://sandbox.plaid.com/item/get"
    assert url({}, {"environment": "development"}) == "https://development.plaid.com/item/get"
    assert url({"environment": "production"}, {"environment": "development"}) == "https://production.plaid.com/item/get"
    with pytest.raises(ConfigurationError, match="one of sandbox, development, production"):
        url({"environment": "staging"}, {})
    ctx = ProviderContext(provider=INFO, config={}, credentials={}, settings={"client_id": "c", "secret": "s"},
                          http=None)
    assert request_auth(ctx=ctx).headers == {"PLAID-CLIENT-ID": "c", "PLAID-SECRET": "s",
                                             "Plaid-Version": "2020-09-14"}


def test_link_token_options_reach_plaid(client, auth, fake):
    connection = link(client, auth, fake, "ins_109510", products=["transactions", "auth"], language="fr",
                      country_codes="us, ca", redirect_uri="https://app.example.com/oauth")
    [sent] = fake.link_tokens.values()
    assert sent["products"] == ["transactions", "auth"] and sent["language"] == "fr"
    assert sent["country_codes"] == ["US", "CA"] and sent["redirect_uri"] == "https://app.example.com/oauth"
    assert connection["config"]["institution_id"] == "ins_109510"


def test_plaid_per_item_endpoint_limits_are_paced_by_the_core(tmp_path, monkeypatch):
    import asyncio

    monkeypatch.delenv("HUB_PLAID_ENDPOINT_RATE_LIMITS", raising=False)
    hub = build_hub_app(tmp_path).state.hub
    provider = hub.provider("plaid")
    connection = Connection(id="c1", organization_id="o", provider="plaid", category="banking", name="p",
                            config={"environment": "sandbox"})
    http = hub.context(provider, connection).http
    bursts = {suffix: round(limiter.capacity) for suffix, limiter in http.endpoint_limiters.items()}
    assert bursts == {"/accounts/balance/get": 5, "/accounts/get": 15, "/transactions/sync": 50}
    assert http._endpoint_limiter("https://sandbox.plaid.com/accounts/balance/get") is \
        http.endpoint_limiters["/accounts/balance/get"]
    assert http._endpoint_limiter("https://sandbox.plaid.com/item/get") is None
    # Per client: one count for every Item.
    other = hub.context(provider, Connection(id="c2", organization_id="o2", provider="plaid", category="banking",
                                             name="p", config={"environment": "sandbox"})).http
    per_client = {limit.endpoint: (limit.burst, limiter) for limit, limiter in http.limits}
    assert {endpoint: calls for endpoint, (calls, _) in per_client.items()}["/accounts/balance/get"] == 1_200
    assert [limiter for _, limiter in other.limits] == [limiter for _, (_, limiter) in per_client.items()]
    asyncio.run(hub.close())


@pytest.mark.parametrize(("entity", "position"), [
    ("transactions", "hub1." + base64.urlsafe_b64encode(json.dumps(
        {"start": None, "at": None, "count": 5, "pages": "a", "digest": ""}).encode()).decode()),
    ("transactions", "hub1." + base64.urlsafe_b64encode(json.dumps(
        {"start": 7, "at": None, "count": 5, "pages": 0, "digest": ""}).encode()).decode()),
    ("institutions", "²"),
])
def test_a_tampered_position_is_an_invalid_cursor_not_a_crash(client, auth, connection, entity, position):
    sealed = seal_cursor(client.app.state.hub, connection["id"], position, entity)
    response = client.get(records_url(connection, entity), params={"cursor": sealed}, headers=auth)
    assert response.status_code == 422 and response.json()["code"] == "invalid_cursor", response.text


def test_malformed_link_metadata_or_config_loses_no_item(client, auth, fake):
    """A config that is not an object is refused before anything reaches Plaid;
    a malformed institution in Link's metadata is left out, not a failure after
    the (single-use) public token was exchanged."""
    link_token = client.post(f"{API}/link/plaid/token", json={}, headers=auth).json()["link_token"]
    for path, body, why in (("token", {"options": {"config": "abc"}}, "config must be an object"),
                            ("exchange", {"public_token": "x", "link_token": link_token,
                                          "metadata": {"config": [1]}}, "config must be"),
                            ("token", {"options": {"country_codes": 5}}, "country_codes must be")):
        refused = client.post(f"{API}/link/plaid/{path}", json=body, headers=auth)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_value", refused.text
        assert why in refused.json()["error"]
    public_token = fake.create_public_token("ins_109512", link_token=link_token)
    response = client.post(f"{API}/link/plaid/exchange", headers=auth, json={
        "public_token": public_token, "link_token": link_token, "metadata": {"institution": "Houndstooth Bank"}})
    assert response.status_code == 201, response.text
    assert response.json()["connection"]["config"] == {"item_id": fake.item().item_id, "environment": "sandbox"}


def test_a_public_token_connects_only_the_organization_whose_link_token_made_it(client, auth, fake, hub_app):
    """Plaid's client secret is the hub's, shared by every tenant: another
    organization exchanging a leaked public token (with its own link token, or
    with the victim's) gets nothing, and the victim's exchange still works."""
    from tests.conftest import make_org

    victim_token = client.post(f"{API}/link/plaid/token", json={"user_id": "u"}, headers=auth).json()["link_token"]
    public_token = fake.create_public_token("ins_109512", link_token=victim_token)
    mallory = make_org(hub_app, "mallory")
    mallory.pop("org_id")
    own_token = client.post(f"{API}/link/plaid/token", json={"user_id": "m"}, headers=mallory).json()["link_token"]
    for link_token, code in ((own_token, "invalid_public_token"), (victim_token, "invalid_link_token"),
                             ("link-sandbox-made-up", "invalid_link_token")):
        refused = client.post(f"{API}/link/plaid/exchange", headers=mallory,
                              json={"public_token": public_token, "link_token": link_token})
        assert refused.status_code == 422 and refused.json()["code"] == code, refused.text
    assert fake.items == {}  # nothing was exchanged
    missing = client.post(f"{API}/link/plaid/exchange", headers=auth, json={"public_token": public_token})
    assert missing.status_code == 422 and "link_token" in missing.json()["error"]
    made = client.post(f"{API}/link/plaid/exchange", headers=auth,
                       json={"public_token": public_token, "link_token": victim_token})
    assert made.status_code == 201, made.text


def test_an_item_plaid_could_not_remove_when_its_connection_was_deleted_is_removed_later(client, auth, fake,
                                                                                          connection, hub_app):
    """Plaid refusing for a moment (429s) used to leave the item live, and billed,
    with no record of it here: the grant is kept (encrypted) and removed by the
    scheduler's next tries."""
    import asyncio
    from datetime import timedelta

    from sqlmodel import select

    from hub.http import RetryPolicy
    from hub.models import PendingRevocation, utcnow
    from hub.runtime import Hub
    from hub.services.connections import retry_revocations

    hub = hub_app.state.hub
    hub.pool.retry = RetryPolicy(attempts=2, base_delay=0.01)
    item = fake.item()
    fake.throttled["/item/remove"] = 10
    assert client.delete(f"{API}/connections/{connection['id']}", headers=auth).json() == {
        "success": True, "revocation": "pending"}
    assert client.get(f"{API}/connections/{connection['id']}", headers=auth).status_code == 404
    assert fake.removed_items == []
    with hub.session() as session:
        [pending] = session.exec(select(PendingRevocation)).all()
    assert (pending.connection_id, pending.attempts) == (connection["id"], 1)
    assert item.access_token not in pending.credentials_encrypted

    def retry(at):
        later = Hub(hub.settings, hub.registry)
        later.pool.retry = RetryPolicy(attempts=2, base_delay=0.01)

        async def go():
            try:
                return await retry_revocations(later, now=at)
            finally:
                await later.close()
        return asyncio.run(go())

    assert retry(utcnow()) == 0  # not due yet: nothing tried
    assert retry(utcnow() + timedelta(hours=1)) == 0  # still refused: tried, and later again
    with hub.session() as session:
        [pending] = session.exec(select(PendingRevocation)).all()
    assert pending.attempts == 2 and "RATE_LIMIT" in pending.last_error
    fake.throttled["/item/remove"] = 0
    calls = fake.calls["/item/remove"]

    async def two_schedulers_at_once():
        hubs = [Hub(hub.settings, hub.registry) for _ in range(2)]
        try:
            return await asyncio.gather(*(retry_revocations(h, now=utcnow() + timedelta(days=1)) for h in hubs))
        finally:
            for h in hubs:
                await h.close()

    assert sorted(asyncio.run(two_schedulers_at_once())) == [0, 1]  # claimed once
    assert fake.calls["/item/remove"] == calls + 1 and fake.removed_items == [item.item_id]
    with hub.session() as session:
        assert session.exec(select(PendingRevocation)).all() == []


def test_a_connection_deleted_while_its_plugin_is_not_loaded_is_revoked_once_it_is(client, auth, fake, connection,
                                                                                   hub_app):
    """Deleted with the plugin not loaded, the item stayed active at Plaid
    and nothing was kept to revoke it."""
    import asyncio
    from datetime import timedelta

    from sqlmodel import select

    from hub.models import PendingRevocation, utcnow
    from hub.plugins import PluginRegistry
    from hub.runtime import Hub
    from hub.services.connections import delete_connection, retry_revocations

    hub = hub_app.state.hub
    item = fake.item()
    with hub.session() as session:
        organization_id = session.get(Connection, connection["id"]).organization_id

    async def with_hub(registry, work):
        other = Hub(hub.settings, registry)
        try:
            return await work(other)
        finally:
            await other.close()

    asyncio.run(with_hub(PluginRegistry(), lambda h: delete_connection(h, organization_id, connection["id"])))
    assert client.get(f"{API}/connections/{connection['id']}", headers=auth).status_code == 404
    assert fake.removed_items == []
    with hub.session() as session:
        [pending] = session.exec(select(PendingRevocation)).all()
    assert pending.connection_id == connection["id"] and "not loaded" in pending.last_error
    assert item.access_token not in pending.credentials_encrypted
    later = utcnow() + timedelta(days=1)
    assert asyncio.run(with_hub(PluginRegistry(), lambda h: retry_revocations(h, now=later))) == 0  # still absent
    assert asyncio.run(with_hub(hub.registry, lambda h: retry_revocations(h, now=later + timedelta(days=1)))) == 1
    assert fake.removed_items == [item.item_id]
