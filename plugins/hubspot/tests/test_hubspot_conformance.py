"""The hub's conformance suite against the fake HubSpot server: provider
info, schemas, pagination, since, CRUD, errors, auth and webhooks, through the
hub's API. Every failure says what to fix."""

from hub.testing.conformance import ConformanceSuite, ConformanceTarget
from hub_hubspot import testing as fake


class TestHubspotConformance(ConformanceSuite):
    target = ConformanceTarget(
        provider="hubspot",
        fake_app=fake.create_app,
        settings={"client_id": fake.CLIENT_ID, "client_secret": fake.CLIENT_SECRET},
        expire_tokens=fake.expire_tokens,
        seed=fake.seed,
        samples={"contacts": {"name": "Ada Lovelace", "email": "ada@example.com"}},
        webhook=fake.conformance_webhook,
    )
