"""Xero's If-Modified-Since does not list a contact whose IsCustomer,
IsSupplier or Balances changed (its UpdatedDateUTC stays: "changes to the
Balances, IsCustomer or IsSupplier values will not trigger a contact to be
returned with the Modified-After filter", Xero's Contacts reference). Sync
lists contacts whole once a day (``full_pass_hours``) to bring such changes."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from hub.models import SyncState
from hub_xero import testing as fake

API = "/api/v1/integrations"
MAPPINGS = [{"source": "ContactID", "target": "xero_id"}, {"source": "Name", "target": "name"},
            {"source": "IsCustomer", "target": "is_customer"}, {"source": "IsSupplier", "target": "is_supplier"}]


def test_a_contact_made_a_customer_arrives_with_the_daily_full_pass(xero):
    connection = xero.connect()
    [contact] = fake.seed(xero.fake, "contacts", 1, ago=3600)
    base = f"{API}/connections/{connection['id']}"
    created = xero.post(f"{base}/sync-configs", {"entity": "contacts", "direction": "pull", "mappings": MAPPINGS})
    assert created.status_code == 201, created.text
    records = f"{base}/sync-configs/{created.json()['sync_config']['id']}/records"
    xero.sync(connection, "contacts", direction="pull")
    assert xero.stored(records, mapped=True)[contact]["is_customer"] is False
    listed = xero.get(f"{API}/providers/xero/entities/contacts").json()
    assert listed["entity"]["full_pass_hours"] == 24, listed

    # A sales invoice makes the contact a customer; Xero keeps its UpdatedDateUTC.
    updated_before = xero.tenant().tables["Contacts"][contact]["UpdatedDateUTC"]
    xero.tenant().write("Invoices", {"Type": "ACCREC", "Contact": {"ContactID": contact},
                                     "LineItems": [{"Description": "x", "Quantity": 1, "UnitAmount": 5}]})
    row = xero.tenant().tables["Contacts"][contact]
    assert (row["IsCustomer"], row["UpdatedDateUTC"]) == (True, updated_before)

    # An incremental pass within the day does not see it: Xero does not list the contact.
    xero.sync(connection, "contacts", direction="pull")
    assert xero.stored(records, mapped=True)[contact]["is_customer"] is False

    # A day after the last full pass, the next one is full and brings it.
    with xero.hub_app.state.hub.session() as session:
        [state] = session.exec(select(SyncState).where(SyncState.connection_id == connection["id"])).all()
        state.last_full_pass_at -= timedelta(hours=25)
        session.add(state)
        session.commit()
    xero.sync(connection, "contacts", direction="pull")
    stored = xero.stored(records, mapped=True)[contact]
    assert (stored["is_customer"], stored["is_supplier"]) == (True, False)
