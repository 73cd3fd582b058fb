"""Review of Plaid's inbound webhooks: findings shown as failing tests."""

from __future__ import annotations

import time

import httpx
from plaid_helpers import API, link
from sqlmodel import select

from hub.models import WebhookEvent
from hub.services.orgs import create_organization
from hub_plaid.testing import API_VERSION, CLIENT_ID, SECRET

URL = f"{API}/webhooks/plaid"
HEADERS = {"PLAID-CLIENT-ID": CLIENT_ID, "PLAID-SECRET": SECRET, "Plaid-Version": API_VERSION}


def _access_token(fake) -> tuple[str, str]:
    """A new Item at the fake, exchanged outside the hub: (access_token, item_id)."""
    with httpx.Client(base_url=fake.url, headers=HEADERS, timeout=10) as plaid:
        public = plaid.post("/sandbox/public_token/create",
                            json={"institution_id": "ins_109508", "initial_products": ["transactions"]})
        exchanged = plaid.post("/item/public_token/exchange",
                               json={"public_token": public.json()["public_token"]}).json()
    return exchanged["access_token"], exchanged["item_id"]


def test_a_typed_access_token_connection_refuses_another_items_delivery(client, auth, fake, hub_app):
    """A connection made from a typed access token keeps its Item as its
    provider_account, not in its config: verify_webhook compares the body's
    item_id with ``config["item_id"]`` only, so a Plaid-signed delivery of any
    other Item sent to its per-connection URL (``?connection_id=``) is taken
    as its own: an ITEM ERROR of someone else's Item breaks it."""
    other = link(client, auth, fake)  # another organization's Item, linked through Link
    with hub_app.state.hub.session() as session:
        _org, key = create_organization(session, "typed")
    token, item_id = _access_token(fake)
    typed = client.post(f"{API}/connections", json={"provider": "plaid", "credentials": {"access_token": token}},
                        headers={"Authorization": f"Bearer {key}"})
    assert typed.status_code == 201, typed.text
    typed = typed.json()["connection"]
    assert typed["provider_account"] == item_id and other["provider_account"] != item_id

    fake.break_item(other["provider_account"])
    payload = fake.webhook(other["provider_account"], "ITEM", "ERROR")
    body, headers = fake.signed_delivery(payload)
    answer = client.post(f"{URL}?connection_id={typed['id']}", content=body, headers=headers)

    def events() -> list[WebhookEvent]:
        with hub_app.state.hub.session() as session:
            return list(session.exec(select(WebhookEvent).where(WebhookEvent.connection_id == typed["id"])))

    deadline = time.monotonic() + 10
    while any(e.status == "pending" for e in events()) and time.monotonic() < deadline:
        time.sleep(0.1)  # (the hub's webhook processor applies what was stored)
    status = client.get(f"{API}/connections/{typed['id']}", headers={"Authorization": f"Bearer {key}"})
    # Today: 200, the other Item's ITEM ERROR stored as this connection's, and the connection in error.
    assert (answer.status_code, [e.type for e in events()], status.json()["connection"]["status"]) == (
        401, [], "connected")
