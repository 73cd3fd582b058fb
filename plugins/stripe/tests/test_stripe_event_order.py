"""Stripe events (of records without a modification time, versioned by the
event's `created`) delivered out of order: the newest wins."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

import hub_stripe
from hub.api.main import create_app
from hub.config import Settings
from hub.models import SyncRecord, WebhookEvent
from hub.plugins import PluginRegistry
from hub.services.orgs import create_organization
from hub_stripe.testing import API_KEY, make_event, signed_delivery
from hub_stripe.testing import create_app as create_fake

API = "/api/v1/integrations"
SECRET = "whsec_review2secret"


@pytest.fixture
def stripe_hub(tmp_path, serve_app, monkeypatch):
    fake = create_fake(available=50_000)
    monkeypatch.setenv("HUB_STRIPE_ORIGIN", serve_app(fake))
    for key in ("HUB_PLUGINS", "HUB_DATABASE_URL", "HUB_SECRET_KEY", "HUB_STRIPE_REQUESTS_PER_SECOND",
                "HUB_STRIPE_BURST"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                        http_retry_attempts=3, http_retry_base_delay=0.02, run_scheduler=False)
    registry = PluginRegistry()
    registry.register(hub_stripe, "stripe")
    app = create_app(settings, registry)
    with TestClient(app) as client:
        app.state.webhook_processor.poll_seconds = 0.05
        with app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        auth = {"Authorization": f"Bearer {key}"}
        body = {"provider": "stripe", "credentials": {"api_key": API_KEY, "webhook_secret": SECRET}}
        created = client.post(f"{API}/connections", json=body, headers=auth)
        assert created.status_code == 201, created.text
        yield app, client, auth, created.json()["connection"]


def _wait(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout}s"
        time.sleep(0.05)


def test_an_older_event_delivered_last_does_not_win_over_a_newer_one_with_the_stored_content(stripe_hub):
    """A customer's name goes A (t-30) -> B (t-20) -> A (t-10). Stripe delivers
    the first and the last, then retries the middle one late. The customer is A
    (the newest event says so); the hub ends with B, because the t-10 event,
    whose content equals what is stored, did not move the stored version on."""
    app, client, _auth, connection = stripe_hub
    hub = app.state.hub
    url = f"{API}/webhooks/stripe?connection_id={connection['id']}"
    now = int(time.time())
    customer = {"id": "cus_Order1", "object": "customer", "email": "o@example.com", "metadata": {}}
    events = {
        "evt_A1": make_event("customer.updated", {**customer, "name": "A"}, event_id="evt_A1", created=now - 30),
        "evt_B": make_event("customer.updated", {**customer, "name": "B"}, event_id="evt_B", created=now - 20),
        "evt_A2": make_event("customer.updated", {**customer, "name": "A"}, event_id="evt_A2", created=now - 10),
    }

    def processed(event_id):
        with hub.session() as session:
            return session.exec(select(WebhookEvent).where(WebhookEvent.dedup_key == event_id)).one().status \
                == "processed"

    for event_id in ("evt_A1", "evt_A2", "evt_B"):
        body, headers = signed_delivery(SECRET, events[event_id])
        answer = client.post(url, content=body, headers=headers)
        assert answer.status_code == 200 and answer.json()["received"] == 1, answer.text
        _wait(lambda: processed(event_id), f"{event_id} applied")
    with hub.session() as session:
        row = session.exec(select(SyncRecord).where(SyncRecord.remote_id == "cus_Order1")).one()
    assert row.data["name"] == "A", (row.data["name"], row.remote_updated_at)
