"""The hub's conformance suite against the Salesforce plugin and its fake org,
through the hub's API: provider info, schemas, pagination (query locators),
since (SystemModstamp), CRUD with read-back, errors, the OAuth flow with PKCE
and the refresh after a session ends."""

from __future__ import annotations

import hub_salesforce
from hub.testing.conformance import ConformanceSuite, ConformanceTarget
from hub_salesforce import testing as fake


class TestSalesforceConformance(ConformanceSuite):
    target = ConformanceTarget(
        provider="salesforce",
        plugin=hub_salesforce,
        fake_app=fake.create_app,
        settings={"client_id": fake.CLIENT_ID, "client_secret": fake.CLIENT_SECRET, "requests_per_second": "1000",
                  "burst": "1000"},
        seed=fake.seed,
        samples={
            "accounts": {"Name": "Analytical Engines Ltd", "Industry": "Manufacturing", "NumberOfEmployees": 12},
            "contacts": {"FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com"},
            "leads": {"FirstName": "Grace", "LastName": "Hopper", "Company": "Navy"},
            "opportunities": {"Name": "Engine No. 2", "StageName": "Prospecting", "CloseDate": "2030-06-30",
                              "Amount": 1500.0},
        },
        expire_tokens=fake.expire_tokens,
    )
