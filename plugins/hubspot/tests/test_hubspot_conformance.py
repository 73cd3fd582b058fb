"""The hub's conformance suite against the HubSpot plugin and its fake, through
the hub's API: provider info, schemas, pagination, since (by search), CRUD,
errors, the OAuth flow, token refresh and webhooks."""

from __future__ import annotations

import functools

import hub_hubspot
from hub.testing.conformance import ConformanceSuite, ConformanceTarget
from hub_hubspot import testing as fake


class TestHubspotConformance(ConformanceSuite):
    target = ConformanceTarget(
        provider="hubspot",
        plugin=hub_hubspot,
        # Windows the suite's calls stay within, on both sides (the limits have tests of their own).
        fake_app=functools.partial(fake.create_app, ten_secondly=(10_000, 10.0), search_per_second=1000),
        settings={"client_id": fake.CLIENT_ID, "client_secret": fake.CLIENT_SECRET, "burst": "10000",
                  "rate_limits": "off"},
        seed=fake.seed,
        samples={
            "contacts": {"properties": {"email": "ada@example.com", "firstname": "Ada", "lastname": "Lovelace"}},
            "companies": {"properties": {"name": "Analytical Engines", "domain": "engines.example.com"}},
            "deals": {"properties": {"dealname": "Engine No. 2", "dealstage": "appointmentscheduled",
                                     "amount": "1500"}},
            "tickets": {"properties": {"subject": "Gear jammed", "hs_pipeline": "0", "hs_pipeline_stage": "1"}},
        },
        updates={
            "contacts": {"properties": {"firstname": "Grace"}},
            "companies": {"properties": {"name": "Difference Engines"}},
            "deals": {"properties": {"amount": "2000"}},
            "tickets": {"properties": {"hs_ticket_priority": "HIGH"}},
        },
        webhook=fake.conformance_webhook,
        expire_tokens=fake.expire_tokens,
    )
