"""Helpers shared by the Plaid plugin tests (a uniquely named module, not a package)."""

from __future__ import annotations

import hub_plaid
from hub.api.main import create_app
from hub.config import Settings
from hub.plugins import PluginRegistry

API = "/api/v1/integrations"
WEBHOOK_URL = "http://testserver/api/v1/integrations/webhooks/plaid"


def build_hub_app(data_dir):
    """The hub with only the Plaid plugin, on SQLite in ``data_dir``, with fast retries.
    Provider settings are read from the environment on first use: set them before."""
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir}/hub.db", secret_key="x",
                        http_retry_attempts=3, http_retry_base_delay=0.01, run_scheduler=False)
    registry = PluginRegistry()
    registry.register(hub_plaid, "plaid")
    return create_app(settings, registry)


def link(client, auth, fake, institution_id="ins_109508", **options):
    """Run the Link flow through the hub: link token, Link (the fake), exchange."""
    options = {"webhook": WEBHOOK_URL, **options}
    token = client.post(f"{API}/link/plaid/token", json={"user_id": "user-1", "options": options}, headers=auth)
    assert token.status_code == 200, token.text
    link_token = token.json()["link_token"]
    public_token = fake.create_public_token(institution_id, link_token=link_token)
    metadata = {"institution": {"institution_id": institution_id, "name": fake.institutions[institution_id]["name"]}}
    response = client.post(f"{API}/link/plaid/exchange", json={
        "public_token": public_token, "link_token": link_token, "metadata": metadata}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["connection"]


def records_url(connection, entity):
    return f"{API}/connections/{connection['id']}/entities/{entity}/records"


def list_pages(client, auth, url, limit, max_pages=50, before_page=None, cursor=None):
    """Follow next_cursor to the end (bounded); ``before_page(n)`` runs before page n (1-based)."""
    pages = []
    for number in range(1, max_pages + 1):
        if before_page:
            before_page(number)
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = client.get(url, params=params, headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body)
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None)
        if cursor is None:
            return pages
    raise AssertionError(f"still paging after {max_pages} pages")
