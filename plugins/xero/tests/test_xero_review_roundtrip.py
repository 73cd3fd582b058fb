"""Found by a review of bidirectional sync with mappings (each test failed on
the code as reviewed): where a
round trip through the hub loses or mangles something at Xero."""

from __future__ import annotations

from hub.testing import wait_for_run
from hub_xero import testing as fake

API = "/api/v1/integrations"


def test_a_mapped_change_to_an_invoice_line_keeps_the_line_at_xero(xero):
    """A tenant changes the unit price of an invoice's first line (mapping
    ``LineItems.0.UnitAmount``). The push sends ``LineItems`` whole, but
    without each line's ``LineItemID`` (declared read-only, so stripped by
    ``writable_payload``): Xero takes lines without their id for new ones,
    deleting the old lines and making new ones. The line must keep its id."""
    connection = xero.connect()
    [invoice_id] = fake.seed(xero.fake, "invoices", 1, ago=3600)
    invoice = xero.tenant().tables["Invoices"][invoice_id]
    line_id = invoice["LineItems"][0]["LineItemID"]
    records = xero.sync_config(connection, "invoices", direction="both", mappings=[
        {"source": "InvoiceID", "target": "id"},
        {"source": "Reference", "target": "reference"},
        {"source": "LineItems.0.UnitAmount", "target": "price"}])
    xero.sync(connection, "invoices", direction="pull")

    written = xero.put(f"{records}/{invoice_id}", {"data": {"price": 25}, "mapped": True, "sync": True})
    assert written.status_code == 200, written.text
    push = wait_for_run(xero.client, xero.auth, connection["id"], written.json()["run_id"])
    assert push["status"] == "succeeded" and push["pushed"] == 1, push

    line = xero.tenant().tables["Invoices"][invoice_id]["LineItems"][0]
    assert line["UnitAmount"] == 25
    assert line["LineItemID"] == line_id  # fails: a new line was made in its place
