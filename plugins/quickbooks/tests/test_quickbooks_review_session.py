"""Findings of a review of the changes of 2026-11-28: each test showed a
finding, and failed on the code as reviewed."""

from __future__ import annotations

from hub_quickbooks import testing as fake

SYSTEM_FAULT = {"Fault": {"Error": [{"Message": "An application error has occurred while processing your request",
                                     "Detail": "System Failure Error: An unexpected error occurred",
                                     "code": "10000"}], "type": "SystemFault"},
                "time": "2024-01-01T00:00:00.000-08:00"}


def test_a_write_to_a_deleted_transaction_whose_read_back_fails_for_now_is_no_permanent_refusal(qbo, connection):
    """Fault 610 "Another user has deleted this transaction" to an update,
    then the one read that tells the record from a reference fails for a
    passing reason (QuickBooks' 503 SystemFault through the retries, or a
    429 of the company's minute, which a batch of pushes spends): the write's
    own refusal stands, 422 ``object_not_found``, which sync keeps as a
    permanent failure of the push. Before the change this answered 404 (the
    record deleted), and the honest answer now is the read's passing error
    (503, sent again later) or the 404 the message says."""
    [invoice] = fake.seed(qbo.app, "invoices", 1)
    company = fake.company(qbo.app)
    company.delete("Invoice", {"Id": invoice, "SyncToken": company.tables["Invoice"][invoice]["SyncToken"]})
    qbo.fake.script(f"/invoice/{invoice}", *[(503, SYSTEM_FAULT)] * 10)
    response = qbo.put(qbo.records(connection["id"], "invoices", invoice),
                       {"data": {"PrivateNote": "x", "SyncToken": "1"}})
    assert any(path.endswith(f"/invoice/{invoice}") for path in qbo.fake.answered)  # (the read was tried)
    assert response.status_code in (404, 503), response.text
