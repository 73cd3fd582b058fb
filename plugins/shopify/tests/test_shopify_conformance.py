"""The hub's provider conformance suite against the Shopify plugin and its fake shop."""

from __future__ import annotations

import functools

from hub.testing.conformance import ConformanceSuite, ConformanceTarget
from hub_shopify import testing as fake


class TestShopifyConformance(ConformanceSuite):
    target = ConformanceTarget(
        provider="shopify",
        fake_app=functools.partial(fake.create_app, leak_per_second=50.0),
        settings={"client_id": fake.CLIENT_ID, "client_secret": fake.CLIENT_SECRET, "requests_per_second": "50"},
        authorize_params={"shop": fake.SHOP},
        seed=fake.seed,
        samples={
            "products": {"title": "Conformance board", "vendor": "Acme"},
            "orders": {"email": "conformance@example.com",
                       "line_items": [{"title": "Board", "price": "100.00", "quantity": 1}]},
            "customers": {"first_name": "Ada", "last_name": "Lovelace"},  # created twice: no unique email
            "collections": {"title": "Conformance collection"},
        },
        updates={"customers": {"first_name": "Grace"}, "orders": {"note": "gift wrap"}},
        webhook=fake.conformance_webhook,
        expire_tokens=fake.expire_tokens,
    )
