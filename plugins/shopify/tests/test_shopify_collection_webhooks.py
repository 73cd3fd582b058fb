"""collections/* deliveries (smart collections too) bring a pull, not a record taken for a custom collection."""

from __future__ import annotations

from sqlmodel import select

from hub.models import WebhookEvent
from hub_shopify.testing import signed_delivery

API = "/api/v1/integrations"


def test_a_collections_delivery_is_not_applied_as_a_custom_collection(shopify):
    """Shopify's ``collections/*`` topics fire for smart collections as well as
    custom ones, and the payload does not say which. The plugin's
    ``collections`` entity is custom collections only (custom_collections.json),
    so the body of a ``collections/create`` of a smart collection was applied
    as a custom collection: stored among them, then taken for deleted by the
    next full pass (not in custom_collections.json), and an update of it PUT
    to custom_collections/{id}.json (404). Without telling the two apart (a
    GET of custom_collections/{id}.json) the event must bring a pull, not
    carry the body as the record."""
    shopify.connect()
    smart = {"id": 1063001322, "handle": "summer", "title": "Summer (smart: tag = summer)",
             "updated_at": "2025-01-02T10:00:00-05:00", "body_html": None, "published_at": None,
             "sort_order": "best-selling", "template_suffix": None, "published_scope": "web",
             "admin_graphql_api_id": "gid://shopify/Collection/1063001322"}
    body, headers = signed_delivery("collections/create", smart)
    assert shopify.client.post(f"{API}/webhooks/shopify", content=body, headers=headers).json()["received"] == 1
    with shopify.hub_app.state.hub.session() as session:
        [event] = session.exec(select(WebhookEvent)).all()
    assert not (event.entity == "collections" and event.payload is not None), (
        event.entity, event.action, event.payload)
