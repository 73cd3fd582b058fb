"""HubSpot's rate limits through the hub's API, their windows scaled down in
time: the portal's ten-secondly window, the search endpoints' own limit, and
the daily one, each 429 read from its body (HubSpot sends no Retry-After)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

import hub_hubspot
from hub.types import RateLimited
from hub_hubspot import testing as fake

#: HubSpot's 110 calls in 10 s, here 4 in 0.3 s.
WINDOW = (4, 0.3)


@pytest.mark.parametrize("fake_options", [{"ten_secondly": WINDOW}])
@pytest.mark.parametrize("limits", [{"ten_secondly": WINDOW}])
def test_the_hub_keeps_within_the_portals_window(hubspot):
    connection = hubspot.connect()
    fake.seed(hubspot.fake, "contacts", 10)
    started = time.monotonic()
    pages = [hubspot.get(hubspot.records(connection, "contacts"), limit=1) for _ in range(10)]
    assert all(page.status_code == 200 for page in pages)
    assert hubspot.fake.state.throttled == {}
    # 11 calls with the connection's test: the window's pace, not HubSpot's refusals, set it.
    assert time.monotonic() - started >= WINDOW[1] * (11 // 4) - 0.1


@pytest.mark.parametrize("fake_options", [{"ten_secondly": WINDOW}])
@pytest.mark.parametrize("limits", [{"ten_secondly": WINDOW}])
def test_a_ten_secondly_429_waits_the_window_named_then_succeeds(hubspot):
    connection = hubspot.connect()
    fake.seed(hubspot.fake, "contacts", 2)
    hubspot.fake.state.refuse_next = 1  # the portal's other apps used the window up
    started = time.monotonic()
    listed = hubspot.get(hubspot.records(connection, "contacts"))
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["records"]) == 2
    assert hubspot.fake.state.throttled == {"TEN_SECONDLY_ROLLING": 1}
    # X-HubSpot-RateLimit-Interval-Milliseconds said how long: the window, not ten seconds.
    assert WINDOW[1] - 0.05 <= time.monotonic() - started < 8


@pytest.mark.parametrize("fake_options", [{"ten_secondly": (10_000, 10.0), "search_per_second": 2}])
def test_a_search_refused_by_its_own_limit_pauses_searches_and_goes_through(hubspot):
    connection = hubspot.connect()
    ids = fake.seed(hubspot.fake, "tickets", 6)
    pages, cursor = [], None
    while True:
        response = hubspot.get(hubspot.records(connection, "tickets"), since="2020-01-01T00:00:00Z", limit=2,
                               **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        pages.append([r["id"] for r in response.json()["records"]])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert [i for page in pages for i in page] == ids
    # The hub sends 5 a second, this portal takes 2: refused as SECONDLY, named the search limit.
    assert hubspot.fake.state.throttled["SECONDLY"] >= 1
    assert "TEN_SECONDLY_ROLLING" not in hubspot.fake.state.throttled


def test_the_daily_limit_refuses_until_the_portals_midnight_without_retrying(hubspot):
    connection = hubspot.connect()
    hubspot.fake.state.portal(fake.PORTAL_ID).daily_exhausted = True
    sent = len(hubspot.fake.state.calls)
    refused = hubspot.get(hubspot.records(connection, "contacts"))
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["error"] == "You have reached your daily limit."
    now = datetime.now(ZoneInfo(fake.TIME_ZONE))
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=ZoneInfo(fake.TIME_ZONE))
    left = (midnight - now).total_seconds()
    assert abs(float(refused.headers["Retry-After"]) - left) < 120
    assert len(hubspot.fake.state.calls) == sent + 1  # not retried for nothing
    again = hubspot.get(hubspot.records(connection, "companies"))
    assert again.status_code == 429 and len(hubspot.fake.state.calls) == sent + 1  # refused unsent


def test_describe_error_reads_each_limit_from_the_429_body():
    def described(policy, headers=None, time_zone="Asia/Tokyo"):
        body = {"status": "error", "message": "You have reached your limit.", "errorType": "RATE_LIMIT",
                "policyName": policy}
        response = httpx.Response(429, json=body, headers=headers or {})
        ctx = type("Ctx", (), {"config": {"time_zone": time_zone}})()
        return hub_hubspot.describe_error(response, ctx)

    ten = described("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"})
    assert isinstance(ten, RateLimited) and (ten.retry_after, ten.limit) == (10.0, None)
    assert described("TEN_SECONDLY_ROLLING").retry_after == 10.0
    search = described("SECONDLY")
    assert (search.retry_after, search.limit) == (1.0, "search")
    tokyo = datetime.now(ZoneInfo("Asia/Tokyo"))
    midnight = datetime.combine(tokyo.date() + timedelta(days=1), datetime.min.time(), tzinfo=ZoneInfo("Asia/Tokyo"))
    assert abs(described("DAILY").retry_after - (midnight - tokyo).total_seconds()) < 5
    assert 0 < described("DAILY", time_zone="Nowhere/Atlantis").retry_after <= 86400
    assert hub_hubspot.describe_error(httpx.Response(429, text="<html>busy</html>"), None) is None
