"""A provider with optimistic concurrency (QuickBooks' SyncToken, an ETag):
the push sends the version its change was made on (``base``), and a refusal
because the record changed there since (``StaleVersion``) is read again and
meets the conflict policy, instead of failing for good or overwriting. On
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from hub import hookimpl
from hub.types import NotFound, StaleVersion
from tests.test_sync_interleavings import Interleaving, Tenant, conflicts, row, sync


class Versioned(Interleaving):
    """The ledger refusing a write whose ``base`` is not the current version
    (its ``updated_at`` as the token); ``change_before_write`` changes the
    record at the provider just before the next write arrives."""

    def __init__(self, items: int = 0):
        super().__init__(items)
        self.change_before_write: dict | None = None
        self.bases: list = []

    def _check(self, record_id, base):
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        if self.change_before_write is not None:
            change, self.change_before_write = self.change_before_write, None
            self.put(record_id, change)
        self.bases.append(base)
        if base is None or base.get("updated_at") != self.items[record_id]["updated_at"]:
            raise StaleVersion(f"item {record_id} changed since the version sent (stale object)")

    @hookimpl
    def update_record(self, entity, record_id, data, base):
        self._check(record_id, base)
        return dict(self.put(record_id, data))

    @hookimpl
    def delete_record(self, entity, record_id, base):
        self._check(record_id, base)
        self.remove(record_id)
        return True


@pytest.fixture
def ledger():
    return Versioned(items=3)


def test_an_update_goes_on_the_version_it_was_made_on(hub, conn, ledger):
    tenant = Tenant(hub, conn, "hub_wins")
    stored_version = row(hub, conn, "it_00001").data
    tenant.write("it_00001", {"name": "tenant"})
    assert sync(hub, conn, direction="push").status == "succeeded"
    assert ledger.bases == [stored_version] and ledger.items["it_00001"]["name"] == "tenant"


@pytest.mark.parametrize("policy", ["review", "provider_wins"])
def test_a_write_refused_as_stale_meets_the_provider_version_as_a_conflict(hub, conn, ledger, policy):
    """Changed at the provider after the push read it: the refusal was a
    permanent failure of the push (push_status failed, no conflict)."""
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "tenant"})
    ledger.change_before_write = {"name": "provider"}
    pushed = sync(hub, conn, direction="push")
    assert (pushed.status, pushed.conflicts, pushed.failed) == ("succeeded", 1, 0)
    assert ledger.items["it_00001"]["name"] == "provider"  # not overwritten
    after = row(hub, conn, "it_00001")
    assert after.data == ledger.items["it_00001"]
    [conflict] = conflicts(hub, conn)
    assert conflict.local_data == {"op": "update", "data": {"name": "tenant"}}
    assert conflict.status == ("open" if policy == "review" else "resolved")


def test_under_hub_wins_a_stale_write_goes_once_more_on_the_version_read_again(hub, conn, ledger):
    tenant = Tenant(hub, conn, "hub_wins")
    tenant.write("it_00001", {"name": "tenant"})
    ledger.change_before_write = {"name": "provider"}
    pushed = sync(hub, conn, direction="push")
    assert (pushed.status, pushed.pushed, pushed.failed) == ("succeeded", 1, 0)
    assert ledger.items["it_00001"]["name"] == "tenant" and len(ledger.bases) == 2
    assert row(hub, conn, "it_00001").push_status is None


def test_a_delete_refused_as_stale_is_a_conflict_under_review(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    tenant.delete("it_00002")
    ledger.change_before_write = {"name": "provider"}
    pushed = sync(hub, conn, direction="push")
    assert (pushed.status, pushed.conflicts) == ("succeeded", 1)
    assert "it_00002" in ledger.items


def test_a_stale_delete_of_a_record_gone_meanwhile_is_done(hub, conn, ledger):
    """The record read again after the refusal was gone: the push failed for
    good with "no item", though the delete got what it wanted."""
    tenant = Tenant(hub, conn, "hub_wins")
    tenant.delete("it_00001")

    def refuse_then_vanish(record_id, base):
        ledger.remove(record_id)
        raise StaleVersion("changed since")

    ledger._check = refuse_then_vanish
    pushed = sync(hub, conn, direction="push")
    assert (pushed.status, pushed.pushed, pushed.failed) == ("succeeded", 1, 0), pushed
    after = row(hub, conn, "it_00001")
    assert after.deleted and after.push_status is None


class Unreadable(Versioned):
    """No get_record: a stale write cannot be read again."""

    get_record = None


def test_without_get_record_a_stale_write_is_left_to_the_tenant_not_retried_forever(settings):
    from tests.sync_support import ledger_hub, make_connection

    ledger = Unreadable(items=2)
    hub = ledger_hub(settings, ledger)
    conn = make_connection(hub, "ledger", {"api_key": "k"})
    tenant = Tenant(hub, conn, "hub_wins")
    tenant.write("it_00001", {"name": "tenant"})
    ledger.change_before_write = {"name": "provider"}
    pushed = sync(hub, conn, direction="push")
    assert pushed.failed == 1, pushed
    after = row(hub, conn, "it_00001")
    assert after.push_status == "failed" and "changed since" in after.push_error
    again = sync(hub, conn, direction="push")
    assert len(ledger.bases) == 1, "not sent again on the same stale version"
    assert again.status == "succeeded"
