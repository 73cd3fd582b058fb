"""Provider plugins derived from the example provider, each broken in one way
the conformance suite must catch (``tests/test_conformance.py``), and the
conformance target of the example provider they all share."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from types import ModuleType

from hub.testing.conformance import ConformanceTarget, Harness

WEBHOOK_SECRET = "whsec_conformance"


def seed(app, entity: str, count: int) -> list[str]:
    """Create ``count`` records of ``entity`` on the Example Notes fake."""
    if entity == "notes":
        now = lambda: datetime.now(timezone.utc).isoformat()  # noqa: E731
        return [app.state.notes.insert({"title": f"seeded {i}", "body": "", "updated_at": now()})["id"]
                for i in range(count)]
    return [app.state.tags.insert({"name": f"seeded {i}"})["id"] for i in range(count)]


def webhook(harness: Harness, kind: str) -> tuple[dict[str, str], bytes]:
    """A delivery signed like Example Notes signs them, with a new event id."""
    from hub_example.testing import signed_delivery

    signed_at = int(time.time()) - (3600 if kind == "stale" else 0)
    event = {"id": f"evt_{uuid.uuid4().hex}", "type": "note.updated", "data": {"id": "note_1", "title": "x"}}
    body, headers = signed_delivery(WEBHOOK_SECRET, event, signed_at)
    # (For the variant that checks the URL it was posted to, as HubSpot signs it.)
    return {**headers, "X-Example-Url": harness.delivery_url}, body


def example_target(plugin: ModuleType | None = None) -> ConformanceTarget:
    """The conformance target of the example provider (or of a variant of it)."""
    import hub_example
    from hub_example import testing as fake

    return ConformanceTarget(
        provider="example",
        plugin=plugin or hub_example,
        fake_app=fake.create_app,
        credentials={"api_key": fake.API_KEY, "webhook_secret": WEBHOOK_SECRET},
        seed=seed,
        samples={"notes": {"title": "conformance note", "body": "hello"}, "tags": {"name": "conformance tag"}},
        webhook=webhook,
    )
