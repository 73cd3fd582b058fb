"""Connecting a QuickBooks company through the hub's API: Intuit's authorize
URL, the code exchanged with HTTP Basic client auth, the callback's realmId
kept as the connection's config, account and webhook key, no secret in any
answer; an expired access token refreshed through the hub with the refresh
token rotating; the grant revoked when the connection is deleted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

from hub_quickbooks import testing as fake

API = "/api/v1/integrations"


def _secrets_of(app) -> list[str]:
    return [*app.state.access, *app.state.refresh, *app.state.refreshed, fake.CLIENT_SECRET]


def test_the_flow_connects_the_company_the_user_chose(qbo):
    url = qbo.start()
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path == "/connect/oauth2"
    assert query["scope"] == "com.intuit.quickbooks.accounting" and query["response_type"] == "code"
    assert query["client_id"] == fake.CLIENT_ID and query["state"]
    assert query["redirect_uri"].endswith(f"{API}/oauth/quickbooks/callback")

    callback = qbo.callback(qbo.consent(url, realm=fake.OTHER_REALM))
    assert callback.status_code == 200, callback.text
    connection = callback.json()["connection"]
    assert connection["status"] == "connected"
    assert connection["config"] == {"realm_id": fake.OTHER_REALM}
    assert connection["provider_account"] == fake.OTHER_REALM
    row = qbo.row(connection["id"])
    assert row.webhook_key == fake.OTHER_REALM
    now = datetime.now(timezone.utc)
    expires = row.token_expires_at.replace(tzinfo=timezone.utc)
    lapses = row.refresh_expires_at.replace(tzinfo=timezone.utc)
    assert timedelta(minutes=59) < expires - now <= timedelta(hours=1)
    assert timedelta(days=100) < lapses - now <= timedelta(days=101)

    # Calls reach that company's API, and nothing secret is ever answered.
    listed = qbo.get(qbo.records(connection["id"], "customers"))
    assert listed.status_code == 200 and len(listed.json()["records"]) == 3
    tested = qbo.post(f"{API}/connections/{connection['id']}/test")
    assert tested.status_code == 200, tested.text
    shown = callback.text + listed.text + tested.text + qbo.get(f"{API}/connections").text
    assert [s for s in _secrets_of(qbo.app) if s in shown] == []
    assert {path.split("/")[3] for _m, path, _q in qbo.app.state.calls} == {fake.OTHER_REALM}


def test_a_callback_without_realm_id_connects_nothing(qbo):
    query = qbo.consent(qbo.start())
    del query["realmId"]
    response = qbo.callback(query)
    assert response.status_code >= 400 and response.json()["code"] == "missing_realm"
    assert qbo.get(f"{API}/connections").json()["connections"] == []
    assert qbo.app.state.access == {}  # refused before the code was exchanged


def test_an_expired_token_is_refreshed_and_the_rotated_refresh_token_kept(qbo, connection):
    first = qbo.secrets(connection["id"])
    fake.expire_tokens(qbo.app)
    listed = qbo.get(qbo.records(connection["id"], "customers"))
    assert listed.status_code == 200, listed.text
    assert qbo.app.state.refreshed == [first["refresh_token"]]
    second = qbo.secrets(connection["id"])
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert first["refresh_token"] not in qbo.app.state.refresh  # (used up: it rotated)

    # The next expiry is refreshed with the rotated token, the only one Intuit still takes.
    fake.expire_tokens(qbo.app)
    assert qbo.get(qbo.records(connection["id"], "invoices")).status_code == 200
    assert qbo.app.state.refreshed == [first["refresh_token"], second["refresh_token"]]
    assert qbo.get(f"{API}/connections/{connection['id']}").json()["connection"]["status"] == "connected"


def test_tokens_expire_by_their_lifetime_too(qbo, connection):
    qbo.app.state.access = {token: (realm, 0.0) for token, (realm, _until) in qbo.app.state.access.items()}
    assert qbo.get(qbo.records(connection["id"], "customers")).status_code == 200
    assert len(qbo.app.state.refreshed) == 1


def test_deleting_the_connection_revokes_the_grant(qbo, connection):
    refresh = qbo.secrets(connection["id"])["refresh_token"]
    assert qbo.delete(f"{API}/connections/{connection['id']}").status_code == 200
    assert qbo.app.state.revoked == [refresh]


def test_another_company_does_not_take_the_connection_over(qbo, connection):
    response = qbo.callback(qbo.consent(qbo.start(), realm=fake.OTHER_REALM))
    assert response.status_code >= 400 and response.json()["code"] == "connection_exists", response.text
    assert len(qbo.app.state.revoked) == 1  # the grant of the other company is given back
    assert [c["id"] for c in qbo.get(f"{API}/connections").json()["connections"]] == [connection["id"]]
