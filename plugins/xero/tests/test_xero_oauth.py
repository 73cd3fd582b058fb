"""Connecting Xero organisations through the hub's OAuth API against the
fake: PKCE, one connection per tenant, a grant of several organisations
refused with their list until one is named, refresh tokens rotating, and a
disconnection that removes only its own organisation's connection."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from hub_xero import testing as fake

API = "/api/v1/integrations"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def no_secret_in(xero, *responses) -> None:
    state = xero.fake.state
    secrets = [*state.access, *state.refresh, *state.revoked, fake.CLIENT_SECRET, fake.WEBHOOK_KEY]
    for response in responses:
        assert not [s for s in secrets if s in response.text], response.text


def test_one_organisation_connects_with_pkce_and_its_tenant_as_account(xero):
    url = xero.authorize()
    query = query_of(url)
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert set(query["scope"].split()) >= {"offline_access", "accounting.transactions", "accounting.contacts"}
    callback = xero.client.get(xero.consent(url))
    assert callback.status_code == 200, callback.text
    connection = callback.json()["connection"]
    assert connection["config"]["tenant_id"] == fake.TENANT
    assert connection["provider_account"] == fake.TENANT and connection["status"] == "connected"
    listed = xero.get(xero.records(connection, "contacts"))
    assert listed.status_code == 200 and listed.json()["records"][0]["Name"] == "Opening Customer"
    stored = xero.secrets(connection)
    assert stored["refresh_token"] in xero.fake.state.refresh
    shown = xero.get(f"{API}/connections/{connection['id']}")
    no_secret_in(xero, callback, listed, shown, xero.get(f"{API}/connections"))
    # Every API call named the tenant (the fake refuses others with 403).
    assert xero.fake.state.calls and xero.fake.state.throttled == {}


def test_in_redirect_mode_the_organisations_to_choose_from_are_read_by_the_refusals_flow(xero):
    """A browser sent back to the app carries the refusal's code only (a URL
    takes no list, and no provider text): ``flow=`` names the refusal, whose
    organisations the app reads with its API key, then starts again naming one."""
    sent_back = xero.consent(xero.authorize(redirect_uri="http://localhost:3000/integrations"),
                             (fake.TENANT, fake.OTHER_TENANT))
    callback = xero.client.get(sent_back, follow_redirects=False)
    assert callback.status_code == 302, callback.text
    back = parse_qs(urlsplit(callback.headers["location"]).query)
    assert (back["status"], back["code"], back["provider"]) == (["error"], ["tenant_required"], ["xero"])
    assert fake.NAMES[fake.TENANT] not in callback.headers["location"]
    flow = back["flow"][0]
    read = xero.get(f"{API}/oauth/xero/flows/{flow}")
    assert read.status_code == 200, read.text
    refusal = read.json()["refusal"]
    assert refusal["code"] == "tenant_required"
    assert {(t["tenant_id"], t["name"]) for t in refusal["details"]["tenants"]} == {
        (fake.TENANT, fake.NAMES[fake.TENANT]), (fake.OTHER_TENANT, fake.NAMES[fake.OTHER_TENANT])}
    # Another organization's app cannot read it; an unknown flow is no refusal.
    other = xero.get(f"{API}/oauth/xero/flows/{flow}", auth=xero.organization("globex"))
    assert (other.status_code, other.json()["code"]) == (404, "oauth_flow_not_found"), other.text
    assert xero.get(f"{API}/oauth/xero/flows/not-a-flow").status_code == 404
    chosen = xero.connect(tenants=(fake.TENANT, fake.OTHER_TENANT),
                          tenant_id=refusal["details"]["tenants"][1]["tenant_id"])
    assert chosen["status"] == "connected"


def test_a_grant_of_several_organisations_is_refused_with_their_list_then_connected_by_tenant_id(xero):
    refused = xero.callback(tenants=(fake.TENANT, fake.OTHER_TENANT))
    # (The callback's refusal is 400 with the plugin's code; the list in its text and, for an
    # integrations page to offer, in its details.)
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["code"] == "tenant_required"
    for tenant in (fake.TENANT, fake.OTHER_TENANT):
        assert tenant in body["error"] and fake.NAMES[tenant] in body["error"]
    assert {(t["tenant_id"], t["name"]) for t in body["details"]["tenants"]} == {
        (fake.TENANT, fake.NAMES[fake.TENANT]), (fake.OTHER_TENANT, fake.NAMES[fake.OTHER_TENANT])}
    assert xero.get(f"{API}/connections").json()["connections"] == []
    # The grant is not revoked: that would disconnect the organisations the user chooses from.
    assert xero.fake.state.revoked == [] and xero.fake.state.removed == []
    no_secret_in(xero, refused)

    # One the grant does not cover, or no tenant id at all, is refused too.
    refused = xero.callback(tenants=(fake.TENANT,), tenant_id=fake.THIRD_TENANT)
    assert (refused.status_code, refused.json()["code"]) == (400, "tenant_not_granted"), refused.text
    assert fake.TENANT in refused.json()["error"]
    bad = xero.client.get(f"{API}/oauth/xero/authorize", params={"tenant_id": "not-a-guid"}, headers=xero.auth)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_tenant_id"), bad.text

    connection = xero.connect(tenants=(fake.TENANT, fake.OTHER_TENANT), tenant_id=fake.OTHER_TENANT.upper())
    assert connection["config"]["tenant_id"] == fake.OTHER_TENANT
    assert connection["provider_account"] == fake.OTHER_TENANT
    names = {r["Name"] for r in xero.get(xero.records(connection, "contacts")).json()["records"]}
    assert names == {"Opening Customer"}
    fake.seed(xero.fake, "contacts", 2, tenant=fake.OTHER_TENANT)
    assert len(xero.get(xero.records(connection, "contacts")).json()["records"]) == 3
    assert len(xero.tenant(fake.TENANT).tables["Contacts"]) == 1  # (the other organisation untouched)


def test_an_expired_access_token_is_refreshed_and_the_rotated_refresh_token_stored(xero):
    connection = xero.connect()
    before = xero.secrets(connection)
    fake.expire_tokens(xero.fake)
    listed = xero.get(xero.records(connection, "invoices"))
    assert listed.status_code == 200, listed.text
    after = xero.secrets(connection)
    assert xero.fake.state.refreshes == 1
    assert after["refresh_token"] != before["refresh_token"] and after["access_token"] != before["access_token"]
    # The old refresh token no longer works at Xero; the stored one does.
    assert before["refresh_token"] not in xero.fake.state.refresh and after["refresh_token"] in xero.fake.state.refresh
    shown = xero.get(f"{API}/connections/{connection['id']}").json()["connection"]
    assert shown["status"] == "connected"
    fake.expire_tokens(xero.fake)
    assert xero.get(xero.records(connection, "invoices")).status_code == 200
    assert xero.fake.state.refreshes == 2


def test_disconnecting_removes_only_its_organisation_and_revokes_the_grant_when_it_was_the_last(xero):
    both = (fake.TENANT, fake.OTHER_TENANT)
    connection = xero.connect(tenants=both, tenant_id=fake.TENANT)
    grant = xero.fake.state.access[xero.secrets(connection)["access_token"]][0]
    [ours] = [c["id"] for c in xero.fake.state.grants[grant]["connections"] if c["tenantId"] == fake.TENANT]
    assert xero.delete(f"{API}/connections/{connection['id']}").status_code == 200
    assert xero.fake.state.removed == [ours] and xero.fake.state.revoked == []
    assert [c["tenantId"] for c in xero.fake.state.grants[grant]["connections"]] == [fake.OTHER_TENANT]

    alone = xero.connect()
    refresh = xero.secrets(alone)["refresh_token"]
    assert xero.delete(f"{API}/connections/{alone['id']}").status_code == 200
    assert len(xero.fake.state.removed) == 2 and xero.fake.state.revoked == [refresh]


def test_an_organisation_disconnected_in_xero_marks_the_connection_broken(xero):
    """Xero answers a tenant the app no longer reaches 403
    AuthorizationUnsuccessful: the connection needs its user, not a wait."""
    connection = xero.connect()
    for grant in xero.fake.state.grants.values():  # what Xero's "Disconnect" does
        grant["connections"] = []
    listed = xero.get(xero.records(connection, "contacts"))
    assert listed.status_code == 424 and listed.json()["code"] == "tenant_disconnected", listed.text
    shown = xero.get(f"{API}/connections/{connection['id']}").json()["connection"]
    assert shown["status"] == "error" and "connect it again" in shown["last_error"], shown
