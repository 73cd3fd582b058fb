"""The org's API allocation through the hub's API: Salesforce answers a call
over it with 403 REQUEST_LIMIT_EXCEEDED (no 429, no Retry-After); the hub
answers a clear rate limit with Retry-After, refuses the connection's next
calls unsent, and a sync fails at once instead of waiting a day."""

from __future__ import annotations

import time

import pytest

from hub.testing import wait_for_run
from hub_salesforce import testing as fake

API = "/api/v1/integrations"


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "1000", "BURST": "1000", "LIMIT_WAIT_SECONDS": "120"}])
def test_the_orgs_used_up_allocation_refuses_calls_unsent_and_fails_a_sync_at_once(sfdc, connection):
    fake.seed(sfdc.app, "accounts", 2)
    org = sfdc.org()
    assert sfdc.get(sfdc.records(connection, "accounts")).status_code == 200
    org.api_used = org.api_limit  # the org's other integrations used the rest of its 24 hours
    sent = len(sfdc.api_calls())
    refused = sfdc.get(sfdc.records(connection, "accounts"))
    assert refused.status_code == 429, refused.text
    body = refused.json()
    assert (body["code"], body["error"]) == ("rate_limited", "TotalRequests Limit exceeded.")
    assert body["details"][0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert 115 <= float(refused.headers["Retry-After"]) <= 121
    assert len(sfdc.api_calls()) == sent + 1  # a 403: not sent again

    again = sfdc.get(sfdc.records(connection, "contacts"))
    assert again.status_code == 429 and 100 <= float(again.headers["Retry-After"]) <= 120, again.text
    assert len(sfdc.api_calls()) == sent + 1  # refused unsent
    # The connection is not broken: the credentials are fine, the org is out of calls.
    assert sfdc.get(f"{API}/connections/{connection['id']}").json()["connection"]["status"] == "connected"

    base = f"{API}/connections/{connection['id']}"
    assert sfdc.post(f"{base}/sync-configs", {"entity": "accounts"}).status_code == 201
    started = time.monotonic()
    run = sfdc.post(f"{base}/sync", {"entity": "accounts", "direction": "pull"}).json()["run"]
    run = wait_for_run(sfdc.client, sfdc.auth, connection["id"], run["id"])
    assert run["status"] == "failed" and time.monotonic() - started < 30, run  # (not the 120 s allowed to wait)
    assert "rate limit" in (run["error"] or "") and len(sfdc.api_calls()) == sent + 1, run


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "1000", "BURST": "1000"}])
def test_a_refusal_for_the_orgs_long_requests_at_once_lasts_seconds_not_the_allocations_hour(sfdc, connection):
    """The same 403 REQUEST_LIMIT_EXCEEDED, for the org's concurrent long
    requests: it frees when one of them ends, so the connection's next call
    is sent, not refused unsent for the hour a used-up allocation holds."""
    fake.seed(sfdc.app, "accounts", 2)
    org = sfdc.org()
    org.concurrency_refusals = 1
    refused = sfdc.get(sfdc.records(connection, "accounts"))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "ConcurrentPerOrgLongTxn Limit exceeded."
    assert 19 <= float(refused.headers["Retry-After"]) <= 21
    sent = len(sfdc.api_calls())
    assert sfdc.get(sfdc.records(connection, "accounts")).status_code == 200
    assert len(sfdc.api_calls()) > sent


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "1000", "BURST": "1000", "ALLOCATION_SHARE": "0.5"}])
def test_the_operators_share_of_the_orgs_allocation_holds_the_connection_once_used(sfdc, connection, caplog):
    """HUB_SALESFORCE_ALLOCATION_SHARE=0.5: once Sforce-Limit-Info says half of
    the org's 24 hours of calls is used (by anyone), the connection's calls
    wait an hour unsent, leaving the rest to the org's other apps and people."""
    fake.seed(sfdc.app, "accounts", 2)
    org = sfdc.org()
    org.api_limit, org.api_used = 100, 40
    assert sfdc.get(sfdc.records(connection, "accounts")).status_code == 200  # 42 of 100 after it
    org.api_used = 60  # the org's other apps
    sent = len(sfdc.api_calls())
    held = sfdc.get(sfdc.records(connection, "accounts"))
    assert held.status_code == 429, held.text
    assert "61% of the account's allocation of calls is used" in held.json()["error"], held.text
    assert 3500 <= float(held.headers["Retry-After"]) <= 3600
    assert len(sfdc.api_calls()) == sent + 1  # the call whose answer told; the listing's next one waits
    again = sfdc.get(sfdc.records(connection, "contacts"))
    assert again.status_code == 429 and len(sfdc.api_calls()) == sent + 1, again.text
    assert "this hub's share is 50%" in caplog.text
    assert sfdc.get(f"{API}/connections/{connection['id']}").json()["connection"]["status"] == "connected"


def test_an_allocation_share_is_a_fraction_and_named_when_it_is_not():
    import hub_salesforce
    from hub.runtime import allocation_of
    from hub.types import ConfigurationError

    assert allocation_of(hub_salesforce.INFO, {}) is None  # no cap: Salesforce's own limit
    capped = allocation_of(hub_salesforce.INFO, {"allocation_share": "0.8"})
    assert (capped.header, capped.share, capped.wait) == ("Sforce-Limit-Info", 0.8, 3600.0)
    for wrong in ({"allocation_share": "1.5"}, {"allocation_share": "0"}, {"allocation_share": "most"},
                  {"allocation_share": "0.8", "allocation_wait_seconds": "-1"}):
        with pytest.raises(ConfigurationError, match="HUB_SALESFORCE_ALLOCATION_SHARE must be a fraction"):
            allocation_of(hub_salesforce.INFO, wrong)


def test_describe_error_reads_the_limit_and_a_lost_locator_from_the_error_array():
    import httpx

    import hub_salesforce
    from hub.types import RateLimited, ValidationFailed

    ctx = type("Ctx", (), {"settings": {}})()
    limited = hub_salesforce.describe_error(httpx.Response(403, json=[
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]), ctx)
    assert isinstance(limited, RateLimited) and limited.retry_after == hub_salesforce.LIMIT_WAIT_SECONDS
    lost = hub_salesforce.describe_error(httpx.Response(404, json=[
        {"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]), ctx)
    assert isinstance(lost, ValidationFailed) and lost.code == "invalid_cursor"
    assert hub_salesforce.describe_error(httpx.Response(503, text="<html>maintenance</html>"), ctx) is None
    assert hub_salesforce.describe_error(httpx.Response(400, json={"error": "invalid_grant",
                                                                   "error_description": "expired"}), ctx) == "expired"
