"""The hub's conformance suite against the fake QuickBooks Online: provider
info, schemas, pagination, since, CRUD, errors, OAuth with token refresh and
webhooks, through the hub's API. Every failure says what to fix."""

import functools

import hub_quickbooks
from hub.testing.conformance import ConformanceSuite, ConformanceTarget
from hub_quickbooks import testing as fake


class TestQuickbooksConformance(ConformanceSuite):
    target = ConformanceTarget(
        provider="quickbooks",
        plugin=hub_quickbooks,
        # Loose limits at both ends: these checks are not about them.
        fake_app=functools.partial(fake.create_app, per_second=1000, per_minute=100_000),
        settings={"client_id": fake.CLIENT_ID, "client_secret": fake.CLIENT_SECRET,
                  "webhook_verifier_token": fake.VERIFIER_TOKEN, "requests_per_second": "500", "burst": "500",
                  "rate_limits": "off"},
        expire_tokens=fake.expire_tokens,
        seed=fake.seed,
        samples={
            "customers": {"DisplayName": "Ada Lovelace", "GivenName": "Ada", "FamilyName": "Lovelace",
                          "PrimaryEmailAddr": {"Address": "ada@example.com"}},
            "vendors": {"DisplayName": "Conformance Supplies", "CompanyName": "Conformance Supplies Ltd"},
            "items": {"Name": "Conformance service", "Type": "Service", "UnitPrice": 50},
            "accounts": {"Name": "Conformance sales", "AccountType": "Income"},
            "invoices": {"CustomerRef": {"value": "1"}, "PrivateNote": "conformance", "Line": [
                {"Amount": 100.0, "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {"Qty": 1}}]},
            "payments": {"CustomerRef": {"value": "1"}, "TotalAmt": 25.0, "PaymentRefNum": "conformance"},
        },
        updates={"invoices": {"PrivateNote": "conformance (updated)"},
                 "payments": {"PaymentRefNum": "conformance-2"}},
        webhook=fake.conformance_webhook,
    )
