"""A signing key the identity provider withdrew from its JWKS
(rotated out, or compromised) must stop authenticating once the hub's cached
key set has expired."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hub.api.main import create_app
from tests.conftest import API


@pytest.fixture
def idp(serve_app):
    """An identity provider whose JWKS lists the keys in ``app.state.keys`` (kid -> private key)."""
    app = FastAPI()
    app.state.keys = {}
    app.state.fetches = 0

    @app.get("/.well-known/jwks.json")
    async def keys():
        app.state.fetches += 1
        return {"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid,
                          "use": "sig", "alg": "RS256"} for kid, key in app.state.keys.items()]}

    return serve_app(app) + "/.well-known/jwks.json", app


def test_a_key_withdrawn_from_the_jwks_stops_authenticating(settings, example_registry, example_fake,
                                                            monkeypatch, idp):
    url, provider = idp
    old, new = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    provider.state.keys = {"old": old}
    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    settings.jwt_jwks_url = url

    def bearer(key, kid):
        claims = {"exp": int(time.time()) + 3600, "org": "initech"}
        return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})}

    with TestClient(create_app(settings, example_registry)) as client:
        assert client.get(f"{API}/connections", headers=bearer(old, "old")).status_code == 200
        # The identity provider rotates the key out (it leaked): its JWKS lists only the new one.
        provider.state.keys = {"new": new}
        # Past the key set's cache lifetime (5 minutes) and the refetch cooldown.
        later = time.monotonic() + 3600
        monkeypatch.setattr("jwt.jwk_set_cache.time.monotonic", lambda: later)
        monkeypatch.setattr("jwt.jwks_client.time.monotonic", lambda: later)
        assert client.get(f"{API}/connections", headers=bearer(new, "new")).status_code == 200
        assert provider.state.fetches == 2  # the hub did read the new key set
        withdrawn = client.get(f"{API}/connections", headers=bearer(old, "old"))
        assert withdrawn.status_code == 401, "a key the JWKS no longer lists still authenticates"


def test_a_token_addressed_to_another_audience_is_refused_when_no_audience_is_configured(
        settings, example_registry, example_fake, monkeypatch, idp):
    """An identity provider (Auth0, Okta, Cognito) signs the tokens of every
    API it serves with the keys of one JWKS. Without HUB_JWT_AUDIENCE the hub
    turns PyJWT's audience check off altogether, so a token explicitly
    addressed to another API (``aud: "billing-api"``) is taken as one for the
    hub: whoever holds a token of any sibling API that carries the org claim
    acts as that organization here. PyJWT's default refuses a token naming an
    audience the verifier did not ask for; the hub should too (or require
    HUB_JWT_AUDIENCE with a JWKS)."""
    url, provider = idp
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider.state.keys = {"k1": key}
    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    settings.jwt_jwks_url = url
    claims = {"exp": int(time.time()) + 3600, "org": "initech", "aud": "billing-api"}
    other_apis = {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})}
    with TestClient(create_app(settings, example_registry)) as client:
        response = client.get(f"{API}/connections", headers=other_apis)
        assert response.status_code == 401, "a token addressed to another API authenticated an organization"
