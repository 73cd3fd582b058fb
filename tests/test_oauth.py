"""OAuth 2: state is random, single use, expiring and bound to provider; PKCE;
the callback redirects with stable codes and never reflects provider text;
tokens refresh once under a per-connection lock and rotated tokens persist."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.models import Connection, OAuthState, utcnow
from hub.runtime import Hub
from hub.services.records import RecordService
from hub.types import AuthFailed, EntityField
from tests.conftest import API, make_org
from tests.oauth_provider import INFO, build_plugin, create_fake

APP_URL = "https://app.example.com/integrations"


@pytest.fixture
def oauth_fake(serve_app):
    app = create_fake()
    return serve_app(app), app


@pytest.fixture
def oauth_hub(settings, example_registry, oauth_fake, monkeypatch):
    yield from _oauth_app(settings, example_registry, oauth_fake, monkeypatch, build_plugin())


def _oauth_app(settings, registry, oauth_fake, monkeypatch, plugin):
    monkeypatch.setenv("HUB_OAUTHEX_ORIGIN", oauth_fake[0])
    monkeypatch.setenv("HUB_OAUTHEX_CLIENT_ID", "cid")
    monkeypatch.setenv("HUB_OAUTHEX_CLIENT_SECRET", "csecret")
    registry.register(plugin, "oauthex")
    settings.oauth_return_hosts = "app.example.com"  # APP_URL's
    app = create_app(settings, registry)
    with TestClient(app) as client:
        headers = make_org(app)
        headers.pop("org_id")
        yield client, headers, app


def start(client, headers, **params):
    response = client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": APP_URL, **params},
                          headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["authorization_url"]


def provider_redirect(authorization_url: str, **extra) -> str:
    """Follow the provider's consent screen: where it sends the browser back to."""
    response = httpx.get(authorization_url + "".join(f"&{k}={v}" for k, v in extra.items()))
    assert response.status_code in (302, 307)
    location = urlsplit(response.headers["location"])
    return f"{location.path}?{location.query}"


def expire_soon(hub, connection_id: str) -> Connection:
    """Make the connection's access token expire within the refresh margin."""
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id)
                        .values(token_expires_at=utcnow() + timedelta(seconds=5)))
        session.commit()
        return session.get(Connection, connection_id)


def finish(client, callback: str) -> dict:
    response = client.get(callback, follow_redirects=False)
    assert response.status_code == 302, response.text
    target = response.headers["location"]
    assert target.startswith(APP_URL)
    return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()} | {"_location": target}


def test_round_trip_creates_connection_with_pkce(oauth_hub, oauth_fake):
    client, headers, _app = oauth_hub
    url = start(client, headers)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge"][0] and query["redirect_uri"][0].endswith("/oauth/oauthex/callback")
    result = finish(client, provider_redirect(url))
    assert result["status"] == "connected"
    connection = client.get(f"{API}/connections/{result['connection_id']}", headers=headers).json()["connection"]
    assert connection["status"] == "connected" and connection["provider"] == "oauthex"
    assert connection["token_expires_at"] is not None
    tokens = oauth_fake[1].state.access
    assert not any(token in str(connection) for token in tokens)
    tested = client.post(f"{API}/connections/{result['connection_id']}/test", headers=headers)
    assert tested.status_code == 200 and tested.json()["details"] == {"account": "acct_1"}


def test_state_is_single_use(oauth_hub):
    client, headers, _app = oauth_hub
    callback = provider_redirect(start(client, headers))
    assert finish(client, callback)["status"] == "connected"
    # A used state redirects nowhere: its callback URL is not a lasting redirect to the return URL.
    replay = client.get(callback, follow_redirects=False)
    assert replay.status_code == 400 and replay.json()["code"] == "state_used"


def test_unknown_and_missing_state(oauth_hub):
    client, _headers, _app = oauth_hub
    unknown = client.get(f"{API}/oauth/oauthex/callback?code=x&state=forged")
    assert unknown.status_code == 400 and unknown.json()["code"] == "invalid_state"
    missing = client.get(f"{API}/oauth/oauthex/callback?code=x")
    assert missing.status_code == 400 and missing.json()["code"] == "missing_state"


def test_expired_state(oauth_hub):
    client, headers, app = oauth_hub
    callback = provider_redirect(start(client, headers))
    with app.state.hub.session() as session:
        session.execute(sa.update(OAuthState).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    expired = client.get(callback, follow_redirects=False)
    assert expired.status_code == 400 and expired.json()["code"] == "state_expired"


def test_state_is_bound_to_its_provider(oauth_hub):
    client, headers, _app = oauth_hub
    callback = provider_redirect(start(client, headers))
    wrong = client.get(callback.replace("/oauth/oauthex/", "/oauth/example/"), follow_redirects=False)
    assert wrong.status_code == 400 and wrong.json()["code"] == "invalid_state"


def test_denied_authorization_redirects_with_stable_code_and_no_provider_text(oauth_hub):
    client, headers, _app = oauth_hub
    result = finish(client, provider_redirect(start(client, headers), deny="1"))
    assert result["status"] == "error" and result["code"] == "access_denied" and result["provider"] == "oauthex"
    assert "script" not in result["_location"] and "alert" not in result["_location"]


def test_return_url_must_be_absolute_http(oauth_hub):
    client, headers, _app = oauth_hub
    for malformed in ("http://[::1", "http://[abc]/"):  # urlsplit raised on these: a 500
        refused = client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": malformed}, headers=headers)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_redirect_uri", refused.text
    response = client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": "javascript:alert(1)"},
                          headers=headers)
    assert response.status_code == 422 and response.json()["code"] == "invalid_redirect_uri"


def test_api_key_provider_has_no_oauth(oauth_hub):
    client, headers, _app = oauth_hub
    response = client.get(f"{API}/oauth/example/authorize", headers=headers)
    assert response.status_code == 422 and response.json()["code"] == "wrong_auth_type"


def test_concurrent_calls_of_two_processes_refresh_once_and_rotated_token_is_saved(oauth_hub, oauth_fake, settings,
                                                                  example_registry):
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    connection = expire_soon(hub, connection_id)

    async def burst():
        # Two hubs stand for two processes (API replica and worker): each has
        # its own in-process lock; the shared lock must still make one refresh.
        hubs = [Hub(settings, example_registry) for _ in range(2)]
        try:
            services = [RecordService(hubs[i % 2], connection) for i in range(8)]
            return await asyncio.gather(*(s.list("contacts") for s in services))
        finally:
            for other in hubs:
                await other.close()

    pages = asyncio.run(burst())
    assert all(page.records == [{"id": "1", "name": "Ada"}] for page in pages)
    assert oauth_fake[1].state.refresh_calls == 1
    with hub.session() as session:
        stored = session.get(Connection, connection_id)
        secrets = hub.cipher.decrypt_json(stored.credentials_encrypted)
    assert secrets["refresh_token"] in oauth_fake[1].state.refresh  # the rotated, still-valid one
    assert stored.token_expires_at is not None


def test_refused_refresh_marks_connection_expired(oauth_hub, oauth_fake):
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    expire_soon(hub, connection_id)
    oauth_fake[1].state.refresh.clear()
    response = client.get(f"{API}/connections/{connection_id}/entities/contacts/records", headers=headers)
    assert response.status_code == 424 and response.json()["code"] == "token_refresh_failed"
    connection = client.get(f"{API}/connections/{connection_id}", headers=headers).json()["connection"]
    assert connection["status"] == "expired" and "refresh refused" in connection["last_error"]


def test_a_warning_outlives_refreshes_and_tests_and_ends_with_a_new_grant(oauth_hub, oauth_fake):
    """A connection's ``warning`` (CONNECTION_WARNING: consent about to expire)
    is the user's to end by authorizing again: a routine token refresh or a
    passing test keeps it, while they clear an error."""
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id).values(
            status="error", last_error="refused", warning="consent expires at 2030-01-01"))
        session.commit()
    expire_soon(hub, connection_id)
    records = f"{API}/connections/{connection_id}/entities/contacts/records"
    assert client.get(records, headers=headers).status_code == 200
    path = f"{API}/connections/{connection_id}"
    assert client.post(f"{path}/test", headers=headers).status_code == 200
    connection = client.get(path, headers=headers).json()["connection"]
    assert (connection["status"], connection["last_error"], connection["warning"]) == (
        "connected", None, "consent expires at 2030-01-01")
    again = finish(client, provider_redirect(start(client, headers)))
    assert again["connection_id"] == connection_id
    assert client.get(path, headers=headers).json()["connection"]["warning"] is None


def test_token_endpoint_401_during_refresh_fails_cleanly(oauth_hub, oauth_fake, settings, example_registry):
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    connection = expire_soon(hub, connection_id)
    oauth_fake[1].state_client = ("rotated", "client")  # the token endpoint now answers 401

    async def attempt():
        other = Hub(settings, example_registry)
        try:
            return await asyncio.wait_for(RecordService(other, connection).list("contacts"), timeout=10)
        finally:
            await other.close()

    with pytest.raises(AuthFailed) as excinfo:
        asyncio.run(attempt())
    assert excinfo.value.code == "token_refresh_failed"


def test_return_urls_are_limited_to_the_hosts_the_operator_lists(oauth_hub):
    client, headers, app = oauth_hub
    app.state.hub.settings.oauth_return_hosts = "app.example.com, admin.example.com"
    start(client, headers)  # APP_URL is on app.example.com
    refused = client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": "https://evil.example.net/x"},
                         headers=headers)
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_redirect_uri"
    assert "app.example.com" in refused.json()["error"]
    app.state.hub.settings.oauth_return_hosts = "*"  # the operator's explicit choice
    assert client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": "https://evil.example.net/x"},
                      headers=headers).status_code == 200


def test_without_listed_hosts_only_the_hubs_own_and_loopback_hosts_are_return_urls(oauth_hub):
    """Unset, HUB_OAUTH_RETURN_HOSTS must not make the hub an open redirect
    for whoever holds an API key."""
    client, headers, app = oauth_hub
    settings = app.state.hub.settings
    settings.oauth_return_hosts = ""
    settings.public_url = "https://hub.example.org/"

    def status(url):
        response = client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": url}, headers=headers)
        return response.status_code, response.json().get("code"), response.json().get("error", "")

    for url in ("https://evil.example.net/x", APP_URL, "https://hub.example.org.evil.net/"):
        code, error_code, error = status(url)
        assert (code, error_code) == (422, "invalid_redirect_uri"), url
        assert "HUB_OAUTH_RETURN_HOSTS" in error and "hub.example.org" in error
    # Hosts a browser reads otherwise than the hub's check would ("evil.com" for the first two).
    for url in ("http://evil.com\\@hub.example.org/", "https://evil.com\\hub.example.org/",
                "https://user@evil.net/", "https://evil.net@hub.example.org/", "https://hub.example.org/\tx"):
        code, error_code, error = status(url)
        assert (code, error_code) == (422, "invalid_redirect_uri"), url
    for url in ("https://hub.example.org/done", "http://localhost:3000/integrations", "http://127.0.0.1:5173/",
                "http://[::1]:8080/x", "https://HUB.example.org/x", "https://hub.example.org/done?email=a@b.example"):
        assert status(url)[0] == 200, url


def test_only_declared_configuration_is_kept_from_the_authorize_request(oauth_hub):
    client, headers, app = oauth_hub
    result = finish(client, provider_redirect(start(client, headers, api_version="1999-01", foo="bar")))
    connection = client.get(f"{API}/connections/{result['connection_id']}", headers=headers).json()["connection"]
    assert "api_version" not in connection["config"] and "foo" not in connection["config"]


def test_states_expired_for_a_day_are_purged_by_the_scheduler(oauth_hub):
    client, headers, app = oauth_hub
    start(client, headers)
    start(client, headers)
    hub = app.state.hub
    with hub.session() as session:
        old = session.exec(sa.select(OAuthState.state_hash)).scalars().first()
        session.execute(sa.update(OAuthState).where(OAuthState.state_hash == old)
                        .values(expires_at=utcnow() - timedelta(days=2)))
        session.commit()
    app.state.sync_scheduler.purge(utcnow())
    with hub.session() as session:
        left = session.exec(sa.select(OAuthState.state_hash)).scalars().all()
    assert len(left) == 1 and old not in left


@pytest.fixture
def untimed_oauth_hub(settings, example_registry, oauth_fake, monkeypatch):
    """The OAuth provider without expiry times: a token is known expired by a 401."""
    yield from _oauth_app(settings, example_registry, oauth_fake, monkeypatch, build_plugin(tells_expiry=False))


def test_two_calls_meeting_a_401_at_once_refresh_once_without_expiry_times(untimed_oauth_hub, oauth_fake,
                                                                           settings, example_registry):
    """With no expiry to compare, the second caller used to refresh again with
    the refresh token the first had just rotated away: refused, and a working
    connection marked expired."""
    client, headers, app = untimed_oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    with app.state.hub.session() as session:
        connection = session.get(Connection, connection_id)
    assert connection.token_expires_at is None
    oauth_fake[1].state.access.clear()  # the access token expired at the provider
    calls_before = oauth_fake[1].state.refresh_calls

    async def both():
        hub = Hub(settings, example_registry)
        try:
            return await asyncio.gather(*(RecordService(hub, connection).list("contacts") for _ in range(2)),
                                        return_exceptions=True)
        finally:
            await hub.close()

    results = asyncio.run(both())
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert oauth_fake[1].state.refresh_calls == calls_before + 1
    with app.state.hub.session() as session:
        assert session.get(Connection, connection_id).status == "connected"


def refresh_in_a_worker(settings, example_registry, connection, during, made_before=None):
    """A worker process's refresh of ``connection``, its context made first
    (then ``made_before`` runs), with ``during`` run right after the provider
    answered the refresh; returns that context."""
    worker = Hub(settings, example_registry)
    provider = worker.provider("oauthex")
    context = worker.context(provider, connection)
    if made_before is not None:
        made_before()
    real_call = provider.call

    async def calling(hook, **kwargs):
        result = await real_call(hook, **kwargs)
        if hook == "refresh_credentials":
            during()
        return result

    provider.call = calling

    async def go():
        try:
            await worker._ensure_fresh(provider, context)
        finally:
            provider.__dict__.pop("call", None)  # (the registry's providers are shared)
            await worker.close()

    asyncio.run(go())
    return context


def stored_secrets(hub, connection_id: str) -> dict:
    with hub.session() as session:
        return hub.cipher.decrypt_json(session.get(Connection, connection_id).credentials_encrypted)


def test_a_refresh_keeps_secrets_stored_since_its_call_began_and_saves_its_tokens(oauth_hub, oauth_fake, settings,
                                                                                  example_registry):
    """A worker's context was made before a webhook secret was stored: its
    refresh keeps that secret, and the rotated tokens are saved even though
    the connection changed under the refresh."""
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    connection = expire_soon(hub, connection_id)

    def store_secret(**extra):
        with hub.session() as session:
            row = session.get(Connection, connection_id)
            row.credentials_encrypted = hub.cipher.encrypt_json(
                {**hub.cipher.decrypt_json(row.credentials_encrypted), **extra})
            row.credentials_version += 1
            session.add(row)
            session.commit()

    context = refresh_in_a_worker(settings, example_registry, connection,
                                  during=lambda: store_secret(webhook_secret="whsec_second"),
                                  made_before=lambda: store_secret(webhook_secret="whsec_first"))
    secrets = stored_secrets(hub, connection_id)
    assert secrets["webhook_secret"] == "whsec_second"
    assert secrets["refresh_token"] == context.credentials["refresh_token"]  # the rotated one, saved
    assert secrets["access_token"] in oauth_fake[1].state.access


def test_a_refresh_does_not_write_the_old_grant_over_one_connected_again_meanwhile(oauth_hub, oauth_fake, settings,
                                                                                   example_registry):
    from datetime import datetime, timezone

    from hub.services.connections import upsert_from_credentials
    from hub.types import Credentials

    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    connection = expire_soon(hub, connection_id)

    def connect_again():  # the user connects again meanwhile (the OAuth callback)
        upsert_from_credentials(hub, connection.organization_id, hub.provider("oauthex"), Credentials(
            secrets={"access_token": "NEW_GRANT_AT", "refresh_token": "NEW_GRANT_RT"},
            expires_at=datetime.now(timezone.utc) + timedelta(hours=1), webhook_key="acct_1",
            config={"account": "acct_1"}))

    context = refresh_in_a_worker(settings, example_registry, connection, during=connect_again)
    secrets = stored_secrets(hub, connection_id)
    assert (secrets["access_token"], secrets["refresh_token"]) == ("NEW_GRANT_AT", "NEW_GRANT_RT")
    assert context.credentials["refresh_token"] == "NEW_GRANT_RT"


def test_storing_a_webhook_secret_never_writes_over_tokens_stored_meanwhile(oauth_hub):
    """A refresh committing its rotated tokens while the secret is stored: both kept."""
    from hub.api.routes import webhooks as routes

    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    with hub.session() as session:
        organization_id = session.get(Connection, connection_id).organization_id
    real_decrypt = hub.cipher.decrypt_json
    rotated = []

    def decrypt_while_a_refresh_commits(text):
        value = real_decrypt(text)
        if not rotated:  # once: the refresh lands between the read and the write
            rotated.append(True)
            with hub.session() as other:
                row = other.get(Connection, connection_id)
                row.credentials_encrypted = hub.cipher.encrypt_json(
                    {**real_decrypt(row.credentials_encrypted), "refresh_token": "ROTATED_RT"})
                row.credentials_version += 1
                other.add(row)
                other.commit()
        return value

    hub.cipher.decrypt_json = decrypt_while_a_refresh_commits
    try:
        routes._store_webhook_secret(hub, organization_id, connection_id, "whsec_x")
    finally:
        hub.cipher.decrypt_json = real_decrypt
    secrets = stored_secrets(hub, connection_id)
    assert (secrets["refresh_token"], secrets["webhook_secret"]) == ("ROTATED_RT", "whsec_x")


def test_credentials_stored_over_a_row_read_before_another_write_get_a_version_of_their_own(oauth_hub):
    """A re-authorisation read the connection at version n, a refresh then
    committed n+1: the re-authorisation is n+2, never n+1 again, so a
    compare-and-swap still holding n+1 fails instead of writing over it."""
    from hub.types import Credentials

    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    hub = app.state.hub
    with hub.session() as reauthorising:
        row = reauthorising.get(Connection, connection_id)
        read = row.credentials_version
        with hub.session() as refreshing:
            other = refreshing.get(Connection, connection_id)
            other.credentials_version += 1
            refreshing.add(other)
            refreshing.commit()
        hub.store_credentials(row, Credentials(secrets={"access_token": "NEW", "refresh_token": "NEW_RT"}))
        reauthorising.add(row)
        reauthorising.commit()
        reauthorising.refresh(row)
        assert row.credentials_version == read + 2


def test_a_call_cancelled_while_its_refresh_is_answered_keeps_the_rotated_token(oauth_hub, oauth_fake, settings,
                                                                                 example_registry):
    """The provider spends the refresh token as it answers: a call cancelled
    then (a run stopped, a prefetch dropped) lost the new one, and the
    connection was expired at the next call."""
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    with app.state.hub.session() as session:
        connection = session.get(Connection, connection_id)
    worker = Hub(settings, example_registry)
    provider = worker.provider("oauthex")
    real_call = provider.call

    async def answered_slowly(hook, **kwargs):
        result = await real_call(hook, **kwargs)
        if hook == "refresh_credentials":
            await asyncio.sleep(0.5)  # rotated at the provider; its answer still on its way
        return result

    provider.call = answered_slowly

    async def cancelled_midway():
        try:
            refresh = asyncio.ensure_future(worker._refresh(provider, worker.context(provider, connection), True))
            await asyncio.sleep(0.25)
            refresh.cancel()
            with pytest.raises(asyncio.CancelledError):
                await refresh
        finally:
            await worker.close()  # waits for the refresh under way to save what it got
            provider.__dict__.pop("call", None)  # (the registry's providers are shared)

    asyncio.run(cancelled_midway())
    assert oauth_fake[1].state.refresh_calls == 1
    with app.state.hub.session() as session:
        stored = app.state.hub.cipher.decrypt_json(session.get(Connection, connection_id).credentials_encrypted)
    assert stored["refresh_token"] in oauth_fake[1].state.refresh  # the rotated one, still good


def test_many_shared_locks_at_once_do_not_stop_the_event_loop(settings, example_registry):
    """On PostgreSQL each holder of a refresh lock kept a pooled connection,
    taken on the event loop: from the 31st at once the pool ran dry and the
    whole process stopped for the pool's 30 s timeout."""
    import time

    hub = Hub(settings, example_registry)

    async def many():
        stalls, done = [], asyncio.Event()

        async def ticker():
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                stalls.append(now - last)
                last = now

        async def hold(i):
            async with hub.shared_lock(f"refresh:test-{i}"):
                await asyncio.sleep(0.1)

        watching = asyncio.ensure_future(ticker())
        try:
            await asyncio.wait_for(asyncio.gather(*(hold(i) for i in range(40))), 20)
        finally:
            done.set()
            await watching
            await hub.close()
        return max(stalls)

    import threading

    outcome = []
    runner = threading.Thread(target=lambda: outcome.append(asyncio.run(many())), daemon=True)
    runner.start()
    runner.join(25)  # (a stopped event loop cannot time itself out)
    # (The fault stops it for the pool's 30 s; a loaded machine may hold a process back a second or two.)
    assert outcome and outcome[0] < 5.0, "the event loop stopped while the locks were taken"


@pytest.mark.parametrize("keys_webhooks", [True, False])
def test_authorizing_another_account_never_takes_the_connection_over(settings, example_registry, oauth_fake,
                                                                     monkeypatch, keys_webhooks):
    """Without a webhook_key (a provider without webhooks), the account the
    grant's test names tells accounts apart: signing in to another account took
    the connection over, and its next full pass took the first's records for deleted."""
    app_fake = oauth_fake[1]
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch,
                                           build_plugin(keys_webhooks=keys_webhooks)):
        first = finish(client, provider_redirect(start(client, headers)))
        connection_url = f"{API}/connections/{first['connection_id']}"
        assert client.get(connection_url, headers=headers).json()["connection"]["provider_account"] == "acct_1"
        app_fake.state.account = "acct_2"
        other = finish(client, provider_redirect(start(client, headers)))
        assert (other["status"], other["code"]) == ("error", "connection_exists")
        connection = client.get(connection_url, headers=headers).json()["connection"]
        assert connection["provider_account"] == "acct_1" and connection["config"]["account"] == "acct_1"
        app_fake.state.account = "acct_1"
        again = finish(client, provider_redirect(start(client, headers)))
        assert (again["status"], again["connection_id"]) == ("connected", first["connection_id"])
        assert len(client.get(f"{API}/connections", headers=headers).json()["connections"]) == 1


def test_configuration_the_authorization_sets_is_never_taken_from_the_authorize_request(settings, example_registry,
                                                                                       oauth_fake, monkeypatch):
    """A readonly config field is the provider's to set (Salesforce's instance_url, the
    host tokens go to): a client naming it on the authorize request is not heard."""
    info = dataclasses.replace(INFO, config_fields=(
        EntityField("region", "Region"), EntityField("instance_url", "Instance URL", readonly=True)))
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch,
                                           build_plugin(info=info)):
        url = start(client, headers, region="eu", instance_url="https://attacker.example.com")
        result = finish(client, provider_redirect(url))
        config = client.get(f"{API}/connections/{result['connection_id']}", headers=headers).json()["connection"][
            "config"]
        assert config.get("region") == "eu" and "instance_url" not in config


@pytest.mark.parametrize("answer", [(503, {}), (429, {"Retry-After": "20"})])
def test_a_grant_whose_account_cannot_be_read_does_not_take_the_connection_over(settings, example_registry,
                                                                               oauth_fake, monkeypatch, answer):
    """The account test failing let a grant of another account take the connection over, which
    kept saying it was for the first; and a throttled test held the callback for 80 s."""
    app_fake = oauth_fake[1]
    revoked: list[str] = []
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch,
                                           build_plugin(keys_webhooks=False, revoked=revoked)):
        first = finish(client, provider_redirect(start(client, headers)))
        app_fake.state.account, app_fake.state.me_answer, calls = "acct_2", answer, app_fake.state.me_calls
        started = time.monotonic()
        refused = finish(client, provider_redirect(start(client, headers)))
        assert time.monotonic() - started < 10 and app_fake.state.me_calls == calls + 1  # one attempt, no waiting
        assert (refused["status"], refused["code"]) == ("error", "account_unverifiable")
        connection = client.get(f"{API}/connections/{first['connection_id']}", headers=headers).json()["connection"]
        assert connection["provider_account"] == "acct_1" and connection["config"]["account"] == "acct_1"
        assert revoked == []  # (its account unknown: revoking might end a grant someone else holds)
        app_fake.state.account, app_fake.state.me_answer = "acct_1", None
        again = finish(client, provider_redirect(start(client, headers)))
        assert (again["status"], again["connection_id"]) == ("connected", first["connection_id"])


def test_a_refused_grant_is_not_revoked_while_another_organization_holds_its_account(settings, example_registry,
                                                                                   oauth_fake, monkeypatch):
    app_fake = oauth_fake[1]
    revoked: list[str] = []
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch,
                                           build_plugin(keys_webhooks=False, revoked=revoked)):
        other = make_org(app, "other")
        other.pop("org_id")
        app_fake.state.account = "acct_2"
        assert finish(client, provider_redirect(start(client, other)))["status"] == "connected"
        app_fake.state.account = "acct_1"
        assert finish(client, provider_redirect(start(client, headers)))["status"] == "connected"
        app_fake.state.account = "acct_2"
        refused = finish(client, provider_redirect(start(client, headers)))
        assert (refused["status"], refused["code"]) == ("error", "connection_exists")
        assert revoked == []  # the other organization's connection holds that account
        app_fake.state.account = "acct_3"  # nobody's: given back
        refused = finish(client, provider_redirect(start(client, headers)))
        assert refused["code"] == "connection_exists" and len(revoked) == 1


def test_a_grant_refused_after_its_tokens_were_issued_is_given_back(settings, example_registry, oauth_fake,
                                                                    monkeypatch):
    """A plugin refusing the grant it exchanged (the user must pick one of several
    accounts) left it active at the provider: only InsufficientScope's were given back."""
    from hub import hookimpl
    from hub.types import ValidationFailed

    revoked: list[str] = []
    plugin = build_plugin(revoked=revoked)
    exchange = plugin.exchange_code

    @hookimpl
    async def exchange_code(ctx, code, redirect_uri, code_verifier):
        credentials = await exchange(ctx, code, redirect_uri, code_verifier)
        refused = ValidationFailed("this grant covers several organisations: choose one", code="account_choice_needed")
        refused.credentials = credentials
        raise refused

    plugin.exchange_code = exchange_code
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch, plugin):
        result = finish(client, provider_redirect(start(client, headers)))
        assert (result["status"], result["code"]) == ("error", "account_choice_needed")
        assert len(revoked) == 1 and revoked[0] in oauth_fake[1].state.access


def test_what_a_refresh_says_of_the_config_is_kept(oauth_hub, oauth_fake):
    """Salesforce answers a refresh with the org's instance_url, which may have moved: the
    refresh kept only the tokens, and calls went on to the old host."""
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    url = f"{API}/connections/{connection_id}"
    assert "instance_url" not in client.get(url, headers=headers).json()["connection"]["config"]
    client.put(url, json={"config": {"label": "main"}}, headers=headers)  # a tenant's own key: kept
    oauth_fake[1].state.instance_url = "https://eu42.example.com"
    oauth_fake[1].state.access.clear()  # the token expired: the next call refreshes
    assert client.post(f"{url}/test", headers=headers).status_code == 200
    config = client.get(url, headers=headers).json()["connection"]["config"]
    assert config == {"account": "acct_1", "instance_url": "https://eu42.example.com", "label": "main"}
    assert oauth_fake[1].state.refresh_calls == 1


def start_bound(client, headers) -> tuple[str, str]:
    response = client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": APP_URL, "confirm": "true"},
                          headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["authorization_url"], response.json()["binding"]


def test_a_flow_bound_to_its_user_connects_only_when_that_users_app_confirms(settings, example_registry, oauth_fake,
                                                                            monkeypatch):
    """A tenant who sent its authorization URL to someone else got that person's account
    connected to its organization. Bound, the callback connects nothing: the tenant's app
    confirms with the binding kept in the session of the user who started."""
    revoked: list[str] = []
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch,
                                           build_plugin(revoked=revoked)):
        url, binding = start_bound(client, headers)
        assert binding and client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": APP_URL},
                                      headers=headers).json()["binding"] is None  # (unbound unless asked)
        came_back = finish(client, provider_redirect(url))
        assert came_back["status"] == "authorized" and came_back["flow"] and "connection_id" not in came_back
        assert client.get(f"{API}/connections", headers=headers).json()["connections"] == []
        confirm_url = f"{API}/oauth/oauthex/confirm"
        other = make_org(app, "other")
        other.pop("org_id")
        elsewhere = client.post(confirm_url, json={"flow": came_back["flow"], "binding": binding}, headers=other)
        assert (elsewhere.status_code, elsewhere.json()["code"]) == (404, "oauth_flow_not_found")
        confirmed = client.post(confirm_url, json={"flow": came_back["flow"], "binding": binding}, headers=headers)
        assert confirmed.status_code == 201, confirmed.text
        connection = confirmed.json()["connection"]
        assert connection["status"] == "connected" and connection["provider_account"] == "acct_1"
        again = client.post(confirm_url, json={"flow": came_back["flow"], "binding": binding}, headers=headers)
        assert (again.status_code, again.json()["code"]) == (404, "oauth_flow_not_found")  # once only

        # Finished by another user (the URL was sent to them): their app session holds another binding.
        client.delete(f"{API}/connections/{connection['id']}", headers=headers)
        revoked.clear()
        url, binding = start_bound(client, headers)
        came_back = finish(client, provider_redirect(url))
        _, their_binding = start_bound(client, headers)
        refused = client.post(confirm_url, json={"flow": came_back["flow"], "binding": their_binding},
                              headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (403, "binding_mismatch")
        assert len(revoked) == 1  # given back: nobody here may hold it
        late = client.post(confirm_url, json={"flow": came_back["flow"], "binding": binding}, headers=headers)
        assert late.status_code == 404
        assert client.get(f"{API}/connections", headers=headers).json()["connections"] == []


def test_a_bound_grant_nobody_confirms_is_given_back(oauth_hub, oauth_fake):
    from hub.models import PendingRevocation
    from hub.services.oauth import purge_states

    client, headers, app = oauth_hub
    hub = app.state.hub
    url, binding = start_bound(client, headers)
    came_back = finish(client, provider_redirect(url))
    from hub.crypto import hash_token

    with hub.session() as session:
        state = session.exec(sa.select(OAuthState).where(OAuthState.flow_hash == hash_token(came_back["flow"]))
                             ).scalar_one()
        assert state.grant_encrypted and not any(token in state.grant_encrypted for token in oauth_fake[1].state.access)
    later = utcnow() + timedelta(days=2)
    assert purge_states(hub, later) == 1
    with hub.session() as session:
        [pending] = session.exec(sa.select(PendingRevocation)).scalars().all()
        assert pending.provider == "oauthex" and hub.cipher.decrypt_json(pending.credentials_encrypted)[
            "access_token"] in oauth_fake[1].state.access
    confirmed = client.post(f"{API}/oauth/oauthex/confirm", json={"flow": came_back["flow"], "binding": binding},
                            headers=headers)
    assert confirmed.status_code == 404


def test_a_bound_flow_cannot_be_named_from_its_authorization_url_and_needs_a_return_page(oauth_hub, oauth_fake):
    """The flow was the hash of the state, which the authorization URL carries: whoever sent
    it to someone else could confirm their grant with their own binding (review)."""
    import hashlib

    client, headers, app = oauth_hub
    url, binding = start_bound(client, headers)
    state = parse_qs(urlsplit(url).query)["state"][0]
    came_back = finish(client, provider_redirect(url))
    guessed = client.post(f"{API}/oauth/oauthex/confirm", headers=headers,
                          json={"flow": hashlib.sha256(state.encode()).hexdigest(), "binding": binding})
    assert (guessed.status_code, guessed.json()["code"]) == (404, "oauth_flow_not_found")
    assert client.post(f"{API}/oauth/oauthex/confirm", json={"flow": came_back["flow"], "binding": binding},
                       headers=headers).status_code == 201
    # Without a page to come back to, nobody could confirm it: refused at the start.
    alone = client.get(f"{API}/oauth/oauthex/authorize", params={"confirm": "true"}, headers=headers)
    assert (alone.status_code, alone.json()["code"]) == (422, "invalid_redirect_uri")


def test_a_bound_grant_whose_account_is_connected_is_not_given_back_when_unconfirmed(settings, example_registry,
                                                                                   oauth_fake, monkeypatch):
    """Revoking it could end the grant the connection holds (review)."""
    from hub.models import PendingRevocation
    from hub.services.oauth import purge_states

    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch,
                                           build_plugin(keys_webhooks=False)):
        assert finish(client, provider_redirect(start(client, headers)))["status"] == "connected"  # acct_1
        url, _binding = start_bound(client, headers)
        assert finish(client, provider_redirect(url))["status"] == "authorized"  # acct_1 again, then left
        assert purge_states(app.state.hub, utcnow() + timedelta(days=2)) == 2  # (the first flow's state too)
        with app.state.hub.session() as session:
            assert session.exec(sa.select(PendingRevocation)).scalars().all() == []


def test_an_account_unreadable_at_the_callback_is_read_again_at_confirmation(settings, example_registry, oauth_fake,
                                                                             monkeypatch):
    app_fake = oauth_fake[1]
    for client, headers, app in _oauth_app(settings, example_registry, oauth_fake, monkeypatch,
                                           build_plugin(keys_webhooks=False)):
        first = finish(client, provider_redirect(start(client, headers)))
        url, binding = start_bound(client, headers)
        app_fake.state.me_answer = (503, {})
        came_back = finish(client, provider_redirect(url))
        app_fake.state.me_answer = None  # answers again by the time the app confirms
        confirmed = client.post(f"{API}/oauth/oauthex/confirm", json={"flow": came_back["flow"], "binding": binding},
                                headers=headers)
        assert confirmed.status_code == 201 and confirmed.json()["connection"]["id"] == first["connection_id"]
