"""Xero's webhook deliveries through the hub's intake: signed with the app's
webhook key (good, forged), the intent-to-receive check (200 when signed
right, 401 when not, with or without connections), deduplication without an
event id, and deliveries of several tenants, each event reaching its
tenant's connection."""

from __future__ import annotations

import uuid

from hub_xero import testing as fake

API = "/api/v1/integrations"


def events_of(xero, connection, auth=None):
    response = xero.client.get(f"{API}/connections/{connection['id']}/webhooks/events", headers=auth or xero.auth)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def test_the_intent_to_receive_check_is_answered_200_signed_and_401_not(xero):
    for connected in (None, True):
        if connected:
            connected = xero.connect()
        good = xero.deliver(*fake.intent_to_receive())
        assert (good.status_code, good.content) == (200, b""), good.text  # (Xero: "no body in the response")
        if connected:
            assert events_of(xero, connected) == []
        bad = xero.deliver(*fake.intent_to_receive(key="not-the-apps-key"))
        assert (bad.status_code, bad.json()["code"]) == (401, "webhook_rejected"), bad.text
        headers, body = fake.intent_to_receive()
        assert xero.deliver({**headers, "x-xero-signature": ""}, body).status_code == 401
        assert xero.deliver(headers, body + b" ").status_code == 401


def test_a_signed_delivery_is_taken_once_and_a_forged_one_refused(xero):
    connection = xero.connect()
    contact, invoice = str(uuid.uuid4()), str(uuid.uuid4())
    events = [fake.event("CONTACT", contact, event_type="CREATE"), fake.event("INVOICE", invoice)]
    headers, body = fake.delivery(events)
    first = xero.deliver(headers, body)
    assert (first.status_code, first.content) == (200, b""), first.text
    assert len(events_of(xero, connection)) == 2
    # Xero sends a failed delivery again (new sequence numbers, the same events): a duplicate.
    again = xero.deliver(*fake.delivery(events))
    assert again.status_code == 200 and len(events_of(xero, connection)) == 2
    stored = sorted((e["type"], e["entity"], e["action"], e["record_id"]) for e in events_of(xero, connection))
    assert stored == [("contact.created", "contacts", "created", contact),
                      ("invoice.updated", "invoices", "updated", invoice)]
    forged = xero.deliver(headers, body.replace(contact.encode(), str(uuid.uuid4()).encode()))
    assert (forged.status_code, forged.json()["code"]) == (401, "webhook_rejected")
    wrong_key = xero.deliver(*fake.delivery([fake.event("CONTACT", contact)], key="another-app"))
    assert wrong_key.status_code == 401


def test_a_delivery_of_several_tenants_reaches_each_tenants_connection_with_its_own_events(xero):
    ours = xero.connect()
    theirs_auth = xero.organization("globex")
    theirs = xero.connect(tenants=(fake.OTHER_TENANT,), auth=theirs_auth)
    a, b, c, d = (str(uuid.uuid4()) for _ in range(4))
    events = [fake.event("CONTACT", a), fake.event("INVOICE", b, tenant=fake.OTHER_TENANT),
              fake.event("CONTACT", c, tenant=fake.THIRD_TENANT),  # a tenant no connection holds
              fake.event("INVOICE", d, event_type="CREATE")]
    answer = xero.deliver(*fake.delivery(events))
    assert answer.status_code == 200, answer.text
    assert sorted(e["record_id"] for e in events_of(xero, ours)) == sorted([a, d])
    assert [e["record_id"] for e in events_of(xero, theirs, theirs_auth)] == [b]
    # Only a tenant no connection holds: acknowledged (signed), kept nowhere.
    nobody = xero.deliver(*fake.delivery([fake.event("CONTACT", c, tenant=fake.THIRD_TENANT)]))
    assert nobody.status_code == 200
    assert len(events_of(xero, ours)) == 2 and len(events_of(xero, theirs, theirs_auth)) == 1
    assert xero.deliver(*fake.delivery([fake.event("CONTACT", c, tenant=fake.THIRD_TENANT)],
                                       key="x")).status_code == 401


def test_the_intent_to_receive_answer_has_no_body(xero):
    """Xero's "Configuring your server" lists what it expects of every
    answer to a delivery, the intent-to-receive check included: 200 within 5
    seconds, "There is no body in the response", no cookies, 401 when the
    signature is wrong. The developer portal fails the check with "Response
    contains a body" (foxbytehq/laravel-xero-oauth2#54), and without the check
    passed Xero sends no events at all. The hub answers every provider's
    delivery with a JSON summary."""
    xero.connect()
    good = xero.deliver(*fake.intent_to_receive())
    assert good.status_code == 200, good.text
    assert good.content == b"", good.text
    assert "set-cookie" not in good.headers
    delivered = xero.deliver(*fake.delivery([fake.event("CONTACT", str(uuid.uuid4()))]))
    assert delivered.status_code == 200 and delivered.content == b"", delivered.text
