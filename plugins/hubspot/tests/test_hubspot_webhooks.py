"""HubSpot's webhook deliveries through the hub's intake: v3 and v1
signatures (good, forged, stale), deduplication on eventId, and deliveries
batching several portals, each event reaching its portal's connection."""

from __future__ import annotations

import time

from hub_hubspot import testing as fake

API = "/api/v1/integrations"


def events_of(hubspot, connection, auth=None):
    response = hubspot.client.get(f"{API}/connections/{connection['id']}/webhooks/events",
                                  headers=auth or hubspot.auth)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def test_a_v3_signed_delivery_is_taken_once(hubspot):
    connection = hubspot.connect()
    events = [fake.webhook_event("contact.creation", 51), fake.webhook_event("deal.deletion", 9100001),
              fake.webhook_event("company.propertyChange", 5000001, propertyName="name", propertyValue="Acme"),
              fake.webhook_event("contact.privacyDeletion", 52)]
    headers, body = fake.signed_delivery(hubspot.webhook_url, events, versions=("v3",))
    first = hubspot.deliver(headers, body)
    assert first.status_code == 200, first.text
    assert first.json()["received"] == 4
    replay = hubspot.deliver(headers, body)
    assert replay.json()["duplicate"] is True and replay.json()["received"] == 0
    stored = {e["dedup_key"].split(":")[0]: e for e in events_of(hubspot, connection)}  # (eventId:type:…)
    assert {key: (e["type"], e["entity"], e["action"], e["record_id"]) for key, e in stored.items()} == {
        str(events[0]["eventId"]): ("contact.created", "contacts", "created", "51"),
        str(events[1]["eventId"]): ("deal.deleted", "deals", "deleted", "9100001"),
        str(events[2]["eventId"]): ("company.updated", "companies", "updated", "5000001"),
        # Erased from the hub's store, its body not kept (it names the person).
        str(events[3]["eventId"]): ("contact.privacy_deletion", "contacts", "redacted", "52"),
    }


def test_v3_signatures_that_do_not_match_or_are_stale_are_refused(hubspot):
    hubspot.connect()
    events = [fake.webhook_event("contact.creation", 51)]
    headers, body = fake.signed_delivery(hubspot.webhook_url, events, versions=("v3",))
    forged = hubspot.deliver(headers, body.replace(b"51", b"52"))
    assert (forged.status_code, forged.json()["code"]) == (401, "webhook_rejected")
    # Signed for another URL (v3 signs the request line): refused too.
    moved, moved_body = fake.signed_delivery("https://elsewhere.example.com/hook", events, versions=("v3",))
    assert hubspot.deliver(moved, moved_body).status_code == 401
    wrong_secret = fake.signed_delivery(hubspot.webhook_url, events, versions=("v3",), secret="another-app")
    assert hubspot.deliver(*wrong_secret).status_code == 401
    stale = fake.signed_delivery(hubspot.webhook_url, events, versions=("v3",),
                                 timestamp_ms=int(time.time() * 1000) - 301_000)
    answer = hubspot.deliver(*stale)
    assert (answer.status_code, answer.json()["code"]) == (401, "webhook_stale")
    stale_headers, stale_body = stale
    # A stale delivery whose body changed is a forgery, whatever its age.
    assert hubspot.deliver(stale_headers, stale_body + b" ").json()["code"] == "webhook_rejected"
    # A v3 signature present decides, even beside a good v1 one.
    both, both_body = fake.signed_delivery(hubspot.webhook_url, events,
                                           timestamp_ms=int(time.time() * 1000) - 301_000)
    assert hubspot.deliver(both, both_body).json()["code"] == "webhook_stale"


def test_v1_signatures_are_still_taken(hubspot):
    connection = hubspot.connect()
    events = [fake.webhook_event("ticket.creation", 1700001)]
    headers, body = fake.signed_delivery(hubspot.webhook_url, events, versions=("v1",))
    assert "X-HubSpot-Signature-v3" not in headers
    taken = hubspot.deliver(headers, body)
    assert taken.status_code == 200 and taken.json()["received"] == 1, taken.text
    assert [e["entity"] for e in events_of(hubspot, connection)] == ["tickets"]
    forged = hubspot.deliver(headers, body.replace(b"1700001", b"1700002"))
    assert forged.status_code == 401
    # Another version's signature is not read as v1.
    other = {**headers, "X-HubSpot-Signature-Version": "v2"}
    assert hubspot.deliver(other, body).status_code == 401
    unsigned = {k: v for k, v in headers.items() if not k.startswith("X-HubSpot-Signature")}
    assert hubspot.deliver(unsigned, body).status_code == 401


def test_a_delivery_batching_portals_reaches_each_portals_connection_only_with_its_own_events(hubspot):
    ours = hubspot.connect(fake.PORTAL_ID)
    theirs_auth = hubspot.organization("globex")
    theirs = hubspot.connect(fake.OTHER_PORTAL_ID, auth=theirs_auth)
    assert theirs["provider_account"] == str(fake.OTHER_PORTAL_ID)
    events = [fake.webhook_event("contact.creation", 51, fake.PORTAL_ID),
              fake.webhook_event("contact.creation", 61, fake.OTHER_PORTAL_ID),
              fake.webhook_event("deal.creation", 71, 31337),  # a portal the hub has no connection of
              fake.webhook_event("contact.deletion", 52, fake.PORTAL_ID)]
    headers, body = fake.signed_delivery(hubspot.webhook_url, events)
    answer = hubspot.deliver(headers, body)
    assert answer.status_code == 200 and answer.json()["received"] == 3, answer.text
    assert sorted(e["record_id"] for e in events_of(hubspot, ours)) == ["51", "52"]
    assert [e["record_id"] for e in events_of(hubspot, theirs, theirs_auth)] == ["61"]
    # Routed by ?connection_id= (as the conformance suite posts), the connection still keeps its own.
    headers, body = fake.signed_delivery(f"{hubspot.webhook_url}?connection_id={theirs['id']}",
                                         [fake.webhook_event("contact.creation", 81, fake.PORTAL_ID)])
    routed = hubspot.deliver(headers, body, connection_id=theirs["id"])
    assert routed.status_code == 200 and routed.json()["received"] == 0


def test_a_signed_delivery_for_portals_without_a_connection_is_acknowledged_and_kept_nowhere(hubspot):
    connection = hubspot.connect()
    events = [fake.webhook_event("contact.creation", 91, 31337)]
    acknowledged = hubspot.deliver(*fake.signed_delivery(hubspot.webhook_url, events))
    assert acknowledged.status_code == 200 and acknowledged.json()["received"] == 0, acknowledged.text
    assert events_of(hubspot, connection) == []
    forged = fake.signed_delivery(hubspot.webhook_url, events, secret="another-app")
    assert hubspot.deliver(*forged).status_code == 401
    stale = fake.signed_delivery(hubspot.webhook_url, events, versions=("v3",),
                                 timestamp_ms=int(time.time() * 1000) - 301_000)
    assert hubspot.deliver(*stale).json()["code"] == "webhook_stale"


def test_a_private_app_connection_takes_the_webhooks_its_private_app_signs(hubspot):
    """A private app signs its webhooks with its own client secret (its Auth
    tab), not the operator's OAuth app's: they were all refused."""
    created = hubspot.post(f"{API}/connections", {"provider": "hubspot", "credentials": {
        "access_token": fake.PRIVATE_APP_TOKEN, "client_secret": "the-private-apps-secret"}})
    assert created.status_code == 201, created.text
    connection = created.json()["connection"]
    assert "the-private-apps-secret" not in created.text
    events = [fake.webhook_event("contact.creation", 61)]
    signed = fake.signed_delivery(hubspot.webhook_url, events, versions=("v3",), secret="the-private-apps-secret")
    taken = hubspot.deliver(*signed)
    assert taken.status_code == 200 and taken.json()["received"] == 1, taken.text
    assert [e["record_id"] for e in events_of(hubspot, connection)] == ["61"]
    # The OAuth app's signature is not the private app's.
    by_the_oauth_app = fake.signed_delivery(hubspot.webhook_url, [fake.webhook_event("contact.creation", 62)],
                                            versions=("v3",))
    assert hubspot.deliver(*by_the_oauth_app).status_code == 401
