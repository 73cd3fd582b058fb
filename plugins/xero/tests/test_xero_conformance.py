"""The hub's conformance suite against the Xero plugin and its fake, through
the hub's API: provider info, schemas, pagination, since (If-Modified-Since),
CRUD (deletes that keep the record), errors, the OAuth flow, token refresh
and webhooks."""

from __future__ import annotations

import functools

import hub_xero
from hub.testing.conformance import ConformanceSuite, ConformanceTarget
from hub_xero import testing as fake


class TestXeroConformance(ConformanceSuite):
    target = ConformanceTarget(
        provider="xero",
        plugin=hub_xero,
        # Windows the suite's calls stay within, on both sides (the limits have tests of their own).
        fake_app=functools.partial(fake.create_app, minute=(10_000, 60.0)),
        settings={"client_id": fake.CLIENT_ID, "client_secret": fake.CLIENT_SECRET,
                  "webhook_key": fake.WEBHOOK_KEY, "rate_limits": "off"},
        seed=fake.seed,
        samples={
            "contacts": {"Name": "Ada Lovelace", "FirstName": "Ada", "LastName": "Lovelace",
                         "EmailAddress": "ada@example.com"},
            "invoices": {"Type": "ACCREC", "Contact": {"Name": "Opening Customer"}, "Reference": "conformance",
                         "Date": "2026-01-15", "DueDate": "2026-02-15",
                         "LineItems": [{"Description": "Analytical engine", "Quantity": 1, "UnitAmount": 150.0}]},
            "items": {"Code": "CONF-1", "Name": "Conformance item", "Description": "conformance",
                      "SalesDetails": {"UnitPrice": 12.5, "AccountCode": "200"}},
            "payments": {"Invoice": {"InvoiceID": fake.OPEN_INVOICE}, "Account": {"Code": fake.BANK_CODE},
                         "Date": "2026-01-20", "Amount": 1.5, "Reference": "conformance"},
        },
        updates={"invoices": {"Reference": "conformance (updated)"}},
        webhook=fake.conformance_webhook,
        expire_tokens=fake.expire_tokens,
    )
