"""Connecting a HubSpot portal through the hub's OAuth API, and keeping its
30-minute access tokens fresh, against the fake HubSpot."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from hub_hubspot import testing as fake

API = "/api/v1/integrations"


def test_the_oauth_flow_connects_the_portal_the_user_chose(hubspot):
    url = hubspot.authorize()
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path == "/oauth/authorize"
    assert query["client_id"] == fake.CLIENT_ID and query["state"]
    assert query["redirect_uri"] == "https://hub.example.com/api/v1/integrations/oauth/hubspot/callback"
    # Space-separated, as HubSpot takes them.
    assert {"oauth", "crm.objects.contacts.read", "crm.objects.contacts.write", "crm.objects.companies.read",
            "crm.objects.deals.write", "tickets"} <= set(query["scope"].split(" "))

    back = hubspot.consent(url, portal=fake.OTHER_PORTAL_ID)
    callback = hubspot.client.get(back)
    assert callback.status_code == 200, callback.text
    assert hubspot.client.get(back).status_code >= 400  # its state and code are single-use
    connection = callback.json()["connection"]
    assert connection["status"] == "connected"
    assert connection["provider_account"] == str(fake.OTHER_PORTAL_ID)
    assert connection["config"] == {"time_zone": fake.TIME_ZONE}

    shown = [callback.text, hubspot.get(f"{API}/connections/{connection['id']}").text,
             hubspot.post(f"{API}/connections/{connection['id']}/test").text, hubspot.get(f"{API}/connections").text]
    issued = [*hubspot.fake.state.access, *hubspot.fake.state.refresh, fake.CLIENT_SECRET]
    assert len(issued) == 4  # (an access token, its refresh token, the secret; and a private app's token)
    assert not [secret for secret in issued for text in shown if secret in text]
    tested = hubspot.post(f"{API}/connections/{connection['id']}/test").json()
    assert tested["connection"]["provider_account"] == str(fake.OTHER_PORTAL_ID)
    assert len(hubspot.get(f"{API}/connections").json()["connections"]) == 1


# (The refreshed token must outlive the listing's calls, the properties read and a batch read among
# them, on a loaded machine: 0.3 s did not.)
@pytest.mark.parametrize("fake_options", [{"ten_secondly": (10_000, 10.0), "token_lifetime": 2.0}])
@pytest.mark.parametrize("hub_settings", [{"refresh_margin_seconds": 0}])
def test_an_expired_access_token_is_refreshed_before_the_call(hubspot):
    connection = hubspot.connect()
    fake.seed(hubspot.fake, "contacts", 2)
    # (Counted from here: a slow connect may have refreshed its token already.)
    refreshes, unauthorized = hubspot.fake.state.refreshes, hubspot.fake.state.unauthorized
    time.sleep(2.1)  # the token's lifetime is over, by HubSpot's clock and by the hub's (which read it later)
    listed = hubspot.get(hubspot.records(connection, "contacts"))
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["records"]) == 2
    assert hubspot.fake.state.refreshes == refreshes + 1
    # Refreshed ahead of the call (the expiry the token answer gave): HubSpot never refused it.
    assert hubspot.fake.state.unauthorized == unauthorized


def test_a_refresh_token_hubspot_no_longer_takes_leaves_the_connection_expired(hubspot):
    connection = hubspot.connect()
    hubspot.fake.state.refresh.clear()  # the app was uninstalled from the portal
    fake.expire_tokens(hubspot.fake)
    refused = hubspot.get(hubspot.records(connection, "contacts"))
    assert refused.status_code == 424, refused.text
    assert refused.json()["code"] == "token_refresh_failed"
    assert "missing or unknown refresh token" in refused.json()["error"]
    shown = hubspot.get(f"{API}/connections/{connection['id']}").json()["connection"]
    assert shown["status"] == "expired"


def test_a_private_app_token_typed_connects_without_the_oauth_flow(hubspot):
    """A private app's static token is a credential the user types: the
    connection reaches its portal (its account, which routes webhooks to it),
    and takes a new token later; a connection made by OAuth does not take one
    typed (a refresh would replace it). A token HubSpot refuses connects nothing."""
    refused = hubspot.post(f"{API}/connections", {"provider": "hubspot",
                                                  "credentials": {"access_token": "pat-na1-wrong"}})
    assert refused.status_code == 424 and refused.json()["code"] == "provider_auth_failed", refused.text
    assert hubspot.get(f"{API}/connections").json()["connections"] == []

    created = hubspot.post(f"{API}/connections", {"provider": "hubspot",
                                                  "credentials": {"access_token": fake.PRIVATE_APP_TOKEN}})
    assert created.status_code == 201, created.text
    connection = created.json()["connection"]
    assert connection["provider_account"] == str(fake.PORTAL_ID) and connection["status"] == "connected"
    assert fake.PRIVATE_APP_TOKEN not in created.text
    fake.seed(hubspot.fake, "contacts", 5)
    listed = hubspot.get(hubspot.records(connection, "contacts"), limit=5)
    assert listed.status_code == 200 and len(listed.json()["records"]) == 5, listed.text

    rotated = f"{fake.PRIVATE_APP_TOKEN[:-4]}9999"
    hubspot.fake.state.access[rotated] = hubspot.fake.state.access.pop(fake.PRIVATE_APP_TOKEN)
    assert hubspot.get(hubspot.records(connection, "contacts"), limit=5).status_code == 424  # (the old one, revoked)
    changed = hubspot.put(f"{API}/connections/{connection['id']}", {"credentials": {"access_token": rotated}})
    assert changed.status_code == 200 and changed.json()["connection"]["status"] == "connected", changed.text
    assert hubspot.get(hubspot.records(connection, "contacts"), limit=5).status_code == 200

    other_org = hubspot.organization("oauth-org")
    by_oauth = hubspot.connect(portal=fake.OTHER_PORTAL_ID, auth=other_org)
    typed = hubspot.client.put(f"{API}/connections/{by_oauth['id']}", json={"credentials": {"access_token": rotated}},
                               headers=other_org)
    assert typed.status_code == 422 and typed.json()["code"] == "credentials_from_authorization", typed.text


def test_deleting_a_connection_gives_its_grant_back_and_logs_no_token(hubspot, caplog):
    """The refresh token is deleted at HubSpot (after a passing failure,
    retried); the log names the call without the token in its path. A
    connection made with a private app's token gives nothing back."""
    connection = hubspot.connect()
    [refresh_token] = hubspot.fake.state.refresh
    hubspot.fake.state.revoke_failures = 1
    with caplog.at_level("INFO"):
        deleted = hubspot.delete(f"{API}/connections/{connection['id']}")
    assert deleted.status_code == 200 and deleted.json()["revocation"] == "revoked", deleted.text
    assert hubspot.fake.state.refresh == {} and hubspot.fake.state.revoke_failures == 0
    assert "/oauth/v1/refresh-tokens/…" in caplog.text and refresh_token not in caplog.text

    typed = hubspot.post(f"{API}/connections", {"provider": "hubspot",
                                                "credentials": {"access_token": fake.PRIVATE_APP_TOKEN}})
    assert typed.status_code == 201, typed.text
    deleted = hubspot.delete(f"{API}/connections/{typed.json()['connection']['id']}")
    assert deleted.status_code == 200 and deleted.json()["revocation"] == "none", deleted.text
