"""Connecting a Salesforce org through the hub's OAuth API (production and
sandbox logins, PKCE), the org's host from the token answer as the
connection's config, its org id as the account, and sessions that end
silently: a 401 INVALID_SESSION_ID is refreshed once, and a refresh naming
another instance moves the connection's host."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hub_salesforce import testing as fake

API = "/api/v1/integrations"


def test_a_production_org_connects_with_pkce_on_its_instance(sfdc):
    url = sfdc.start(instance_url="https://evil.example.com")  # (a readonly config field: not the client's)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{sfdc.login}/services/oauth2/authorize"
    assert (query["response_type"], query["client_id"], query["scope"]) == ("code", fake.CLIENT_ID,
                                                                            "api refresh_token")
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == "https://hub.example.com/api/v1/integrations/oauth/salesforce/callback"

    back = sfdc.consent(url)
    callback = sfdc.callback(back)
    assert callback.status_code == 200, callback.text
    assert sfdc.callback(back).status_code >= 400  # its state and code are single-use
    connection = callback.json()["connection"]
    assert connection["status"] == "connected"
    assert connection["provider_account"] == fake.ORG_ID
    # The org's host is what the token answer names (the fake's own origin), never the client's.
    assert connection["config"] == {"environment": "production", "instance_url": sfdc.login}

    shown = [callback.text, sfdc.get(f"{API}/connections/{connection['id']}").text,
             sfdc.post(f"{API}/connections/{connection['id']}/test").text, sfdc.get(f"{API}/connections").text]
    issued = [*sfdc.app.state.sessions, *sfdc.app.state.refresh, fake.CLIENT_SECRET]
    assert len(issued) == 3
    assert not [secret for secret in issued for text in shown if secret in text]
    tested = sfdc.post(f"{API}/connections/{connection['id']}/test").json()
    assert tested["connection"]["provider_account"] == fake.ORG_ID
    assert {host for host, _method, _path in sfdc.api_calls()} == {sfdc.login}


def test_a_sandbox_org_logs_in_at_its_own_host(sfdc):
    url = sfdc.start(environment="Sandbox")
    assert url.startswith(f"{sfdc.sandbox}/services/oauth2/authorize?")
    connection = sfdc.callback(sfdc.consent(url)).json()["connection"]
    assert connection["provider_account"] == fake.SANDBOX_ORG_ID
    assert connection["config"] == {"environment": "sandbox", "instance_url": sfdc.sandbox}
    fake.seed(sfdc.app, "accounts", 2, org=fake.SANDBOX_ORG_ID)
    listed = sfdc.get(sfdc.records(connection, "accounts"))
    assert [r["Name"] for r in listed.json()["records"]] == ["Seed account 1", "Seed account 2"]
    # Its refresh goes to the sandbox login host too (a production one would refuse the token).
    fake.expire_tokens(sfdc.app)
    assert sfdc.get(sfdc.records(connection, "accounts")).status_code == 200
    assert sfdc.app.state.refreshes == 1

    refused = sfdc.client.get(f"{API}/oauth/salesforce/authorize", params={"environment": "staging"},
                              headers=sfdc.auth)
    assert refused.status_code == 422 and refused.json()["fields"] == ["environment"], refused.text


def test_a_token_answer_not_signed_for_the_app_connects_nothing(sfdc):
    back = sfdc.consent(sfdc.start())
    answer = {"access_token": "00D!forged", "refresh_token": "5Aep-forged", "instance_url": "https://evil.example.com",
              "id": f"{sfdc.login}/id/{fake.ORG_ID}/{fake.USER_ID}", "issued_at": "1700000000000",
              "signature": "bm90IHNpZ25lZA==", "token_type": "Bearer"}
    sfdc.fake.script("/services/oauth2/token", (200, answer))
    refused = sfdc.callback(back)
    assert refused.status_code >= 400 and "signature" in refused.text, refused.text
    assert sfdc.get(f"{API}/connections").json()["connections"] == []


def test_an_ended_session_is_refreshed_once_and_the_call_succeeds(sfdc, connection):
    fake.seed(sfdc.app, "contacts", 3)
    before = sfdc.secrets(connection["id"])
    fake.expire_tokens(sfdc.app)
    listed = sfdc.get(sfdc.records(connection, "contacts"))
    assert listed.status_code == 200 and len(listed.json()["records"]) == 3, listed.text
    assert sfdc.app.state.refreshes == 1
    after = sfdc.secrets(connection["id"])
    # A new session; Salesforce's refresh token is kept as it was (a refresh answers none).
    assert after["access_token"] != before["access_token"] and after["refresh_token"] == before["refresh_token"]
    assert sfdc.get(sfdc.records(connection, "contacts")).status_code == 200
    assert sfdc.app.state.refreshes == 1

    sfdc.app.state.refresh.clear()  # the user revoked the app's access
    fake.expire_tokens(sfdc.app)
    refused = sfdc.get(sfdc.records(connection, "contacts"))
    assert refused.status_code == 424 and refused.json()["code"] == "token_refresh_failed", refused.text
    assert "expired access/refresh token" in refused.json()["error"]
    assert sfdc.get(f"{API}/connections/{connection['id']}").json()["connection"]["status"] == "expired"


def test_a_refresh_naming_another_instance_moves_the_connections_host(sfdc, connection):
    fake.seed(sfdc.app, "accounts", 2)
    sfdc.org().instance = sfdc.sandbox  # the org moved: the next token answer names its new host
    fake.expire_tokens(sfdc.app)
    before = len(sfdc.api_calls())
    first = sfdc.get(sfdc.records(connection, "accounts"))
    assert first.status_code == 200, first.text
    # The call refused for its ended session is sent again after the refresh, to the new host.
    assert {host for host, _method, _path in sfdc.api_calls(before)} == {sfdc.sandbox}
    shown = sfdc.get(f"{API}/connections/{connection['id']}").json()["connection"]
    assert shown["config"] == {"environment": "production", "instance_url": sfdc.sandbox}
    assert shown["provider_account"] == fake.ORG_ID
    calls = len(sfdc.api_calls())
    assert sfdc.get(sfdc.records(connection, "accounts")).status_code == 200
    record_id = first.json()["records"][0]["Id"]
    assert sfdc.get(sfdc.records(connection, "accounts", record_id)).status_code == 200
    assert {host for host, _method, _path in sfdc.api_calls(calls)} == {sfdc.sandbox}
