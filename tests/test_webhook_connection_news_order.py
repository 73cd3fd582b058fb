"""Connection-status webhooks (Plaid ITEM ERROR / LOGIN_REPAIRED) count in the
order they happened, not in the order they arrived."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

import hub_plaid
from hub.api.main import create_app
from hub.config import Settings
from hub.models import WebhookEvent
from hub.plugins import PluginRegistry
from hub.services.orgs import create_organization
from hub_plaid.testing import CLIENT_ID, SECRET
from hub_plaid.testing import create_app as create_fake

API = "/api/v1/integrations"
URL = f"{API}/webhooks/plaid"
WEBHOOK_URL = "http://testserver/api/v1/integrations/webhooks/plaid"


@pytest.fixture
def plaid(serve_app, monkeypatch):
    app = create_fake(transactions=5, institutions=5)
    fake = app.state.plaid
    fake.url = serve_app(app)
    for key, value in {"ORIGIN": fake.url, "CLIENT_ID": CLIENT_ID, "SECRET": SECRET, "CLIENT_NAME": "Acme",
                       "REQUESTS_PER_SECOND": "200", "BURST": "200", "ENDPOINT_RATE_LIMITS": "off"}.items():
        monkeypatch.setenv(f"HUB_PLAID_{key}", value)
    for key in ("HUB_PLAID_ENVIRONMENT", "HUB_PLAID_WEBHOOK", "HUB_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    hub_plaid._verification_keys.clear()
    hub_plaid._key_lookups.clear()
    hub_plaid._refused_kids.clear()
    return fake


@pytest.fixture
def plaid_hub(tmp_path, plaid):
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                        http_retry_attempts=3, http_retry_base_delay=0.01, run_scheduler=False)
    registry = PluginRegistry()
    registry.register(hub_plaid, "plaid")
    app = create_app(settings, registry)
    with TestClient(app) as client:
        with app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        yield app, client, {"Authorization": f"Bearer {key}"}


def _link(client, auth, fake, institution_id="ins_109508"):
    token = client.post(f"{API}/link/plaid/token", json={"user_id": "user-1", "options": {"webhook": WEBHOOK_URL}},
                        headers=auth)
    assert token.status_code == 200, token.text
    link_token = token.json()["link_token"]
    public_token = fake.create_public_token(institution_id, link_token=link_token)
    metadata = {"institution": {"institution_id": institution_id, "name": fake.institutions[institution_id]["name"]}}
    response = client.post(f"{API}/link/plaid/exchange", json={
        "public_token": public_token, "link_token": link_token, "metadata": metadata}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["connection"]


def _wait(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout}s"
        time.sleep(0.05)


def test_an_older_item_error_delivered_after_the_repair_does_not_break_the_connection_again(plaid, plaid_hub):
    """Plaid says the Item broke at t-60 and was repaired at t-10; the repair is
    delivered first, the (older) error retried after it. The connection works:
    it must end `connected`, as the later of the two events says."""
    app, client, auth = plaid_hub
    fake = plaid
    connection = _link(client, auth, fake)
    item = fake.item()
    path = f"{API}/connections/{connection['id']}"
    now = int(time.time())

    def events_done():
        with app.state.hub.session() as session:
            return all(e.status != "pending" for e in session.exec(select(WebhookEvent)))

    # First the connection is in error (an earlier ERROR), so the repair has something to repair.
    fake.break_item(item.item_id)
    body, headers = fake.signed_delivery(fake.webhook(item.item_id, "ITEM", "ERROR"), iat=now - 120)
    assert client.post(URL, content=body, headers=headers).json()["received"] == 1
    _wait(lambda: client.get(path, headers=auth).json()["connection"]["status"] == "error", "first error")

    # The repair (t-10) arrives, then a retried older ERROR (t-60) of the breakage before it.
    fake.mend_item(item.item_id)
    error_payload = fake.webhook(item.item_id, "ITEM", "ERROR", error={
        "error_type": "ITEM_ERROR", "error_code": "ITEM_LOGIN_REQUIRED", "error_message": "login required",
        "display_message": None, "status": 400})
    repaired = fake.signed_delivery(fake.webhook(item.item_id, "ITEM", "LOGIN_REPAIRED"), iat=now - 10)
    assert client.post(URL, content=repaired[0], headers=repaired[1]).json()["received"] == 1
    _wait(lambda: client.get(path, headers=auth).json()["connection"]["status"] == "connected", "the repair")
    late = fake.signed_delivery(error_payload, iat=now - 60)
    assert client.post(URL, content=late[0], headers=late[1]).json()["received"] == 1
    _wait(events_done, "the late error looked at")
    got = client.get(path, headers=auth).json()["connection"]
    assert (got["status"], got["last_error"]) == ("connected", None), got
