"""Authentication answers: what a JWT's claims may hold, and the 401's challenge."""

from __future__ import annotations

import time

import jwt
from fastapi.testclient import TestClient

from hub.api.main import create_app

from tests.conftest import API

SECRET = "jwt-shared-secret-for-tests-0123456789"


def _bearer(claims: dict) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode({"exp": int(time.time()) + 60, **claims}, SECRET,
                                                    algorithm="HS256")}


def test_an_org_name_holding_a_lone_surrogate_is_no_500(settings, example_registry):
    """``orgs._printable_name`` drops Cc and Cf characters from ``org_name``
    but not a lone surrogate (category Cs: ``"\\ud800"`` in the token's JSON),
    which no database driver can encode: the adopting INSERT raises
    UnicodeEncodeError and every request with the token is 500
    ``internal_error``. The request bodies refuse lone surrogates as
    invalid_json (hub/api/bodies.py); a name should drop them like control characters."""
    settings.jwt_secret = SECRET
    with TestClient(create_app(settings, example_registry), raise_server_exceptions=False) as client:
        response = client.get(f"{API}/connections", headers=_bearer({"org": "acme-7", "org_name": "Acme \ud800"}))
        assert response.status_code != 500, response.text
        assert response.status_code == 200 or response.json()["code"] == "invalid_token", response.text


def test_a_boolean_org_claim_is_refused(settings, example_registry):
    """``isinstance(org_id, (str, int))`` lets ``true`` through (bool is an
    int): a token whose org claim is a flag (a misconfigured identity
    provider) authenticates as an organization named ``"True"``, one tenant
    for every such token, where a list or object claim is ``invalid_token``."""
    settings.jwt_secret = SECRET
    with TestClient(create_app(settings, example_registry), raise_server_exceptions=False) as client:
        response = client.get(f"{API}/connections", headers=_bearer({"org": True}))
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "invalid_token"


def test_a_401_names_its_bearer_challenge(client, auth):
    """RFC 9110 15.5.2: a server generating a 401 MUST send WWW-Authenticate
    with at least one challenge. The hub's 401s (missing_credentials,
    invalid_api_key) carry none, so a standard client cannot tell which scheme to
    use (FastAPI's own HTTPBearer sends ``WWW-Authenticate: Bearer``)."""
    for headers in ({}, {"Authorization": "Bearer hub_not-a-key"}):
        response = client.get(f"{API}/connections", headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), dict(response.headers)
