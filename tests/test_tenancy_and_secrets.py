"""Tenant isolation on every route that takes an id, and secrets that never
leave the encrypted column: not in the database file, API responses or logs."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hub_example.testing import API_KEY, signed_delivery

from hub.api.main import create_app
from hub.plugins import PluginRegistry
from hub.runtime import Hub
from hub.types import EntityField, EntitySchema, ProviderInfo
from tests.conftest import API, make_org, module_plugin

WEBHOOK_SECRET = "whsec_topsecret_9f8e7d6c5b4a"


def minimal_body(schema: dict, components: dict) -> object:
    """The smallest JSON value valid for ``schema`` (required fields only)."""
    if "$ref" in schema:
        return minimal_body(components[schema["$ref"].split("/")[-1]], components)
    if "anyOf" in schema:
        return minimal_body(schema["anyOf"][0], components)
    kind = schema.get("type", "object")
    if kind == "object":
        return {name: minimal_body(schema["properties"][name], components)
                for name in schema.get("required", [])}
    return {"string": "x", "integer": 1, "number": 1, "boolean": True, "array": []}.get(kind)


def connect(client, auth):
    response = client.post(f"{API}/connections", json={
        "provider": "example", "credentials": {"api_key": API_KEY, "webhook_secret": WEBHOOK_SECRET}},
        headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["connection"]


def test_every_route_with_an_id_is_404_for_another_organization(client, hub_app):
    alice, bob = make_org(hub_app, "alice"), make_org(hub_app, "bob")
    alice.pop("org_id"), bob.pop("org_id")
    connection = connect(client, alice)
    openapi = client.get("/openapi.json").json()
    components = openapi["components"]["schemas"]
    checked = 0
    for template, operations in openapi["paths"].items():
        if "{connection_id}" not in template:
            continue
        path = template.replace("{connection_id}", connection["id"])
        path = re.sub(r"\{entity\}", "notes", path)
        path = re.sub(r"\{[a-z_]+\}", "x1", path)
        for method, operation in operations.items():
            body = None
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content:
                body = minimal_body(content["schema"], components)
            response = client.request(method.upper(), path, json=body, headers=bob)
            assert response.status_code == 404, f"{method} {template}: {response.status_code} {response.text}"
            assert response.json()["success"] is False
            checked += 1
    assert checked >= 10
    assert client.get(f"{API}/connections", headers=bob).json()["connections"] == []
    assert len(client.get(f"{API}/connections", headers=alice).json()["connections"]) == 1


def test_secrets_never_in_database_responses_or_logs(client, hub_app, auth, settings, caplog):
    caplog.set_level(logging.DEBUG)
    connection = connect(client, auth)
    base = f"{API}/connections/{connection['id']}"
    bodies = [
        client.get(f"{API}/connections", headers=auth).text,
        client.get(base, headers=auth).text,
        client.post(f"{base}/test", headers=auth).text,
        client.put(base, json={"name": "renamed", "credentials": {"api_key": API_KEY}}, headers=auth).text,
        client.get(f"{base}/entities/notes/records", headers=auth).text,
        client.get(f"{API}/plugins", headers=auth).text,
    ]
    body, headers = signed_delivery(WEBHOOK_SECRET, {"id": "evt_s", "type": "note.created",
                                                     "data": {"id": "n1", "title": "t"}}, int(time.time()))
    bodies.append(client.post(f"{API}/webhooks/example?connection_id={connection['id']}", content=body,
                              headers=headers).text)
    bad = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": "sk_wrong_1234"}},
                      headers=auth)
    bodies.append(bad.text)
    # A key pasted with its line break, or with a character HTTP headers cannot carry: nothing is
    # sent, the caller hears why (not "provider unreachable"), and neither the answer nor httpcore's
    # debug log of the refused header shows the key.
    for typed in ("sk_pasted_5678\n", "sk_accent_9012\u00e9\u4e00"):
        refused = client.put(base, json={"credentials": {"api_key": typed}}, headers=auth)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_value", refused.text
        bodies.append(refused.text)
    secrets = [API_KEY, WEBHOOK_SECRET, "sk_wrong_1234", "sk_pasted_5678", "sk_accent_9012"]
    for text in bodies:
        for secret in secrets:
            assert secret not in text
    assert "…4242" in bodies[1]
    logs = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for secret in secrets:
        assert secret not in logs

    hub = hub_app.state.hub
    with hub.engine.connect() as db:
        for table in ("connections", "organizations", "api_keys", "oauth_states", "webhook_events"):
            dump = str(db.execute(sa.text(f"SELECT * FROM {table}")).fetchall())
            for secret in secrets:
                assert secret not in dump, table
    if hub.engine.dialect.name == "sqlite":
        data_files = Path(hub.engine.url.database).parent.glob("hub.db*")
        for path in data_files:
            raw = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in raw, path


def test_api_keys_are_stored_hashed(client, hub_app):
    headers = make_org(hub_app, "hashed")
    key = headers["Authorization"].split()[1]
    with hub_app.state.hub.engine.connect() as db:
        dump = str(db.execute(sa.text("SELECT * FROM api_keys")).fetchall())
    assert key not in dump and key[10:] not in dump


def test_missing_and_wrong_keys_are_401(client):
    assert client.get(f"{API}/connections").json()["code"] == "missing_credentials"
    wrong = client.get(f"{API}/connections", headers={"Authorization": "Bearer hub_nope"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_api_key"


@pytest.fixture
def jwt_client(settings, example_registry, example_fake, monkeypatch):
    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    settings.jwt_secret = "jwt-shared-secret-for-tests-0123456789"
    app = create_app(settings, example_registry)
    with TestClient(app) as client:
        yield client


def token(claims: dict, secret: str = "jwt-shared-secret-for-tests-0123456789") -> dict:
    claims = {"exp": int(time.time()) + 60, **claims}
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


def test_jwt_names_the_organization_and_scopes_queries(jwt_client):
    acme = token({"org": "acme-42", "sub": "user-1"})
    other = token({"org": "globex-7"})
    connection = connect(jwt_client, acme)
    assert jwt_client.get(f"{API}/connections/{connection['id']}", headers=acme).status_code == 200
    assert jwt_client.get(f"{API}/connections/{connection['id']}", headers=other).status_code == 404
    forged = jwt_client.get(f"{API}/connections", headers=token({"org": "acme-42"}, secret="x" * 40))
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_token"
    expired = jwt_client.get(f"{API}/connections", headers=token({"org": "acme-42", "exp": int(time.time()) - 10}))
    assert expired.status_code == 401
    no_org = jwt_client.get(f"{API}/connections", headers=token({"sub": "u"}))
    assert no_org.status_code == 401 and "org" in no_org.json()["error"]
    # Two organizations whose ids share 64 first characters are not one tenant.
    alice = token({"org": "customer-" + "x" * 55 + "-alice"})
    mallory = token({"org": "customer-" + "x" * 55 + "-mallory"})
    for headers in (alice, mallory):
        refused = jwt_client.get(f"{API}/connections", headers=headers)
        assert refused.status_code == 401 and "longer than 64" in refused.json()["error"]
    assert jwt_client.get(f"{API}/connections", headers=token({"org": "o" * 64})).status_code == 200
    control = jwt_client.get(f"{API}/connections", headers=token({"org": "acme\u0000-42"}))
    assert control.status_code == 401 and "control characters" in control.json()["error"]


def test_an_organization_adopted_by_another_process_at_the_same_moment_is_used(settings):
    """Two hub processes meeting a new JWT organization at once: the second
    insert fails on the key, and the organization the first made is used."""
    from hub.db import make_engine, migrate
    from hub.models import Organization
    from hub.services.orgs import authenticate
    from sqlmodel import Session

    settings.jwt_secret = "jwt-shared-secret-for-tests-0123456789"
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    bearer = token({"org": "raced-org"})["Authorization"]
    with Session(engine) as first, Session(engine) as second:
        real_get, looked = second.get, []

        def get_before_the_other_inserted(model, key):
            looked.append(key)
            return None if len(looked) == 1 else real_get(model, key)

        second.get = get_before_the_other_inserted
        assert authenticate(first, settings, bearer).id == "raced-org"
        assert authenticate(second, settings, bearer).id == "raced-org"
        assert looked == ["raced-org", "raced-org"]
    with Session(engine) as session:
        assert session.get(Organization, "raced-org") is not None
    engine.dispose()


@pytest.fixture
def jwks(serve_app):
    """An identity provider's JWKS endpoint on loopback, and its signing key."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from fastapi import FastAPI

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    app = FastAPI()
    app.state.fetches = 0

    @app.get("/.well-known/jwks.json")
    async def keys():
        app.state.fetches += 1
        return {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    return serve_app(app) + "/.well-known/jwks.json", key, app


def test_jwt_from_a_jwks_url(settings, example_registry, example_fake, monkeypatch, jwks):
    url, key, idp = jwks
    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    settings.jwt_jwks_url = url
    settings.jwt_audience = "hub"
    with TestClient(create_app(settings, example_registry)) as client:
        def bearer(claims, signing_key=key, kid="k1"):
            claims = {"exp": int(time.time()) + 60, "aud": "hub", **claims}
            return {"Authorization": "Bearer " + jwt.encode(claims, signing_key, algorithm="RS256",
                                                             headers={"kid": kid})}

        for _ in range(3):
            assert client.get(f"{API}/connections", headers=bearer({"org": "initech"})).status_code == 200
        assert idp.state.fetches == 1  # the keys are cached, not fetched per request
        wrong_audience = client.get(f"{API}/connections", headers=bearer({"org": "initech", "aud": "other"}))
        assert wrong_audience.status_code == 401
        from cryptography.hazmat.primitives.asymmetric import rsa

        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = client.get(f"{API}/connections", headers=bearer({"org": "initech"}, signing_key=stranger))
        assert forged.status_code == 401 and forged.json()["code"] == "invalid_token"


@pytest.mark.parametrize(("secret", "hint"), [
    ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_…p7dc"),
    ("access-sandbox-de3ce8ef-33f8-452c-a685-8671031fc0f6", "access-sandbox-…c0f6"),
    # Not a vendor's prefix: nothing of the start is shown.
    ("Xy_9fKq2LmZp8R_tV3wYb6Nc1Hd0", "…1Hd0"),
    ("pat_ABCDEFGHIJKLMNOP_QRSTUVWX", "pat_…UVWX"),
    # A prefix that would leave less than half of the secret hidden is not shown.
    ("acme_test_key_0001", "…0001"),
    ("short", "…rt"),
])
def test_a_credentials_hint_shows_a_vendor_prefix_and_four_characters_at_most(secret, hint):
    from hub.crypto import mask

    assert mask(secret) == hint


def test_two_requests_creating_the_same_connection_at_once_make_one(settings):
    """Both passed the first check while their keys were being tested; the
    second is refused when it saves (connection_exists), not kept beside."""
    import asyncio

    from hub import hookimpl
    from hub.models import Connection
    from hub.services import connections as service
    from hub.services.orgs import create_organization
    from sqlmodel import select
    from tests.sync_support import Ledger, ledger_hub

    class SlowToTest(Ledger):
        @hookimpl
        async def test_connection(self, ctx):
            await asyncio.sleep(0.2)
            return {"ok": True}

    hub = ledger_hub(settings, SlowToTest(0))
    with hub.session() as session:
        org, _key = create_organization(session, "acme")
    provider = hub.provider("ledger")

    async def both():
        try:
            return await asyncio.gather(*(service.create_api_key_connection(
                hub, org.id, provider, name=None, description=None, credentials={"api_key": "k"}, config={},
                sync_enabled=False, sync_frequency_minutes=60) for _ in range(2)), return_exceptions=True)
        finally:
            await hub.close()

    outcomes = asyncio.run(both())
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "Connection"], outcomes
    with hub.session() as session:
        assert len(session.exec(select(Connection).where(Connection.organization_id == org.id)).all()) == 1


def test_the_embedded_database_and_key_are_readable_by_their_owner_only(tmp_path, monkeypatch):
    """hub.db (every tenant's records) was created 0644, readable by any local user."""
    import os
    import stat

    from hub.config import Settings
    from hub.crypto import Cipher
    from hub.db import make_engine

    monkeypatch.delenv("HUB_DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path / "fresh" / "data", secret_key=None)
    engine = make_engine(settings.resolved_database_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x)")
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    Cipher.from_settings(None, settings.data_dir)
    data = settings.data_dir
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for name in ("hub.db", "hub.db-wal", "hub.db-shm", "secret.key"):
        if (data / name).exists():
            assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name
    assert (data / "hub.db").exists() and (data / "secret.key").exists()
    engine.dispose()


def test_hub_org_create_refuses_an_empty_or_overlong_name(settings, monkeypatch):
    from click.testing import CliRunner

    from hub import cli
    from hub.models import Organization
    from hub.runtime import Hub

    hub = Hub(settings)
    hub.migrate()
    monkeypatch.setattr(cli, "_hub", lambda: hub)
    for name in ("", "   ", "x" * 201, "bad\nname"):
        refused = CliRunner().invoke(cli.main, ["org", "create", name])
        assert refused.exit_code == 1 and "1 to 200 printable characters" in refused.output, (name, refused.output)
    made = CliRunner().invoke(cli.main, ["org", "create", "  acme  "])
    assert made.exit_code == 0 and "api key" in made.output
    assert CliRunner().invoke(cli.main, ["org", "create", "株式会社\u3000東京"]).exit_code == 0  # an ideographic space
    with hub.session() as session:
        assert sorted(session.execute(sa.select(Organization.name)).scalars()) == ["acme", "株式会社\u3000東京"]


def test_an_operator_lists_organizations_and_rotates_their_api_keys(settings, monkeypatch):
    from click.testing import CliRunner

    from hub import cli
    from hub.models import Organization
    from hub.runtime import Hub

    hub = Hub(settings)
    hub.migrate()
    monkeypatch.setattr(cli, "_hub", lambda: hub)
    runner = CliRunner()
    first_key = runner.invoke(cli.main, ["org", "create", "acme"]).output.split()[-1]
    with hub.session() as session:
        org_id = session.execute(sa.select(Organization.id)).scalar_one()
    assert "acme" in runner.invoke(cli.main, ["org", "list"]).output
    second_key = runner.invoke(cli.main, ["org", "new-key", org_id]).output.split()[-1]
    app = create_app(settings)
    with TestClient(app) as client:
        for key in (first_key, second_key):
            assert client.get(f"{API}/connections", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        listed = runner.invoke(cli.main, ["org", "keys", org_id]).output.splitlines()
        assert len(listed) == 2 and first_key not in "\n".join(listed) and all("in use" in line for line in listed)
        revoked = runner.invoke(cli.main, ["org", "revoke-key", listed[0].split()[0]])
        assert revoked.exit_code == 0, revoked.output
        assert client.get(f"{API}/connections", headers={"Authorization": f"Bearer {first_key}"}).status_code == 401
        assert client.get(f"{API}/connections", headers={"Authorization": f"Bearer {second_key}"}).status_code == 200
    assert runner.invoke(cli.main, ["org", "keys", "nope"]).exit_code == 1


VAULT = ProviderInfo(name="vault", label="Vault", category="test", auth_type="api_key",
                     urls={"api": "https://vault.invalid"},
                     credential_fields=(EntityField("api_key", "API key", required=True),))


def registry_with_vault(revoked: list[str]) -> PluginRegistry:
    """The example provider, and one whose connections are revoked at deletion (the keys it was given, in ``revoked``)."""
    import hub_example

    registry = PluginRegistry()
    registry.register(hub_example, "example")
    registry.register(module_plugin("vault_plugin", VAULT, [EntitySchema("things", "Things")],
                                    disconnect=lambda ctx: revoked.append(ctx.credentials["api_key"])), "vault")
    return registry


def test_a_changed_secret_key_is_a_clear_error_and_leaves_connections_repairable(settings, example_fake, monkeypatch,
                                                                                caplog):
    """A data directory lost with its secret.key (a container restarted
    without its volume) made every use of a connection a 500, and it could
    neither be given new credentials nor deleted."""
    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    revoked: list[str] = []
    first = create_app(settings, registry_with_vault(revoked))
    with TestClient(first) as client:
        auth = make_org(first)
        auth.pop("org_id")
        notes = connect(client, auth)
        vault = client.post(f"{API}/connections", json={"provider": "vault", "credentials": {"api_key": "vk_live_1"}},
                            headers=auth).json()["connection"]
        client.post(f"{API}/event-endpoints", json={"url": "https://app.example.com/hub-events"}, headers=auth)
    changed = settings.model_copy(update={"secret_key": "another-key"})
    app = create_app(changed, registry_with_vault(revoked))
    with caplog.at_level(logging.ERROR, logger="hub"), TestClient(app) as client:
        assert "2 connections have credentials this hub's secret key cannot decrypt" in caplog.text
        assert "1 event endpoint has a signing secret this hub's secret key cannot decrypt" in caplog.text
        records = f"{API}/connections/{notes['id']}/entities/notes/records"
        refused = client.get(records, headers=auth)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "credentials_unreadable"
        assert "HUB_PREVIOUS_SECRET_KEY" in refused.json()["error"]
        assert client.post(f"{API}/connections/{notes['id']}/test", headers=auth).json()["code"] == \
            "credentials_unreadable"
        # A sync says so too (it was internal_error), and so does the connection.
        from tests.sync_support import wait_run

        started = client.post(f"{API}/connections/{notes['id']}/sync", json={"entity": "notes"}, headers=auth)
        failed = wait_run(client, auth, notes["id"], started.json()["run"]["id"])
        assert (failed["status"], failed["error_code"]) == ("failed", "credentials_unreadable"), failed
        shown = client.get(f"{API}/connections/{notes['id']}", headers=auth).json()["connection"]
        assert shown["status"] == "error" and "HUB_PREVIOUS_SECRET_KEY" in shown["last_error"]
        # Nothing to merge a partial change into: every required field must come again.
        partial = client.put(f"{API}/connections/{notes['id']}", json={"credentials": {"webhook_secret": "whsec_2"}},
                             headers=auth)
        assert partial.status_code == 422 and partial.json()["code"] == "missing_fields", partial.text
        assert client.get(records, headers=auth).status_code == 409
        repaired = client.put(f"{API}/connections/{notes['id']}", json={"credentials": {
            "api_key": API_KEY, "webhook_secret": WEBHOOK_SECRET}}, headers=auth)
        assert repaired.status_code == 200, repaired.text
        assert client.get(records, headers=auth).status_code == 200
        # Deleted all the same; its grant is kept for when the key that encrypted it is back.
        assert client.delete(f"{API}/connections/{vault['id']}", headers=auth).status_code == 200
        assert client.get(f"{API}/connections/{vault['id']}", headers=auth).status_code == 404
    assert revoked == []
    restored = create_app(changed.model_copy(update={"previous_secret_key": settings.secret_key}),
                          registry_with_vault(revoked))
    with TestClient(restored):
        import asyncio

        from hub.services.connections import retry_revocations

        hub = restored.state.hub
        assert asyncio.run(retry_revocations(hub, now=datetime.now(timezone.utc) + timedelta(days=1))) == 1
    assert revoked == ["vk_live_1"]


def test_a_previous_key_decrypts_until_reencrypt_moves_every_secret_to_the_new_key(settings, example_registry,
                                                                                   example_fake, monkeypatch):
    from click.testing import CliRunner

    from hub import cli

    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    first = create_app(settings, example_registry)
    with TestClient(first) as client:
        auth = make_org(first)
        auth.pop("org_id")
        notes = connect(client, auth)
        records = f"{API}/connections/{notes['id']}/entities/notes/records"
        assert client.get(records, headers=auth).status_code == 200
    new_key = settings.model_copy(update={"secret_key": "the-new-key"})
    rotating = create_app(new_key.model_copy(update={"previous_secret_key": settings.secret_key}), example_registry)
    with TestClient(rotating) as client:
        assert client.get(records, headers=auth).status_code == 200
        monkeypatch.setattr(cli, "_hub", lambda: rotating.state.hub)
        result = CliRunner().invoke(cli.main, ["reencrypt"])
        assert result.exit_code == 0, result.output
        assert "rewritten with the current key: 1; already under it: 0" in result.output
        again = CliRunner().invoke(cli.main, ["reencrypt"])
        assert "rewritten with the current key: 0; already under it: 1" in again.output
    with TestClient(create_app(new_key, example_registry)) as client:
        assert client.get(records, headers=auth).status_code == 200
    # The old key alone reads nothing any more.
    with TestClient(create_app(settings, example_registry)) as client:
        assert client.get(records, headers=auth).json()["code"] == "credentials_unreadable"


def test_every_secret_is_sealed_with_a_nonce_of_its_own_under_the_hubs_key():
    """AES-GCM with a repeated nonce leaks the plaintexts and lets them be forged."""
    import base64

    from hub.crypto import Cipher, DecryptionError

    cipher = Cipher("key-a")
    sealed = [cipher.encrypt("sk_live_same") for _ in range(50)]
    nonces = {base64.urlsafe_b64decode(token[3:])[:12] for token in sealed}
    assert len(nonces) == 50 and len(set(sealed)) == 50
    assert {cipher.decrypt(token) for token in sealed} == {"sk_live_same"}
    for other_key in ("key-b", "", "key-a "):
        with pytest.raises(DecryptionError):
            Cipher(other_key or "x").decrypt(sealed[0])
    tampered = sealed[0][:-4] + ("AAAA" if not sealed[0].endswith("AAAA") else "BBBB")
    with pytest.raises(DecryptionError):
        cipher.decrypt(tampered)


def test_a_revocation_failing_in_a_way_not_known_to_be_final_is_tried_again(settings):
    """Any refusal but a passing one was taken as final: an odd answer during
    DELETE (a proxy's HTML page) left the grant live, never retried."""
    from hub.models import PendingRevocation
    from hub.types import ProviderError

    answers = iter([ProviderError("the provider answered an HTML page"), None])

    def disconnect(ctx):
        failure = next(answers)
        if failure is not None:
            raise failure
        return True
    registry = PluginRegistry()
    registry.register(module_plugin("flaky_vault", VAULT, [EntitySchema("things", "Things")], disconnect=disconnect),
                      "vault")
    app = create_app(settings, registry)
    with TestClient(app) as client:
        auth = make_org(app)
        auth.pop("org_id")
        vault = client.post(f"{API}/connections", json={"provider": "vault", "credentials": {"api_key": "vk_1"}},
                            headers=auth).json()["connection"]
        deleted = client.delete(f"{API}/connections/{vault['id']}", headers=auth)
        assert deleted.json() == {"success": True, "revocation": "pending"}, deleted.text
        hub = app.state.hub
        with hub.session() as session:
            assert len(session.exec(sa.select(PendingRevocation)).all()) == 1
        import asyncio

        from hub.services.connections import retry_revocations

        assert asyncio.run(retry_revocations(hub, now=datetime.now(timezone.utc) + timedelta(days=1))) == 1


def test_an_organization_name_taken_already_is_refused_unless_asked(settings, monkeypatch):
    """Run twice by a script, `hub org create acme` made two tenants org list could not tell apart."""
    from click.testing import CliRunner

    from hub import cli
    from hub.models import Organization
    from hub.runtime import Hub

    hub = Hub(settings)
    hub.migrate()
    monkeypatch.setattr(cli, "_hub", lambda: hub)
    runner = CliRunner()
    assert runner.invoke(cli.main, ["org", "create", "acme"]).exit_code == 0
    again = runner.invoke(cli.main, ["org", "create", " acme "])
    assert again.exit_code == 1 and "exists already" in again.output and "hub org new-key " in again.output
    assert runner.invoke(cli.main, ["org", "create", "acme", "--allow-duplicate"]).exit_code == 0
    with hub.session() as session:
        assert sorted(session.execute(sa.select(Organization.name)).scalars()) == ["acme", "acme"]


def test_two_machines_started_together_on_a_new_database_without_a_key_do_not_each_make_one(settings, tmp_path,
                                                                                           example_registry):
    """Each made a secret.key of its own: what one sealed, the other could not
    open, and its users' connections said credentials_unreadable."""
    from hub.config import SettingsError

    first, second = (Hub(settings.model_copy(update={"secret_key": None, "data_dir": tmp_path / machine}),
                         example_registry) for machine in ("one", "two"))
    assert first.made_secret_key and second.made_secret_key
    first.migrate()
    with pytest.raises(SettingsError, match="set the same HUB_SECRET_KEY on every process"):
        second.migrate()
    assert not (tmp_path / "two" / "secret.key").exists()  # (a restart must not take it for the database's key)
    again = Hub(settings.model_copy(update={"secret_key": None, "data_dir": tmp_path / "two"}), example_registry)
    with pytest.raises(SettingsError):
        again.migrate()
    (tmp_path / "two" / "secret.key").write_text((tmp_path / "one" / "secret.key").read_text())
    copied = Hub(settings.model_copy(update={"secret_key": None, "data_dir": tmp_path / "two"}), example_registry)
    assert not copied.made_secret_key
    copied.migrate()
    sealed = copied.cipher.encrypt("a token")
    assert first.cipher.decrypt(sealed) == "a token"
    first.migrate()  # (a later start of the first machine: the check is its key's)
    for hub in (first, second, again, copied):
        hub.engine.dispose()


def test_a_key_set_on_purpose_that_is_not_the_databases_is_logged_until_reencrypt_adopts_it(settings, caplog,
                                                                                            example_registry,
                                                                                            monkeypatch):
    from click.testing import CliRunner

    from hub import cli

    Hub(settings, example_registry).migrate()
    replaced = Hub(settings.model_copy(update={"secret_key": "a-key-replacing-a-lost-one"}), example_registry)
    with caplog.at_level(logging.ERROR, logger="hub"):
        replaced.migrate()  # (started: its connections can be given their credentials again)
    assert "not the one the database's secrets were sealed with" in caplog.text
    monkeypatch.setattr(cli, "_hub", lambda: replaced)
    result = CliRunner().invoke(cli.main, ["reencrypt"])
    assert result.exit_code == 0, result.output
    assert "is now sealed with the current key" in result.output
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="hub"):
        Hub(settings.model_copy(update={"secret_key": "a-key-replacing-a-lost-one"}), example_registry).migrate()
        assert caplog.text == ""
        Hub(settings, example_registry).migrate()  # the old key is now the odd one out
    assert "not the one the database's secrets were sealed with" in caplog.text
