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
    assert run["status"] == "failed" and time.monotonic() - started < 5, run
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
