"""A record whose pending change meets the provider's version (a push reading
it first, a pull) is stored as the provider has it; the app hears of it
through ``records.changed`` whenever that changes the record as the app sees
it, as it hears of any other change a pull stores. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlmodel import select

from hub.models import EventDelivery
from hub.services import events as event_service
from tests.test_push_and_create_keys_review import Addresses
from tests.test_sync_interleavings import Tenant, conflicts, row, sync, webhook


@pytest.fixture
def ledger():
    return Addresses()


def told(hub, conn) -> list[dict]:
    """The ``records.changed`` events queued for the app, oldest first."""
    with hub.session() as session:
        deliveries = session.exec(select(EventDelivery).where(EventDelivery.type == "records.changed")
                                  .order_by(EventDelivery.created_at)).all()
    return [delivery.payload["data"] for delivery in deliveries if delivery.payload["data"]["connection_id"] == conn.id]


def listening_tenant(hub, conn, policy: str) -> Tenant:
    tenant = Tenant(hub, conn, policy)
    event_service.create_endpoint(hub, conn.organization_id, url="https://93.184.216.34/hook",
                                  events=["records.changed"], description=None, enabled=True)
    return tenant


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_push_finding_its_change_made_with_others_tells_the_app_of_the_others(hub, conn, ledger, policy):
    """The shop moved to Paris at both ends, the provider's zip code too: the
    change is settled unsent, and the app, which had 69000, hears of it."""
    tenant = listening_tenant(hub, conn, policy)
    ledger.put("it_00001", {"details": {"city": "Paris", "zip": "75001"}})  # not pulled yet
    tenant.write("it_00001", {"details": {"city": "Paris"}})

    assert sync(hub, conn, direction="push").status == "succeeded" and conflicts(hub, conn) == []
    assert row(hub, conn, "it_00001").data["details"] == {"city": "Paris", "zip": "75001"}
    [event] = told(hub, conn)
    assert (event["updated"], event["created"], event["source"]) == (["it_00001"], [], "sync")


def test_a_push_finding_only_its_own_change_tells_nothing(hub, conn, ledger):
    """The same change made at both ends and nothing else: the app's view of
    the record is what it was."""
    tenant = listening_tenant(hub, conn, "review")
    ledger.put("it_00001", {"details": {"city": "Paris", "zip": "69000"}})
    tenant.write("it_00001", {"details": {"city": "Paris", "zip": "69000"}})

    assert sync(hub, conn, direction="push").status == "succeeded" and conflicts(hub, conn) == []
    assert row(hub, conn, "it_00001").local_op is None
    assert told(hub, conn) == []


def test_a_push_meeting_a_provider_change_as_a_conflict_tells_the_app(hub, conn, ledger):
    """Provider wins: the tenant's change is dropped for the provider's
    version, which the app hears of (as from a pull finding the conflict)."""
    tenant = listening_tenant(hub, conn, "provider_wins")
    ledger.put("it_00001", {"name": "renamed at the provider"})
    tenant.write("it_00001", {"name": "renamed by the tenant"})

    assert sync(hub, conn, direction="push").status == "succeeded"
    [conflict] = conflicts(hub, conn)
    assert conflict.resolution == "provider" and ledger.items["it_00001"]["name"] == "renamed at the provider"
    [event] = told(hub, conn)
    assert event["updated"] == ["it_00001"]


def test_a_pull_finding_the_tenants_change_made_with_others_tells_the_app(hub, conn, ledger):
    tenant = listening_tenant(hub, conn, "review")
    tenant.write("it_00001", {"details": {"city": "Paris"}})
    ledger.put("it_00001", {"details": {"city": "Paris", "zip": "75001"}})

    assert sync(hub, conn, direction="pull").status == "succeeded" and conflicts(hub, conn) == []
    [event] = told(hub, conn)
    assert event["updated"] == ["it_00001"]
    # The same version pulled again changes nothing the app sees.
    assert sync(hub, conn, direction="pull").status == "succeeded"
    assert len(told(hub, conn)) == 1


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_the_webhook_echo_of_the_hubs_own_update_is_not_told_as_a_provider_change(hub, conn, ledger, policy):
    """The provider's webhook of the hub's own update (the new name, and the
    ``updated_at`` the provider stamps) arrives while the push is on its
    way: nothing changed at the provider but the app's own write. (Found by
    a review: it was told, read-only fields compared.)"""
    tenant = listening_tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "renamed in the app"})

    def echo(record_id, result):
        webhook(hub, conn, "updated", record=dict(result))
    ledger.during_update = echo
    assert sync(hub, conn, direction="push").status == "succeeded"
    after = row(hub, conn, "it_00001")
    assert (after.data, after.local_op) == (ledger.items["it_00001"], None)
    assert told(hub, conn) == []


def test_a_pull_finding_the_echo_of_an_update_whose_answer_was_lost_tells_nothing(hub, conn, ledger):
    tenant = listening_tenant(hub, conn, "review")
    tenant.write("it_00001", {"name": "renamed in the app"})
    ledger.lose_answers = 1
    assert sync(hub, conn, direction="push").status == "failed"
    assert row(hub, conn, "it_00001").local_op == "update"

    assert sync(hub, conn, direction="pull").status == "succeeded"
    assert row(hub, conn, "it_00001").data == ledger.items["it_00001"]
    assert told(hub, conn) == []


@pytest.mark.parametrize("policy", ["review", "hub_wins"])
def test_a_record_deleted_under_a_pending_change_and_back_again_is_told_created(hub, conn, ledger, policy):
    """The tenant's pending update meets a deletion at the provider (a
    conflict the app hears of as ``deleted``); the record then comes back
    there. The app dropped it: it is ``created`` to it, as README says of a
    record deleted and back again. (Found by a review: it was ``updated``.)"""
    tenant = listening_tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "renamed in the app"})
    ledger.remove("it_00001")
    webhook(hub, conn, "deleted", record_id="it_00001", occurred_at=datetime.fromisoformat(ledger.tick()))
    assert (row(hub, conn, "it_00001").deleted, row(hub, conn, "it_00001").push_status) == (True, "conflict")

    back = ledger.put("it_00001", {"name": "restored at the provider"})  # (undeleted there: a later version)
    webhook(hub, conn, "updated", record=dict(back))
    assert row(hub, conn, "it_00001").deleted is False
    assert [(event["created"], event["updated"], event["deleted"]) for event in told(hub, conn)] == [
        ([], [], ["it_00001"]), (["it_00001"], [], [])]
