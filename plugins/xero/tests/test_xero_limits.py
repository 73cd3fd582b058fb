"""Xero's limits through the hub's API, their windows scaled down in time:
the tenant's minute window kept by the hub, a 429 read by its
``X-Rate-Limit-Problem`` (the limit it names is the one paused: a tenant's
day for that tenant only, the app's minute for every tenant)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from hub.models import Connection

from hub_xero import testing as fake

API = "/api/v1/integrations"

#: Xero's 60 calls a minute, here 4 in half a second.
WINDOW = (4, 0.5)


@pytest.mark.parametrize("fake_options", [{"minute": WINDOW}])
@pytest.mark.parametrize("limits", [{"minute": WINDOW}])
def test_the_hub_keeps_within_the_tenants_minute(xero):
    connection = xero.connect()
    started = time.monotonic()
    pages = [xero.get(xero.records(connection, "accounts")) for _ in range(7)]
    assert all(page.status_code == 200 for page in pages), pages[-1].text
    assert xero.fake.state.throttled == {}
    # 8 calls with the connection's test: the window's pace, not Xero's refusals, set it.
    assert time.monotonic() - started >= WINDOW[1] - 0.05


def test_a_minute_429_waits_its_retry_after_then_succeeds(xero):
    connection = xero.connect()
    xero.fake.state.refuse_next = ["minute"]  # Retry-After: 1
    started = time.monotonic()
    listed = xero.get(xero.records(connection, "contacts"))
    assert listed.status_code == 200, listed.text
    assert xero.fake.state.throttled == {"minute": 1}
    assert 0.95 <= time.monotonic() - started < 30  # (Retry-After said 1 s, not the minute)


def test_a_days_429_pauses_that_tenant_only_and_the_apps_minute_every_tenant(xero):
    ours = xero.connect()
    theirs_auth = xero.organization("globex")
    theirs = xero.connect(tenants=(fake.OTHER_TENANT,), auth=theirs_auth)
    xero.fake.state.refuse_next = [("day", 3600)]
    refused = xero.get(xero.records(ours, "contacts"))
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited"), refused.text
    assert int(refused.headers["Retry-After"]) > 3000
    sent = len(xero.fake.state.calls)
    again = xero.get(xero.records(ours, "invoices"))
    assert again.status_code == 429 and len(xero.fake.state.calls) == sent  # (refused unsent)
    other = xero.get(xero.records(theirs, "contacts"), auth=theirs_auth)
    assert other.status_code == 200, other.text
    # The app's minute met (by the other tenant's call): every tenant waits, unsent.
    xero.fake.state.refuse_next = [("appminute", 45)]
    assert xero.get(xero.records(theirs, "invoices"), auth=theirs_auth).status_code == 429
    sent = len(xero.fake.state.calls)
    paused = xero.get(xero.records(theirs, "items"), auth=theirs_auth)
    assert (paused.status_code, paused.json()["code"]) == (429, "rate_limited")
    assert len(xero.fake.state.calls) == sent
    assert xero.fake.state.throttled == {"day": 1, "appminute": 1}



@pytest.mark.parametrize("fake_options", [{"minute": (3, 600.0), "day": (3, 86_400.0)}])
@pytest.mark.parametrize("limits", [{"minute": (3, 600.0), "day": (3, 86_400.0), "concurrent": 1}])
def test_connections_and_identity_calls_spend_none_of_the_tenants_limits(xero):
    """Listing a grant's tenants (/connections), refreshing and revoking name
    no tenant: with the tenant's windows used up by its API calls, a refresh
    and disconnecting still go through."""
    connection = xero.connect()
    answers = [xero.get(xero.records(connection, "contacts")) for _ in range(3)]
    assert answers[-1].status_code == 429 and answers[-1].json()["code"] == "rate_limited"  # (refused unsent)
    sent = len(xero.fake.state.calls)
    with xero.hub_app.state.hub.session() as session:  # the access token is due: refreshed before the next call
        row = session.get(Connection, connection["id"])
        row.token_expires_at = datetime.now(timezone.utc) - timedelta(minutes=1)
        session.add(row)
        session.commit()
    refused = xero.get(xero.records(connection, "contacts"))
    assert refused.status_code == 429 and len(xero.fake.state.calls) == sent
    assert xero.fake.state.refreshes == 1
    refresh = xero.secrets(connection)["refresh_token"]
    [ours] = [c["id"] for grant in xero.fake.state.grants.values() for c in grant["connections"]]
    assert xero.delete(f"{API}/connections/{connection['id']}").status_code == 200
    assert xero.fake.state.removed == [ours] and xero.fake.state.revoked == [refresh]
    assert xero.fake.state.throttled == {}
