"""Review of Stripe's inbound webhooks: findings shown as failing tests."""

from __future__ import annotations

from hub_stripe.testing import make_event, signed_delivery

API = "/api/v1/integrations"
SECRET = "whsec_reviewsecret"


def test_a_connection_whose_optional_account_was_sent_empty_takes_its_platform_events(client, fake, connect):
    """A form sends an optional field left blank as "": the connection is made (its
    webhook_key is None, as with no account), but verify_webhook compares the
    event's account (absent: a platform event) with the config's "" and refuses
    every delivery as another account's."""
    connection = connect(config={"account": ""}, webhook_secret=SECRET)
    customer = {"id": "cus_Blank1", "object": "customer", "email": "blank@example.com"}
    body, headers = signed_delivery(SECRET, make_event("customer.created", customer, event_id="evt_Blank1"))
    answer = client.post(f"{API}/webhooks/stripe?connection_id={connection['id']}", content=body, headers=headers)
    assert (answer.status_code, answer.json().get("received")) == (200, 1), answer.text
