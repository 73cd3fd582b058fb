"""HEAD is answered as GET except on the OAuth routes, whose GETs act: a HEAD
of the callback URL (a link checker's, a mail scanner's, a prefetch) would
spend the single-use state and code, and the user's own GET fail."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from tests.sync_support import API, _api_settings


def test_a_head_of_the_oauth_callback_does_not_finish_the_flow(serve_app, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from hub.api.main import create_app
    from hub.plugins import PluginRegistry
    from hub.services.orgs import create_organization
    import hub_shopify
    from hub_shopify import testing as fake

    shop = fake.create_app(products=0, capacity=40, leak_per_second=50.0)
    url = serve_app(shop)
    settings = _api_settings(tmp_path, monkeypatch)
    for key, value in {"ORIGIN": url, "CLIENT_ID": fake.CLIENT_ID, "CLIENT_SECRET": fake.CLIENT_SECRET,
                       "REQUESTS_PER_SECOND": "50"}.items():
        monkeypatch.setenv(f"HUB_SHOPIFY_{key}", value)
    registry = PluginRegistry()
    registry.register(hub_shopify, "shopify")
    app = create_app(settings, registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        with app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        auth = {"Authorization": f"Bearer {key}"}
        r = client.get(f"{API}/oauth/shopify/authorize",
                       params={"shop": fake.SHOP, "redirect_uri": "https://app.example.com/done"}, headers=auth)
        assert r.status_code == 200, r.text
        consent = httpx.get(r.json()["authorization_url"], follow_redirects=False, timeout=10)
        query = {k: v[0] for k, v in parse_qs(urlsplit(consent.headers["location"]).query).items()}
        head = client.head(f"{API}/oauth/shopify/callback", params=query, follow_redirects=False)
        assert (head.status_code, head.headers["Allow"]) == (405, "GET")
        assert client.head(f"{API}/oauth/shopify/authorize", params={"shop": fake.SHOP}, headers=auth).status_code \
            == 405
        back = client.get(f"{API}/oauth/shopify/callback", params=query, follow_redirects=False)
        assert back.status_code == 302, (head.status_code, head.headers.get("location"), back.status_code,
                                         back.text)
        result = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["location"]).query).items()}
        assert result["status"] == "connected", (head.status_code, head.headers.get("location"), result)
