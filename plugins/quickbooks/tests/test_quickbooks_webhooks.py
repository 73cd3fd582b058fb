"""Intuit's webhook deliveries through the hub's intake: the legacy
``eventNotifications`` body and the CloudEvents array, both signed with
``intuit-signature`` (the app's verifier token over the raw body); badly
signed ones refused; a delivery naming several companies routed to each
connection with only its own events; replays recognised by their key."""

from __future__ import annotations

import json

from hub_quickbooks import testing as fake

API = "/api/v1/integrations"


def _post(qbo, headers: dict[str, str], body: bytes, connection_id: str | None = None):
    params = {"connection_id": connection_id} if connection_id else {}
    return qbo.client.post(f"{API}/webhooks/quickbooks", params=params, content=body, headers=headers)


def _events(qbo, connection_id: str, auth=None) -> list[tuple]:
    events = qbo.get(f"{API}/connections/{connection_id}/webhooks/events", auth=auth).json()["events"]
    return sorted((e["type"], e["entity"], e["action"], e["record_id"]) for e in events)


def test_a_legacy_delivery_names_its_changes_and_a_replay_is_a_duplicate(qbo, connection):
    headers, body = fake.delivery(fake.legacy({fake.REALM: [
        fake.change("Customer", "1", "Create"), fake.change("Invoice", "7", "Void"),
        fake.change("Customer", "2", "Merge", deletedId="3"), fake.change("Payment", "9", "Delete"),
        fake.change("Bill", "4", "Update"),
    ]}))
    first = _post(qbo, headers, body)
    assert first.status_code == 200 and first.json()["received"] == 6, first.text
    assert _events(qbo, connection["id"]) == [
        ("bill.updated", None, "updated", "4"),
        ("customer.created", "customers", "created", "1"), ("customer.deleted", "customers", "deleted", "3"),
        ("customer.updated", "customers", "updated", "2"), ("invoice.updated", "invoices", "updated", "7"),
        ("payment.deleted", "payments", "deleted", "9"),
    ]
    again = _post(qbo, headers, body)
    assert again.json()["duplicate"] is True and again.json()["received"] == 0
    # The same change in another delivery (the legacy format has no event id) is the same event.
    void = json.loads(body)["eventNotifications"][0]["dataChangeEvent"]["entities"][1]
    headers, body = fake.delivery(fake.legacy({fake.REALM: [void]}))
    assert _post(qbo, headers, body).json()["duplicate"] is True


def test_a_cloudevents_delivery_is_keyed_by_its_event_ids(qbo, connection):
    events = [fake.cloud_event(fake.REALM, "Customer", "1", "updated"),
              fake.cloud_event(fake.REALM, "Invoice", "5", "deleted"),
              fake.cloud_event(fake.OTHER_REALM, "Customer", "1", "created")]
    headers, body = fake.delivery(events)
    response = _post(qbo, headers, body)
    assert response.status_code == 200 and response.json()["received"] == 2, response.text
    assert _events(qbo, connection["id"]) == [("customer.updated", "customers", "updated", "1"),
                                              ("invoice.deleted", "invoices", "deleted", "5")]
    headers, body = fake.delivery([events[0]])  # the same event id again
    assert _post(qbo, headers, body).json()["duplicate"] is True


def test_badly_signed_deliveries_are_refused(qbo, connection):
    headers, body = fake.delivery(fake.legacy({fake.REALM: [fake.change("Customer", "1")]}))
    other_app = fake.delivery(fake.legacy({fake.REALM: [fake.change("Customer", "1")]}), token="another-app-token")
    for connection_id in (connection["id"], None):  # routed by ?connection_id=, or by the realm it names
        forged = _post(qbo, headers, body.replace(b'"1"', b'"2"'), connection_id)
        wrong_key = _post(qbo, other_app[0], body, connection_id)
        unsigned = _post(qbo, {"Content-Type": "application/json"}, body, connection_id)
        for response in (forged, wrong_key, unsigned):
            assert response.status_code == 401 and response.json()["code"] == "webhook_rejected", response.text
    assert _events(qbo, connection["id"]) == []


def test_a_delivery_of_several_companies_reaches_each_connection_with_its_own_events(qbo, connection):
    other_org = qbo.organization()
    other = qbo.connect(realm=fake.OTHER_REALM, auth=other_org)
    headers, body = fake.delivery(fake.legacy({
        fake.REALM: [fake.change("Customer", "1", "Update")],
        fake.OTHER_REALM: [fake.change("Invoice", "8", "Create"), fake.change("Item", "9", "Update")],
        "4620816365000000": [fake.change("Vendor", "1", "Update")],  # a company the hub does not hold
    }))
    response = _post(qbo, headers, body)  # as Intuit posts it: no connection_id
    assert response.status_code == 200 and response.json()["received"] == 3, response.text
    assert _events(qbo, connection["id"]) == [("customer.updated", "customers", "updated", "1")]
    assert _events(qbo, other["id"], auth=other_org) == [("invoice.created", "invoices", "created", "8"),
                                                         ("item.updated", "items", "updated", "9")]


def test_a_signed_delivery_of_a_company_no_connection_holds_is_acknowledged_and_not_stored(qbo, connection):
    """Intuit goes on delivering a company's changes after its connection is
    deleted: signed with the app's token, it is answered 200 (else retried for
    hours); unsigned, refused."""
    headers, body = fake.delivery(fake.legacy({"4620816365000000": [fake.change("Vendor", "1", "Update")]}))
    response = _post(qbo, headers, body)
    assert response.status_code == 200 and response.json()["received"] == 0, response.text
    forged = _post(qbo, {**headers, "intuit-signature": "AAAA"}, body)
    assert forged.status_code == 401 and forged.json()["code"] == "webhook_rejected"
    assert _events(qbo, connection["id"]) == []


def test_a_cloudevents_merge_deletes_the_merged_away_record(qbo, connection):
    """Intuit's CloudEvents merge (``qbo.customer.merged.v1``) names the
    record merged away in ``data.deletedid``, as the legacy format's
    ``deletedId``: it is gone from QuickBooks, and must be deleted in the hub
    too (the README promises it for both formats)."""
    merge = fake.cloud_event(fake.REALM, "Customer", "2", "merged", data={"deletedid": "3"})
    headers, body = fake.delivery([merge])
    response = _post(qbo, headers, body)
    assert response.status_code == 200, response.text
    assert _events(qbo, connection["id"]) == [("customer.deleted", "customers", "deleted", "3"),
                                              ("customer.updated", "customers", "updated", "2")]
