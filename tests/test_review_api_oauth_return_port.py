"""An OAuth ``redirect_uri`` whose port is no port is taken by
``GET /oauth/{provider}/authorize`` (200): ``oauth._check_return_url`` reads
``urlsplit(url).hostname`` inside its try but never ``.port``, which is what
raises ValueError for ``:abc`` or ``:99999``. The flow then runs to its end: the
callback connects the account and answers 302 with ``Location:
https://app.example.com:abc/x?status=connected...``, a URL no browser follows,
so the user is stranded and the app never learns the outcome. README: the
return page must be a valid URL on a listed host, refused as
``invalid_redirect_uri`` (422) otherwise, which is what a malformed host already gets."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.plugins import PluginRegistry

from tests.conftest import API, make_org
from tests.oauth_provider import build_plugin


@pytest.mark.parametrize("redirect_uri", ["https://app.example.com:abc/x", "https://app.example.com:99999/x",
                                          "https://app.example.com:0/x"])
def test_a_redirect_uri_with_an_impossible_port_is_refused(settings, monkeypatch, redirect_uri):
    monkeypatch.setenv("HUB_OAUTHEX_CLIENT_ID", "cid")
    monkeypatch.setenv("HUB_OAUTHEX_CLIENT_SECRET", "csecret")
    registry = PluginRegistry()
    registry.register(build_plugin(), "oauthex")
    settings.oauth_return_hosts = "app.example.com"
    app = create_app(settings, registry)
    with TestClient(app) as client:
        headers = make_org(app)
        headers.pop("org_id")
        response = client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": redirect_uri},
                              headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_redirect_uri"
