"""What a review found, mended: a write made whose reading back fails, a batch
with an association change, v1 signatures refused on request, the daily
limit of a connection that knows no time zone."""

from __future__ import annotations

import time

import pytest

from hub.testing import serve
from hub.testing.fakes import Scripted
from hub_hubspot import testing as fake

API = "/api/v1/integrations"


def _events_of(hubspot, connection):
    response = hubspot.client.get(f"{API}/connections/{connection['id']}/webhooks/events", headers=hubspot.auth)
    assert response.status_code == 200, response.text
    return response.json()["events"]


@pytest.mark.parametrize("refusal", [
    (429, {"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT",
           "correlationId": "x", "policyName": "DAILY"}),
    (503, {"status": "error", "message": "Service Unavailable", "correlationId": "x"}),
])
def test_a_create_made_whose_reading_back_fails_is_a_success_and_made_once(hubspot, monkeypatch, refusal):
    """HubSpot made the record; the reading of it whole met a 429 or an
    outage: the create's own answer stands (an error would have the client,
    or sync, send it again: HubSpot takes no idempotency key)."""
    scripted = Scripted(hubspot.fake)
    with serve(scripted) as url:
        monkeypatch.setenv("HUB_HUBSPOT_ORIGIN", url)
        connection = hubspot.connect()
        scripted.script("/crm/v3/objects/deals/9100001", *[refusal] * 10)
        data = {"data": {"properties": {"dealname": "Big deal", "dealstage": "appointmentscheduled"}},
                "idempotency_key": "order-42"}
        first = hubspot.post(hubspot.records(connection, "deals"), data)
        assert first.status_code == 201, first.text
        record = first.json()["record"]
        assert record["id"] == "9100001" and record["properties"]["dealname"] == "Big deal"
        scripted.queued.clear()
        again = hubspot.post(hubspot.records(connection, "deals"), data)  # the client's retry, its key
        assert again.status_code in (200, 201) and again.json()["record"]["id"] == "9100001", again.text
    assert list(hubspot.fake.state.portal(fake.PORTAL_ID).tables["deals"]) == ["9100001"]


def test_an_association_change_in_a_batch_is_kept_and_the_other_events_taken(hubspot):
    connection = hubspot.connect()
    creation = fake.webhook_event("contact.creation", 51)
    association = {"eventId": 4_000_000_001, "subscriptionId": 2_451_002, "portalId": fake.PORTAL_ID,
                   "appId": fake.APP_ID, "occurredAt": int(time.time() * 1000),
                   "subscriptionType": "contact.associationChange", "attemptNumber": 0, "changeSource": "USER",
                   "associationType": "CONTACT_TO_COMPANY", "fromObjectId": 51, "toObjectId": 5000001,
                   "associationRemoved": False, "isPrimaryAssociation": False}
    headers, body = fake.signed_delivery(hubspot.webhook_url, [creation, association], versions=("v3",))
    answer = hubspot.deliver(headers, body)
    assert answer.status_code == 200 and answer.json()["received"] == 2, answer.text
    events = {e["type"]: e for e in _events_of(hubspot, connection)}
    assert events["contact.created"]["record_id"] == "51" and events["contact.created"]["entity"] == "contacts"
    assert events["contact.associationChange"]["entity"] is None
    assert events["contact.associationChange"]["record_id"] is None


def test_two_events_sharing_an_event_id_are_both_taken_and_a_retry_of_either_is_a_duplicate(hubspot):
    """HubSpot does not promise eventId unique."""
    connection = hubspot.connect()
    first = fake.webhook_event("contact.creation", 51)
    second = {**fake.webhook_event("company.creation", 61), "eventId": first["eventId"]}
    headers, body = fake.signed_delivery(hubspot.webhook_url, [first, second], versions=("v3",))
    assert hubspot.deliver(headers, body).json()["received"] == 2
    headers, body = fake.signed_delivery(hubspot.webhook_url, [{**second, "attemptNumber": 1}], versions=("v3",))
    assert hubspot.deliver(headers, body).json()["duplicate"] is True
    assert len(_events_of(hubspot, connection)) == 2


@pytest.fixture
def v1_off(monkeypatch):
    monkeypatch.setenv("HUB_HUBSPOT_WEBHOOK_V1", "off")


def test_deliveries_signed_only_v1_are_refused_when_the_operator_says_so(v1_off, hubspot):
    """A delivery captured once, stale by v3, replayed with its v3 headers
    removed: refused with HUB_HUBSPOT_WEBHOOK_V1=off (taken by default, while
    HubSpot migrates: the webhook tests show v1 alone taken)."""
    connection = hubspot.connect()
    headers, body = fake.signed_delivery(hubspot.webhook_url, [fake.webhook_event("contact.deletion", 51)],
                                         timestamp_ms=int(time.time() * 1000) - 600_000)
    assert hubspot.deliver(headers, body).json()["code"] == "webhook_stale"
    stripped = {k: v for k, v in headers.items()
                if k not in ("X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp")}
    refused = hubspot.deliver(stripped, body)
    assert refused.status_code == 401 and refused.json()["code"] == "webhook_rejected", refused.text
    headers, body = fake.signed_delivery(hubspot.webhook_url, [fake.webhook_event("contact.deletion", 52)])
    assert hubspot.deliver(headers, body).json()["received"] == 1  # (signed v3 too: taken)
    assert [e["record_id"] for e in _events_of(hubspot, connection)] == ["52"]


def test_the_daily_limit_holds_a_connection_that_knows_no_time_zone_an_hour_at_a_time(hubspot):
    created = hubspot.post(f"{API}/connections", {"provider": "hubspot",
                                                  "credentials": {"access_token": fake.PRIVATE_APP_TOKEN}})
    assert created.status_code == 201, created.text
    connection = created.json()["connection"]
    hubspot.fake.state.portal(fake.PORTAL_ID).daily_exhausted = True
    refused = hubspot.get(hubspot.records(connection, "contacts"))
    assert refused.status_code == 429 and 3590 <= float(refused.headers["Retry-After"]) <= 3601, refused.text
