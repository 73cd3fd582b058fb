"""The fake QuickBooks answers like QuickBooks where the plugin depends on
it, spoken to directly over HTTP: the query language's answers (an empty
``QueryResponse`` past the end, ``>`` and ``>=`` on LastUpdatedTime,
``ORDERBY``, active name-list records only unless asked, a parse error as
Fault 4000), ``requestid`` replays, stale ``SyncToken`` refusals, and the
gateway's 401."""

from __future__ import annotations

import httpx
import pytest

from hub_quickbooks import testing as fake


@pytest.fixture
def intuit(serve_app):
    app = fake.create_app(customers=4, per_second=1000, per_minute=100_000)
    app.state.access["token"] = (fake.REALM, float("inf"))
    with httpx.Client(base_url=f"{serve_app(app)}/v3/company/{fake.REALM}",
                      headers={"Authorization": "Bearer token", "Accept": "application/json"}) as client:
        yield client, app


def _query(client, text: str) -> httpx.Response:
    return client.get("/query", params={"query": text, "minorversion": "75"})


def test_the_query_language(intuit):
    client, app = intuit
    company = fake.company(app)
    row = company.tables["Customer"]["2"]
    company.update("Customer", {"Id": "2", "SyncToken": row["SyncToken"], "sparse": True, "Active": False})
    active = _query(client, "SELECT * FROM Customer STARTPOSITION 1 MAXRESULTS 10").json()
    assert [r["Id"] for r in active["QueryResponse"]["Customer"]] == ["1", "3", "4"]
    assert (active["QueryResponse"]["startPosition"], active["QueryResponse"]["maxResults"]) == (1, 3)
    every = _query(client, "select * from Customer where Active IN (true, false) orderby Id DESC").json()
    assert [r["Id"] for r in every["QueryResponse"]["Customer"]] == ["4", "3", "2", "1"]
    assert _query(client, "SELECT * FROM Customer STARTPOSITION 4 MAXRESULTS 2").json()["QueryResponse"] == {}
    assert _query(client, "SELECT * FROM Vendor").json()["QueryResponse"] == {}

    stamp = company.tables["Customer"]["3"]["MetaData"]["LastUpdatedTime"]
    after = f"SELECT * FROM Customer WHERE MetaData.LastUpdatedTime > '{stamp}' ORDERBY MetaData.LastUpdatedTime"
    assert [r["Id"] for r in _query(client, after).json()["QueryResponse"]["Customer"]] == ["4"]
    at_or_after = after.replace(">", ">=")
    assert [r["Id"] for r in _query(client, at_or_after).json()["QueryResponse"]["Customer"]] == ["3", "4"]

    refused = _query(client, "SELECT Name FROM Customer WHERE DisplayName LIKE 'A%'")
    assert refused.status_code == 400 and refused.json()["Fault"]["Error"][0]["code"] == "4000"


def test_writes_honour_requestid_and_sync_token(intuit):
    client, app = intuit
    create = {"DisplayName": "Ada Lovelace"}
    first = client.post("/customer", params={"requestid": "r-1"}, json=create).json()["Customer"]
    again = client.post("/customer", params={"requestid": "r-1"}, json=create).json()["Customer"]
    assert first == again and len(fake.company(app).tables["Customer"]) == 5

    change = {"Id": first["Id"], "SyncToken": "0", "sparse": True, "Notes": "one"}
    assert client.post("/customer", json=change).json()["Customer"]["SyncToken"] == "1"
    stale = client.post("/customer", json={**change, "Notes": "two"})
    assert stale.status_code == 400 and stale.json()["Fault"]["Error"][0]["code"] == "5010"
    not_deleted = client.post("/customer", params={"operation": "delete"}, json={"Id": first["Id"], "SyncToken": "1"})
    assert not_deleted.status_code == 400 and first["Id"] in fake.company(app).tables["Customer"]


def test_a_refused_token_is_the_gateway_s_401(intuit):
    client, _app = intuit
    response = client.get("/customer/1", headers={"Authorization": "Bearer expired"})
    assert response.status_code == 401 and response.json()["fault"]["error"][0]["code"] == "3200"
