"""Objects of very many fields (an Account of some 700 of the org's own, as
managed packages leave them) through the hub's API against the fake org: a
query naming them all is longer than Salesforce takes in a URL (16,384 bytes
of URL and headers: 414 or 431), so it goes in the body of a composite
request, and its next batches follow the query locator as usual. The
subrequest's answer is handled as a direct query's would be (its errors
described, a 5xx retried); the composite call is refused, refreshed and
counted as any call."""

from __future__ import annotations

import httpx
import pytest

from hub_salesforce import testing as fake

API = "/api/v1/integrations"
COMPOSITE = "/services/data/v62.0/composite"


def widen(sfdc, count: int = 700) -> list[str]:
    """The org's Account gets ``count`` fields of its own, named as managed packages name them."""
    names = [f"Acme_Revenue_Intelligence_Forecast_Attribute_{n:03d}__c" for n in range(count)]
    for name in names:
        fake.add_custom_field(sfdc.app, "accounts", name)
    return names


def paths(sfdc, since: int) -> list[tuple[str, str]]:
    return [(method, path) for _host, method, path in sfdc.api_calls(since)]


@pytest.mark.parametrize("fake_options", [{"max_batch": 3}])
def test_an_account_of_700_fields_of_the_orgs_own_syncs_whole_in_batches(sfdc, connection):
    names = widen(sfdc)
    ids = fake.seed(sfdc.app, "accounts", 7, ago=3600)
    for n, record_id in enumerate(ids):
        fake.touch(sfdc.app, "accounts", record_id, **{names[0]: f"tier {n}", names[699]: f"region {n}"})
    records = sfdc.sync_config(connection, "accounts", direction="pull")

    def pull() -> dict:
        return sfdc.sync(connection, "accounts", direction="pull")

    def stored() -> dict[str, dict]:
        return sfdc.stored(records)

    def org_accounts() -> dict[str, dict]:
        return {i: {k: v for k, v in row.items() if k not in ("LastViewedDate", "LastReferencedDate")}
                for i, row in sfdc.org().tables["Account"].items()}

    calls, used = len(sfdc.api_calls()), sfdc.org().api_used
    first = pull()
    assert (first["fetched"], first["created"]) == (7, 7), first
    assert stored() == org_accounts()
    assert all(len(record) > 700 for record in stored().values())
    assert stored()[ids[6]][names[699]] == "region 6" and stored()[ids[0]][names[0]] == "tier 0"
    # The query went in a composite request's body; its batches followed its locator by GET.
    sent = paths(sfdc, calls)
    assert sent[:2] == [("GET", "/services/data/v62.0/sobjects/Account/describe"), ("POST", COMPOSITE)], sent
    assert [m for m, p in sent[2:]] == ["GET", "GET"] and all(
        p.startswith("/services/data/v62.0/query/01g") for _m, p in sent[2:]), sent
    assert not any(p == "/services/data/v62.0/query" for _m, p in sent)
    [(method, url)] = sfdc.app.state.subrequests
    assert method == "GET" and url.startswith("/services/data/v62.0/query/?q=SELECT+") and len(url) > 16_384
    # The batch the sync asks (not the default 2,000), in the subrequest's Sforce-Query-Options too.
    assert sfdc.app.state.batch_sizes[-3:] == [200, 200, 200]
    assert sfdc.org().api_used - used == len(sent) == 4  # (the composite call is one call)

    # An incremental pass goes the same way (its query names the same fields).
    fake.touch(sfdc.app, "accounts", ids[3], **{names[350]: "changed"})
    second = pull()
    assert second["updated"] >= 1 and stored() == org_accounts(), second
    assert stored()[ids[3]][names[350]] == "changed"
    assert len(sfdc.app.state.subrequests) == 2 and "+WHERE+SystemModstamp+%3E%3D+" in sfdc.app.state.subrequests[1][1]

    # An object whose query fits a URL is still queried in it (GET …/query?q=).
    fake.seed(sfdc.app, "contacts", 2)
    calls = len(sfdc.api_calls())
    assert len(sfdc.get(sfdc.records(connection, "contacts")).json()["records"]) == 2
    assert paths(sfdc, calls)[-1] == ("GET", "/services/data/v62.0/query")
    assert len(sfdc.app.state.subrequests) == 2


def test_a_field_the_org_no_longer_has_is_the_same_error_in_a_composite_as_in_a_url(sfdc, connection):
    """Salesforce refuses the query (400 INVALID_FIELD: a field removed between
    ``describe`` and the query); within the composite's 200, the subrequest's
    status and error array are the error a direct query's are, not an empty listing."""
    fake.seed(sfdc.app, "accounts", 2)

    def described_with(extra: str) -> dict:
        return {"name": "Account", "fields": [{"name": n} for n in sorted(sfdc.org().fields("Account"))]
                + [{"name": extra}]}

    sfdc.fake.script("/sobjects/Account/describe", (200, described_with("Deleted_Meanwhile__c")))
    direct = sfdc.get(sfdc.records(connection, "accounts"))
    widen(sfdc)
    sfdc.fake.script("/sobjects/Account/describe", (200, described_with("Deleted_Meanwhile__c")))
    calls = len(sfdc.api_calls())
    composite = sfdc.get(sfdc.records(connection, "accounts"))
    assert ("POST", COMPOSITE) in paths(sfdc, calls)
    assert direct.status_code == composite.status_code == 422, (direct.text, composite.text)
    assert direct.json() == composite.json()
    assert composite.json()["code"] == "invalid_field"
    assert composite.json()["error"].startswith("No such column 'Deleted_Meanwhile__c' on entity 'Account'")
    assert composite.json()["details"][0]["errorCode"] == "INVALID_FIELD"


def test_an_internal_error_of_the_query_is_retried_in_a_composite_as_in_a_url(sfdc, connection):
    """Salesforce's own failure of a query (500 ``UNKNOWN_EXCEPTION``) comes,
    in a composite, as the subrequest's status within a 200: the composite
    call is sent again as a direct query is, then fails as it does once the
    core's attempts (3 here) are spent."""
    [account] = fake.seed(sfdc.app, "accounts", 1)
    sfdc.app.state.failing_queries = 2
    calls = len(sfdc.api_calls())
    direct = sfdc.get(sfdc.records(connection, "accounts"))
    assert direct.status_code == 200 and [r["Id"] for r in direct.json()["records"]] == [account], direct.text
    assert paths(sfdc, calls).count(("GET", "/services/data/v62.0/query")) == 3
    sfdc.app.state.failing_queries = 3
    direct_failed = sfdc.get(sfdc.records(connection, "accounts"))

    widen(sfdc)
    sfdc.app.state.failing_queries = 2
    calls = len(sfdc.api_calls())
    composite = sfdc.get(sfdc.records(connection, "accounts"))
    assert composite.status_code == 200 and [r["Id"] for r in composite.json()["records"]] == [account], (
        composite.text)
    assert paths(sfdc, calls) == [("GET", "/services/data/v62.0/sobjects/Account/describe")] + [
        ("POST", COMPOSITE)] * 3
    assert sfdc.app.state.failing_queries == 0

    sfdc.app.state.failing_queries = 3
    calls = len(sfdc.api_calls())
    failed = sfdc.get(sfdc.records(connection, "accounts"))
    assert paths(sfdc, calls).count(("POST", COMPOSITE)) == 3
    assert failed.status_code == direct_failed.status_code == 503, (failed.text, direct_failed.text)
    assert failed.json()["code"] == direct_failed.json()["code"] == "unknown_exception"
    assert failed.json()["details"][0]["errorCode"] == "UNKNOWN_EXCEPTION"
    assert failed.json()["error"].startswith("An unexpected error occurred.")
    assert sfdc.get(f"{API}/connections/{connection['id']}").json()["connection"]["status"] == "connected"


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "1000", "BURST": "1000", "LIMIT_WAIT_SECONDS": "120"}])
def test_the_allocation_used_up_refuses_a_composite_query_as_a_direct_one(sfdc, connection):
    """Salesforce counts the composite call as one, and refuses it as a whole
    (403 ``REQUEST_LIMIT_EXCEEDED``) once the org's allocation is used up: a
    rate limit, after which the connection's next calls wait unsent, as after
    a direct query's refusal."""
    widen(sfdc)
    fake.seed(sfdc.app, "accounts", 1)
    org = sfdc.org()
    org.api_used = org.api_limit - 1  # the describe is the allocation's last call; the composite is refused
    calls = len(sfdc.api_calls())
    refused = sfdc.get(sfdc.records(connection, "accounts"))
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited", refused.text
    assert 115 <= float(refused.headers["Retry-After"]) <= 121
    assert paths(sfdc, calls) == [("GET", "/services/data/v62.0/sobjects/Account/describe"), ("POST", COMPOSITE)]
    assert sfdc.get(sfdc.records(connection, "contacts")).status_code == 429
    assert len(sfdc.api_calls()) == calls + 2  # refused unsent


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "1000", "BURST": "1000", "LIMIT_WAIT_SECONDS": "120"}])
def test_a_subrequests_refusal_is_what_the_same_refusal_of_a_direct_query_is(sfdc, connection):
    """Scripted (Salesforce refuses the composite call as a whole): whatever
    the subrequest's answer says, the hub does what it does for a direct call
    answered so: the allocation's refusal is a rate limit the connection's
    next calls wait out unsent."""
    widen(sfdc)
    fake.seed(sfdc.app, "accounts", 1)
    limit = fake.errors("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    sfdc.fake.script("/composite", (200, {"compositeResponse": [
        {"body": limit, "httpHeaders": {}, "httpStatusCode": 403, "referenceId": "listing"}]}))
    inside = sfdc.get(sfdc.records(connection, "accounts"))
    assert inside.status_code == 429 and inside.json()["code"] == "rate_limited", inside.text
    assert inside.json()["details"] == limit and 115 <= float(inside.headers["Retry-After"]) <= 121
    calls = len(sfdc.api_calls())
    assert sfdc.get(sfdc.records(connection, "contacts")).status_code == 429
    assert len(sfdc.api_calls()) == calls  # refused unsent


def test_an_ended_session_is_refreshed_and_the_composite_query_sent_again(sfdc, connection):
    names = widen(sfdc)
    [account] = fake.seed(sfdc.app, "accounts", 1)
    fake.touch(sfdc.app, "accounts", account, **{names[123]: "kept"})
    fake.expire_tokens(sfdc.app)  # (met by the listing's describe: refreshed before the composite)
    listed = sfdc.get(sfdc.records(connection, "accounts"))
    assert listed.status_code == 200 and listed.json()["records"][0][names[123]] == "kept", listed.text
    assert sfdc.app.state.refreshes == 1

    # The session ends between the describe and the composite: Salesforce answers the composite
    # call 401 as a whole (as the fake does to an ended session: scripted here for its timing).
    sfdc.fake.script(COMPOSITE, (401, fake.errors("INVALID_SESSION_ID", "Session expired or invalid")))
    calls = len(sfdc.api_calls())
    again = sfdc.get(sfdc.records(connection, "accounts"))
    assert again.status_code == 200 and again.json()["records"][0][names[123]] == "kept", again.text
    assert sfdc.app.state.refreshes == 2
    assert paths(sfdc, calls) == [("GET", "/services/data/v62.0/sobjects/Account/describe"), ("POST", COMPOSITE)]
    assert sfdc.fake.answered[-1] == COMPOSITE  # (the scripted 401, then the composite sent again)
    assert sfdc.get(f"{API}/connections/{connection['id']}").json()["connection"]["status"] == "connected"


def test_the_fake_takes_urls_and_composite_requests_as_salesforce_does(sfdc, connection):
    token = sfdc.secrets(connection["id"])["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    query = f"{sfdc.login}/services/data/v62.0/query"
    long_soql = "SELECT " + ", ".join(f"Field_{n:04d}__c" for n in range(1500)) + " FROM Account"
    assert httpx.get(query, params={"q": long_soql}, headers=auth).status_code == 414
    assert httpx.get(query, params={"q": "SELECT Id FROM Account"},
                     headers={**auth, "X-Padding": "x" * 16_300}).status_code == 431
    assert httpx.get(query, params={"q": "SELECT Id FROM Account"}, headers=auth).status_code == 200

    composite = f"{sfdc.login}{COMPOSITE}"
    used = sfdc.org().api_used
    sub = {"method": "GET", "url": "/services/data/v62.0/query/?q=SELECT+Id+FROM+Account", "referenceId": "q1"}
    answered = httpx.post(composite, json={"compositeRequest": [sub, {**sub, "referenceId": "q2", "url": (
        "/services/data/v62.0/query/?q=SELECT+Nope__c+FROM+Account")}]}, headers=auth)
    assert answered.status_code == 200 and sfdc.org().api_used == used + 1
    first, second = answered.json()["compositeResponse"]
    assert (first["httpStatusCode"], first["referenceId"], first["body"]["done"]) == (200, "q1", True)
    assert (second["httpStatusCode"], second["body"][0]["errorCode"]) == (400, "INVALID_FIELD")
    malformed = [{"allOrNone": False}, {"compositeRequest": [{**sub, "referenceId": "a-b"}]},
                 {"compositeRequest": [sub, sub]}, {"compositeRequest": [{**sub, "method": "get"}]},
                 {"compositeRequest": [{**sub, "httpHeaders": {"Authorization": "Bearer x"}}]},
                 {"compositeRequest": [{**sub, "referenceId": f"q{n}"} for n in range(26)]}]
    for body in malformed:
        refused = httpx.post(composite, json=body, headers=auth)
        assert refused.status_code == 400 and refused.json()[0]["errorCode"], (body, refused.text)
    # Salesforce's own failure of a query is the subrequest's; the allocation and the session are the call's.
    sfdc.app.state.failing_queries = 1
    failing = httpx.post(composite, json={"compositeRequest": [sub]}, headers=auth)
    assert failing.status_code == 200, failing.text
    [result] = failing.json()["compositeResponse"]
    assert (result["httpStatusCode"], result["body"][0]["errorCode"]) == (500, "UNKNOWN_EXCEPTION")
    sfdc.org().api_used = sfdc.org().api_limit
    over = httpx.post(composite, json={"compositeRequest": [sub]}, headers=auth)
    assert over.status_code == 403 and over.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED", over.text
    sfdc.org().api_used = 0
    fake.expire_tokens(sfdc.app)
    ended = httpx.post(composite, json={"compositeRequest": [sub]}, headers=auth)
    assert ended.status_code == 401 and ended.json()[0]["errorCode"] == "INVALID_SESSION_ID", ended.text
