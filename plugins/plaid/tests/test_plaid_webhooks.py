"""Plaid webhooks through the hub: ES256 JWT verification, routing by item_id,
dedup of re-deliveries (not of later notifications with the same body), and the
syncs they trigger."""

from __future__ import annotations

import hashlib
import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from plaid_helpers import API, WEBHOOK_URL, link, records_url
from sqlmodel import select

from hub.models import Connection, SyncRecord, WebhookEvent
from hub.services.orgs import create_organization
from hub.sync.engine import SyncEngine, create_run
from hub.types import CONNECTION_WARNING

URL = f"{API}/webhooks/plaid"


def stored_events(hub_app):
    with hub_app.state.hub.session() as session:
        return list(session.exec(select(WebhookEvent).order_by(WebhookEvent.received_at)))


def test_signed_delivery_is_routed_by_item_id_stored_once_and_replays_are_duplicates(
        client, fake, connection, hub_app):
    item = fake.item()
    first = fake.fire(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", client=client)
    assert first.status_code == 200, first.text
    assert first.json() == {"success": True, "received": 1, "duplicates": 0, "duplicate": False}
    assert item.webhook == WEBHOOK_URL

    # The next notification has the very same body, signed anew: not a duplicate.
    payload = fake.webhook(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")
    body, headers = fake.signed_delivery(payload, iat=int(time.time()) - 60)
    later = client.post(URL, content=body, headers=headers).json()
    assert later == {"success": True, "received": 1, "duplicates": 0, "duplicate": False}
    # Delivering that same signed request again is.
    replay = client.post(URL, content=body, headers=headers).json()
    assert replay == {"success": True, "received": 0, "duplicates": 1, "duplicate": True}
    again = client.post(URL, content=body, headers=headers).json()
    assert again["duplicate"] is True

    events = stored_events(hub_app)
    assert len(events) == 2 and len({e.dedup_key for e in events}) == 2
    for event in events:
        assert (event.connection_id, event.type, event.entity, event.action) == (
            connection["id"], "transaction.changed", "transactions", "changed")
        assert event.record_id is None and event.payload is None
        assert event.raw == payload  # the provider's own payload is kept with the event
    assert fake.key_fetches[fake.current_kid] == 1


def test_every_sync_updates_available_pulls_what_is_new(client, fake, connection, hub_app):
    """Each SYNC_UPDATES_AVAILABLE of an Item has the same body; the second one
    must still pull the transactions added since the first."""
    item = fake.item()
    payload = fake.webhook(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")

    def store_matches_fake() -> bool:
        with hub_app.state.hub.session() as session:
            rows = session.exec(select(SyncRecord).where(SyncRecord.connection_id == connection["id"],
                                                         SyncRecord.entity == "transactions",
                                                         SyncRecord.deleted == False)).all()  # noqa: E712
        stored = {row.remote_id: row.data for row in rows}
        return stored.keys() == item.transactions.keys() and all(
            stored[tid].get(k) == v for tid, tx in item.transactions.items() for k, v in tx.items())

    body, headers = fake.signed_delivery(payload, iat=int(time.time()) - 120)
    assert client.post(URL, content=body, headers=headers).json()["received"] == 1
    wait_until(store_matches_fake, "the first notification's sync")

    fake.add_transactions(item.item_id, 5)
    changed, removed = list(item.transactions)[:2]
    fake.modify_transaction(item.item_id, changed, amount=99.99)
    fake.remove_transaction(item.item_id, removed)
    body, headers = fake.signed_delivery(payload)
    assert client.post(URL, content=body, headers=headers).json() == {
        "success": True, "received": 1, "duplicates": 0, "duplicate": False}
    wait_until(store_matches_fake, "the second notification's sync")
    assert len(item.transactions) == 124


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not finish in {timeout}s"
        time.sleep(0.05)


def test_webhook_codes_map_to_events(client, fake, connection, hub_app):
    item = fake.item()
    removed = list(item.transactions)[:2]
    deliveries = [("TRANSACTIONS", "DEFAULT_UPDATE", {"new_transactions": 3}),
                  ("TRANSACTIONS", "TRANSACTIONS_REMOVED", {"removed_transactions": removed}),
                  ("ITEM", "PENDING_EXPIRATION", {"consent_expiration_time": "2026-12-01T00:00:00Z"}),
                  ("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED", {"new_webhook_url": WEBHOOK_URL, "error": None})]
    for kind, code, fields in deliveries:
        response = fake.fire(item.item_id, kind, code, client=client, **fields)
        assert response.status_code == 200, response.text
    fake.break_item(item.item_id)
    assert fake.fire(item.item_id, "ITEM", "ERROR", client=client).json()["received"] == 1
    events = [(e.type, e.entity, e.action, e.record_id) for e in stored_events(hub_app)]
    assert sorted(events, key=str) == sorted([
        ("transaction.changed", "transactions", "changed", None),
        ("transaction.deleted", "transactions", "deleted", removed[0]),
        ("transaction.deleted", "transactions", "deleted", removed[1]),
        ("item.pending_expiration", None, CONNECTION_WARNING, None),
        ("item.webhook_update_acknowledged", None, "changed", None),
        ("item.error", None, "connection_error", None),
    ], key=str)


def test_item_webhooks_set_the_connection_status(client, auth, fake, connection, hub_app):
    """ITEM: ERROR and USER_PERMISSION_REVOKED mark the connection ``error`` with
    Plaid's reason at once (not at the next sync); LOGIN_REPAIRED makes it
    ``connected`` again."""
    item = fake.item()
    path = f"{API}/connections/{connection['id']}"
    # The app is told of each change of status (at an address that does not answer: what was sent is kept).
    endpoint = client.post(f"{API}/event-endpoints", json={"url": "http://127.0.0.1:9/hub-events",
                                                           "events": ["connection.status_changed"]},
                           headers=auth).json()["endpoint"]

    def connection_now():
        return client.get(path, headers=auth).json()["connection"]

    def events_of(code):
        return [e for e in stored_events(hub_app) if e.type == f"item.{code.lower()}"]

    fake.break_item(item.item_id)
    assert fake.fire(item.item_id, "ITEM", "ERROR", client=client).json()["received"] == 1
    wait_until(lambda: connection_now()["status"] == "error", "the ERROR webhook's processing")
    assert connection_now()["last_error"].startswith("Plaid ITEM_LOGIN_REQUIRED: the login details of this item")
    assert "update mode" in connection_now()["last_error"]
    assert [e.status for e in events_of("ERROR")] == ["processed"]

    fake.mend_item(item.item_id)
    assert fake.fire(item.item_id, "ITEM", "LOGIN_REPAIRED", client=client).json()["received"] == 1
    wait_until(lambda: connection_now()["status"] == "connected", "the LOGIN_REPAIRED webhook's processing")
    assert connection_now()["last_error"] is None

    # A repair of a connection that is not in error changes nothing.
    assert fake.fire(item.item_id, "ITEM", "LOGIN_REPAIRED", client=client).json()["received"] == 1
    wait_until(lambda: all(e.status != "pending" for e in events_of("LOGIN_REPAIRED")), "the second repair")
    assert [e.status for e in events_of("LOGIN_REPAIRED")] == ["processed", "ignored"]

    revoked = fake.webhook(item.item_id, "ITEM", "USER_PERMISSION_REVOKED", error={
        "error_type": "ITEM_ERROR", "error_code": "USER_PERMISSION_REVOKED", "display_message": None,
        "error_message": "the holder of this account has revoked their permission for your application to access it",
        "status": 400})
    assert fake.send_webhook(URL, revoked, client=client).json()["received"] == 1
    wait_until(lambda: connection_now()["status"] == "error", "the USER_PERMISSION_REVOKED webhook's processing")
    assert connection_now()["last_error"].startswith("Plaid USER_PERMISSION_REVOKED: the holder of this account")
    told = client.get(f"{API}/event-endpoints/{endpoint['id']}/deliveries", headers=auth).json()["deliveries"]
    assert [(d["payload"]["data"]["previous_status"], d["payload"]["data"]["status"]) for d in reversed(told)] == [
        ("connected", "error"), ("error", "connected"), ("connected", "error")]
    assert told[-1]["payload"]["data"]["last_error"].startswith("Plaid ITEM_LOGIN_REQUIRED")


def test_an_older_error_delivered_after_the_repair_does_not_break_the_connection_again(
        client, auth, fake, connection, hub_app):
    """Plaid says the Item broke (t-60) and was repaired (t-10); the two
    deliveries cross and the error comes last. The connection works, as the
    newer news says: the older is ``ignored`` (it was applied in arrival
    order and put the connection in ``error`` again)."""
    item = fake.item()
    path = f"{API}/connections/{connection['id']}"
    now = int(time.time())

    def connection_now():
        return client.get(path, headers=auth).json()["connection"]

    fake.break_item(item.item_id)
    body, headers = fake.signed_delivery(fake.webhook(item.item_id, "ITEM", "ERROR"), iat=now - 120)
    assert client.post(URL, content=body, headers=headers).json()["received"] == 1
    wait_until(lambda: connection_now()["status"] == "error", "the first error")

    fake.mend_item(item.item_id)
    body, headers = fake.signed_delivery(fake.webhook(item.item_id, "ITEM", "LOGIN_REPAIRED"), iat=now - 10)
    assert client.post(URL, content=body, headers=headers).json()["received"] == 1
    wait_until(lambda: connection_now()["status"] == "connected", "the repair")
    late = fake.webhook(item.item_id, "ITEM", "ERROR", error={
        "error_type": "ITEM_ERROR", "error_code": "ITEM_LOGIN_REQUIRED", "error_message": "login required",
        "display_message": None, "status": 400})
    body, headers = fake.signed_delivery(late, iat=now - 60)
    assert client.post(URL, content=body, headers=headers).json()["received"] == 1
    wait_until(lambda: all(e.status != "pending" for e in stored_events(hub_app)), "the late error looked at")
    assert [e.status for e in stored_events(hub_app) if e.type == "item.error"] == ["processed", "ignored"]
    assert (connection_now()["status"], connection_now()["last_error"]) == ("connected", None)


def test_consent_about_to_expire_is_a_warning_on_the_connection_until_the_user_renews_it(
        client, auth, fake, connection, hub_app):
    """PENDING_EXPIRATION (and PENDING_DISCONNECT) were stored ``ignored``: now the
    connection shows the ``warning``, with its time, and stays ``connected``; a
    passing test or run keeps it, Link's update mode ends it."""
    item = fake.item()
    path = f"{API}/connections/{connection['id']}"

    def connection_now():
        return client.get(path, headers=auth).json()["connection"]

    expiring = fake.fire(item.item_id, "ITEM", "PENDING_EXPIRATION", client=client,
                         consent_expiration_time="2030-01-01T00:00:00Z")
    assert expiring.json()["received"] == 1
    wait_until(lambda: connection_now()["warning"] is not None, "the PENDING_EXPIRATION webhook's processing")
    warned = connection_now()
    assert (warned["status"], warned["last_error"]) == ("connected", None)
    assert warned["warning"].startswith("Plaid PENDING_EXPIRATION: the user's consent to access this Item "
                                        "expires at 2030-01-01T00:00:00Z") and "update mode" in warned["warning"]
    assert [e.status for e in stored_events(hub_app) if e.type == "item.pending_expiration"] == ["processed"]
    # The Item still works: a test passes and leaves the warning.
    tested = client.post(f"{path}/test", headers=auth)
    assert tested.status_code == 200 and tested.json()["connection"]["warning"] == warned["warning"]
    assert client.get(records_url(connection, "accounts"), headers=auth).status_code == 200

    # The user renews their consent through Link's update mode: the warning ends.
    token = client.post(f"{API}/link/plaid/token", json={"connection_id": connection["id"]}, headers=auth)
    link_token = token.json()["link_token"]
    renewed = client.post(f"{API}/link/plaid/exchange", headers=auth, json={
        "public_token": fake.create_public_token(link_token=link_token), "link_token": link_token})
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["connection"]["status"] == "connected" and renewed.json()["connection"]["warning"] is None

    disconnecting = fake.fire(item.item_id, "ITEM", "PENDING_DISCONNECT", client=client,
                              reason="INSTITUTION_MIGRATION", disconnect_time="2030-02-01T00:00:00Z")
    assert disconnecting.json()["received"] == 1
    wait_until(lambda: connection_now()["warning"] is not None, "the PENDING_DISCONNECT webhook's processing")
    assert connection_now()["status"] == "connected"
    assert "2030-02-01T00:00:00Z (INSTITUTION_MIGRATION)" in connection_now()["warning"]

    # A connection that stopped working keeps its error beside a warning; the repair ends both.
    fake.break_item(item.item_id)
    assert fake.fire(item.item_id, "ITEM", "ERROR", client=client).json()["received"] == 1
    wait_until(lambda: connection_now()["status"] == "error", "the ERROR webhook's processing")
    assert "ITEM_LOGIN_REQUIRED" in connection_now()["last_error"] and connection_now()["warning"] is not None
    fake.mend_item(item.item_id)
    assert fake.fire(item.item_id, "ITEM", "LOGIN_REPAIRED", client=client).json()["received"] == 1
    wait_until(lambda: connection_now()["status"] == "connected", "the LOGIN_REPAIRED webhook's processing")
    assert (connection_now()["last_error"], connection_now()["warning"]) == (None, None)


def test_an_item_error_webhook_is_not_undone_by_a_later_run_that_needs_no_item(client, auth, fake, connection,
                                                                                hub_app):
    """A run that succeeds (institutions need no Item) tests a connection in error
    before making it connected again: an Item the user must fix (ITEM_LOCKED) fails
    that test, so the webhook's error stands."""
    item = fake.item()
    path = f"{API}/connections/{connection['id']}"
    fake.break_item(item.item_id, "ITEM_LOCKED")
    assert fake.fire(item.item_id, "ITEM", "ERROR", client=client).json()["received"] == 1
    wait_until(lambda: client.get(path, headers=auth).json()["connection"]["status"] == "error",
               "the ERROR webhook's processing")
    hub = hub_app.state.hub
    with hub.session() as session:
        stored = session.get(Connection, connection["id"])
    run, _ = create_run(hub, stored, entity="institutions", direction="pull")
    assert client.portal.call(SyncEngine(hub, page_size=50).execute, run.id).status == "succeeded"
    now = client.get(path, headers=auth).json()["connection"]
    assert now["status"] == "error" and "ITEM_LOCKED" in now["last_error"], now


def test_forged_stale_and_malformed_deliveries_are_rejected(client, fake, connection, caplog):
    item = fake.item()
    payload = fake.webhook(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")
    body, headers = fake.signed_delivery(payload)

    def post(content=body, **changed):
        response = client.post(URL, content=content, headers={**headers, **changed})
        return response.status_code, response.json()["code"]

    tampered = body.replace(b'"initial_update_complete": true', b'"initial_update_complete": false')
    assert tampered != body
    assert post(tampered) == (401, "webhook_rejected")
    stale_body, stale_headers = fake.signed_delivery(payload, iat=int(time.time()) - 301)
    assert client.post(URL, content=stale_body, headers=stale_headers).json()["code"] == "webhook_stale"
    # Stale and tampered: the body is checked before the age (webhook_stale would say the connection exists).
    stale_tampered = client.post(URL, content=stale_body + b" ", headers=stale_headers)
    assert (stale_tampered.status_code, stale_tampered.json()["code"]) == (401, "webhook_rejected")
    # An old genuine delivery of another item, sent to this connection: refused as any other.
    elsewhere, elsewhere_headers = fake.signed_delivery(fake.webhook("item-of-another-hub", "TRANSACTIONS",
                                                                     "SYNC_UPDATES_AVAILABLE"),
                                                        iat=int(time.time()) - 301)
    misrouted = client.post(f"{URL}?connection_id={connection['id']}", content=elsewhere, headers=elsewhere_headers)
    assert (misrouted.status_code, misrouted.json()["code"]) == (401, "webhook_rejected"), misrouted.text
    assert client.post(URL, content=body, headers={"Content-Type": "application/json"}).status_code == 401
    assert post(**{"Plaid-Verification": "not-a-jwt"}) == (401, "webhook_rejected")
    hs256 = jwt.encode({"iat": int(time.time())}, "x" * 32, algorithm="HS256", headers={"kid": fake.current_kid})
    assert post(**{"Plaid-Verification": hs256}) == (401, "webhook_rejected")
    attacker = ec.generate_private_key(ec.SECP256R1())
    claims = {"iat": int(time.time()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
    forged_jwt = jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": fake.current_kid})
    assert post(**{"Plaid-Verification": forged_jwt}) == (401, "webhook_rejected")
    assert post(b"{not json") == (401, "webhook_rejected")
    # Signed, but not what Plaid sends: a type or code that is no text, removed ids that are not a list of ids.
    for odd in ({"webhook_type": ["TRANSACTIONS"]}, {"webhook_code": {"x": 1}},
                {"webhook_code": "TRANSACTIONS_REMOVED", "removed_transactions": "abc"},
                {"webhook_code": "TRANSACTIONS_REMOVED", "removed_transactions": [{"id": 1}]}):
        odd_body, odd_headers = fake.signed_delivery({**payload, **odd})
        odd_answer = client.post(URL, content=odd_body, headers=odd_headers)
        assert (odd_answer.status_code, odd_answer.json()["code"]) == (401, "webhook_rejected"), (odd, odd_answer.text)

    other_key = fake.rotate_key()
    forged_body, forged_headers = fake.signed_delivery(payload)
    fake.keys.pop(other_key)
    unknown = client.post(URL, content=forged_body, headers=forged_headers)
    assert unknown.status_code == 401 and "unknown verification key" in caplog.text
    assert fake.errors["INVALID_WEBHOOK_VERIFICATION_KEY_ID"] == 1


def test_a_delivery_signed_a_little_ahead_of_the_hubs_clock_is_taken(client, fake, connection, caplog):
    """Plaid's clock may be a second or two ahead: its iat is allowed 60 s in the
    future; beyond that the refusal says so (not "signature does not verify")."""
    item = fake.item()
    payload = fake.webhook(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")
    for skew in (1, 2, 55):
        body, headers = fake.signed_delivery(payload, iat=int(time.time()) + skew)
        response = client.post(URL, content=body, headers=headers)
        assert response.status_code == 200 and response.json()["received"] == 1, (skew, response.text)
    body, headers = fake.signed_delivery(payload, iat=int(time.time()) + 600)
    ahead = client.post(URL, content=body, headers=headers)
    assert ahead.status_code == 401 and ahead.json()["code"] == "webhook_rejected"
    assert "in the future" in caplog.text and "clock" in caplog.text
    # The age limit still holds (checked by the plugin now, not by PyJWT).
    body, headers = fake.signed_delivery(payload, iat=int(time.time()) - 301)
    assert client.post(URL, content=body, headers=headers).json()["code"] == "webhook_stale"


def test_delivery_signed_with_an_expired_key_is_rejected(client, fake, connection, caplog):
    item = fake.item()
    old = fake.current_kid
    fake.rotate_key()
    payload = fake.webhook(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")
    body, headers = fake.signed_delivery(payload, kid=old)
    response = client.post(URL, content=body, headers=headers)
    assert response.status_code == 401 and "expired" in caplog.text
    body, headers = fake.signed_delivery(payload)
    assert client.post(URL, content=body, headers=headers).json()["received"] == 1


def test_unknown_item_and_foreign_item_are_refused(client, fake, connection, caplog):
    payload = fake.webhook("no-such-item", "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")
    response = fake.send_webhook(URL, payload, client=client)
    assert (response.status_code, response.json()["code"]) == (401, "webhook_rejected")
    foreign = fake.send_webhook(f"{URL}?connection_id={connection['id']}", payload, client=client)
    assert foreign.status_code == 401 and "another Plaid item" in caplog.text


def test_a_rotated_key_stops_verifying_once_its_cached_copy_is_old(client, fake, connection, monkeypatch, caplog):
    import hub_plaid

    monkeypatch.setattr(hub_plaid, "KEY_CACHE_SECONDS", 0.2)
    item = fake.item()
    old = fake.current_kid
    assert fake.fire(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", client=client).json()["received"] == 1
    fake.rotate_key()  # Plaid expires the old key
    time.sleep(0.3)
    payload = fake.webhook(item.item_id, "TRANSACTIONS", "DEFAULT_UPDATE", new_transactions=1)
    body, headers = fake.signed_delivery(payload, kid=old)
    refused = client.post(URL, content=body, headers=headers)
    assert refused.status_code == 401 and "expired" in caplog.text


def test_deliveries_naming_unknown_keys_cost_a_bounded_number_of_lookups(client, fake, connection, monkeypatch, caplog):
    import hub_plaid

    monkeypatch.setattr(hub_plaid, "KEY_LOOKUPS_PER_MINUTE", 3)
    item = fake.item()
    payload = fake.webhook(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")
    body = json.dumps(payload).encode()
    attacker = ec.generate_private_key(ec.SECP256R1())
    before = sum(fake.key_fetches.values()) + fake.errors["INVALID_WEBHOOK_VERIFICATION_KEY_ID"]
    for n in range(6):
        claims = {"iat": int(time.time()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
        forged = jwt.encode(claims, attacker, algorithm="ES256", headers={"kid": f"made-up-{n}"})
        response = client.post(URL, content=body, headers={"Plaid-Verification": forged,
                                                           "Content-Type": "application/json"})
        assert response.status_code == 401
    assert sum(fake.key_fetches.values()) + fake.errors["INVALID_WEBHOOK_VERIFICATION_KEY_ID"] - before == 3
    # Until the minute is over, a genuine delivery needing a look-up waits too (Plaid retries it)...
    waiting = fake.fire(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", client=client)
    assert waiting.status_code == 401 and "not looked up" in caplog.text
    # ...and once it is, verifies.
    hub_plaid._key_lookups.clear()
    assert fake.fire(item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", client=client).json()["received"] == 1


def test_forged_deliveries_for_one_item_do_not_block_another_tenants_genuine_delivery(client, auth, fake, hub_app):
    """The look-up budget is per connection, and kids Plaid refused are not asked again."""
    mine = link(client, auth, fake)  # the attacker's own (tenant A) item: it knows its item_id
    with hub_app.state.hub.session() as session:
        _org, key = create_organization(session, "victim")
    victim = link(client, {"Authorization": f"Bearer {key}"}, fake)
    attacker_item = fake.items[mine["config"]["item_id"]]
    victim_item = fake.items[victim["config"]["item_id"]]
    payload = fake.webhook(attacker_item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE")
    body = json.dumps(payload).encode()
    signer = ec.generate_private_key(ec.SECP256R1())
    for n in range(10):
        claims = {"iat": int(time.time()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
        forged = jwt.encode(claims, signer, algorithm="ES256", headers={"kid": f"made-up-{n}"})
        client.post(URL, content=body, headers={"Plaid-Verification": forged, "Content-Type": "application/json"})
    before = fake.errors["INVALID_WEBHOOK_VERIFICATION_KEY_ID"]
    claims = {"iat": int(time.time()), "request_body_sha256": hashlib.sha256(body).hexdigest()}
    again = jwt.encode(claims, signer, algorithm="ES256", headers={"kid": "made-up-0"})
    assert client.post(URL, content=body, headers={"Plaid-Verification": again,
                                                   "Content-Type": "application/json"}).status_code == 401
    assert fake.errors["INVALID_WEBHOOK_VERIFICATION_KEY_ID"] == before  # refused before: not asked again
    genuine = fake.fire(victim_item.item_id, "TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", client=client)
    assert genuine.status_code == 200, genuine.text
