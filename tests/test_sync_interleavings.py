"""A push meeting what happens while it is on its way: the provider's
webhooks (the echo of the hub's own write, a later change, a deletion), the
tenant changing or discarding records of the batch, the config deleted. The
provider's hooks run a step in the middle of the write, deterministically.
On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import select

from hub import hookimpl
from hub.models import SyncConfig, SyncConflict, SyncRecord, WebhookEvent, WebhookEventState
from hub.services.webhooks import WebhookProcessor
from hub.sync import configs as config_service
from hub.sync import stored
from hub.sync.engine import SyncEngine, create_run
from hub.testing import wait_until
from hub.types import AuthFailed, NotFound, ProviderUnavailable, ValidationFailed
from tests.sync_support import Ledger, ledger_hub, make_connection, run, stored_rows, waiting_for_a_lock


class Interleaving(Ledger):
    """The ledger with ``get_record``, running ``during_create``/``during_update``
    once, right after the provider made the write and before the hub hears of it."""

    def __init__(self, items: int = 0):
        super().__init__(items)
        self.during_update = self.during_create = self.during_get = None
        #: Updates made whose answer is lost; get_record calls refused as if the token were revoked.
        self.lose_answers = self.refuse_gets = 0

    @hookimpl
    def get_record(self, entity, record_id):
        if self.refuse_gets:
            self.refuse_gets -= 1
            raise AuthFailed("the token was revoked")
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        step, self.during_get = self.during_get, None
        if step:
            step(record_id)
        return dict(self.items[record_id])

    @hookimpl
    def update_record(self, entity, record_id, data):
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        result = dict(self.put(record_id, data))
        step, self.during_update = self.during_update, None
        if step:
            step(record_id, result)
        if self.lose_answers:
            self.lose_answers -= 1
            raise ProviderUnavailable("no answer (it was made)")
        return result

    @hookimpl
    def create_record(self, entity, data, idempotency_key):
        item_id = f"it_new_{len(self.items)}"
        result = dict(self.put(item_id, data))
        step, self.during_create = self.during_create, None
        if step:
            step(item_id, result)
        return result


@pytest.fixture
def ledger():
    return Interleaving(items=4)


class Tenant:
    """The stored-records service as the API calls it, for one connection's items."""

    def __init__(self, hub, conn, policy: str):
        self.hub, self.conn = hub, conn
        assert sync(hub, conn).status == "succeeded"
        with hub.session() as session:
            self.config = session.exec(select(SyncConfig).where(SyncConfig.connection_id == conn.id)).one()
            self.config.direction, self.config.conflict_policy = "both", policy
            session.add(self.config)
            session.commit()
            session.refresh(self.config)
            self.connection = session.get(type(conn), conn.id)

    def write(self, remote_id: str | None, changes: dict) -> SyncRecord:
        record_id = row(self.hub, self.conn, remote_id).id if remote_id else None
        return stored.write_record(self.hub, self.connection, self.config, record_id, changes, mapped=False)

    def delete(self, remote_id: str) -> None:
        stored.delete_record(self.hub, self.connection, self.config, row(self.hub, self.conn, remote_id).id)

    def discard(self, remote_id: str) -> None:
        stored.discard_change(self.hub, self.connection, self.config, row(self.hub, self.conn, remote_id).id)


def sync(hub, conn, direction=None):
    new_run, _ = create_run(hub, conn, entity="items", direction=direction)

    async def execute():
        try:
            return await SyncEngine(hub).execute(new_run.id)
        finally:
            await hub.close()
    return run(execute())


def pending_event(hub, conn, name, occurred_at, ledger):
    """A stored event renaming it_00001, not processed yet; its id."""
    event = WebhookEvent(provider="ledger", dedup_key=uuid.uuid4().hex, connection_id=conn.id,
                         organization_id=conn.organization_id, type="items.updated", entity="items",
                         action="updated", payload={**ledger.items["it_00001"], "name": name})
    with hub.session() as session:
        session.add(event)
        session.add(WebhookEventState(event_id=event.id, occurred_at=occurred_at))
        session.commit()
    return event.id


def webhook(hub, conn, action, record=None, record_id=None, occurred_at=None) -> None:
    """A verified event stored and applied, as the webhook processor does."""
    event = WebhookEvent(provider="ledger", dedup_key=uuid.uuid4().hex, connection_id=conn.id,
                         organization_id=conn.organization_id, type=f"items.{action}", entity="items",
                         action=action, record_id=record_id, payload=record)
    with hub.session() as session:
        session.add(event)
        session.add(WebhookEventState(event_id=event.id, occurred_at=occurred_at))
        session.commit()
    WebhookProcessor(hub)._process_batch()


def row(hub, conn, remote_id=None, record_id=None) -> SyncRecord:
    with hub.session() as session:
        if record_id:
            return session.get(SyncRecord, record_id)
        return session.exec(select(SyncRecord).where(SyncRecord.connection_id == conn.id,
                                                     SyncRecord.remote_id == remote_id)).one()


def conflicts(hub, conn) -> list[SyncConflict]:
    with hub.session() as session:
        return list(session.exec(select(SyncConflict).where(SyncConflict.connection_id == conn.id)))


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_the_echo_of_a_push_and_a_change_made_meanwhile_are_no_conflict(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "v1"})

    def meanwhile(record_id, result):  # the tenant changes it again, then the provider's echo of v1 comes
        tenant.write("it_00001", {"name": "v2"})
        webhook(hub, conn, "updated", record=dict(result))
    ledger.during_update = meanwhile
    pushed = sync(hub, conn, direction="push")
    assert (pushed.status, pushed.pushed, pushed.conflicts) == ("succeeded", 2, 0)
    assert ledger.items["it_00001"]["name"] == "v2" and conflicts(hub, conn) == []
    after = row(hub, conn, "it_00001")
    assert (after.data, after.local_op, after.push_status) == (ledger.items["it_00001"], None, None)


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_provider_change_arriving_while_the_push_is_on_its_way_meets_the_policy(hub, conn, ledger, policy):
    # Which came first at the provider cannot be known: the tenant's change and the provider's
    # are both kept (a conflict), and the answer of the push does not overwrite the newer version.
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "v1"})

    def meanwhile(record_id, result):  # changed at the provider right after the hub's update
        webhook(hub, conn, "updated", record=dict(ledger.put(record_id, {"name": "other"})))
    ledger.during_update = meanwhile
    pushed = sync(hub, conn, direction="push")
    assert (pushed.status, pushed.pushed) == ("succeeded", 1)
    after = row(hub, conn, "it_00001")
    assert after.data == ledger.items["it_00001"] and after.data["name"] == "other"
    [conflict] = conflicts(hub, conn)
    assert (conflict.local_data, conflict.remote_data["name"]) == ({"op": "update", "data": {"name": "v1"}}, "other")
    if policy == "provider_wins":
        assert (conflict.status, after.local_op, after.push_status) == ("resolved", None, None)
    else:
        assert (conflict.status, after.local_data, after.push_status) == ("open", {"name": "v1"}, "conflict")


def test_a_deletion_arriving_while_the_update_is_on_its_way_is_kept_and_meets_the_policy(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00001", {"name": "v1"})

    def meanwhile(record_id, result):  # deleted at the provider right after the hub's update
        ledger.remove(record_id)
        webhook(hub, conn, "deleted", record_id=record_id, occurred_at=datetime.fromisoformat(ledger.tick()))
    ledger.during_update = meanwhile
    assert sync(hub, conn, direction="push").status == "succeeded"
    after = row(hub, conn, "it_00001")
    assert (after.deleted, after.push_status) == (True, "conflict")
    [conflict] = conflicts(hub, conn)
    assert (conflict.status, conflict.remote_data) == ("open", None)


def test_a_created_record_deleted_before_its_answer_was_stored_stays_deleted(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    new = tenant.write(None, {"name": "fresh", "amount": 5})

    def meanwhile(item_id, result):
        ledger.remove(item_id)
        webhook(hub, conn, "deleted", record_id=item_id, occurred_at=datetime.fromisoformat(ledger.tick()))
    ledger.during_create = meanwhile
    assert sync(hub, conn, direction="push").status == "succeeded"
    after = row(hub, conn, record_id=new.id)
    assert (after.deleted, after.data["name"], after.local_op) == (True, "fresh", None)
    assert len(stored_rows(hub, conn.id, "items")) == 5  # the deletion's tombstone went: one row


def test_the_pulled_copy_of_a_create_arriving_first_hands_over_the_tenants_change(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    new = tenant.write(None, {"name": "fresh", "amount": 5})

    def meanwhile(item_id, result):  # its webhook comes first, and the tenant changes that copy
        webhook(hub, conn, "created", record=dict(result))
        tenant.write(item_id, {"amount": 6})
    ledger.during_create = meanwhile
    assert sync(hub, conn, direction="push").status == "succeeded"
    after = row(hub, conn, record_id=new.id)
    assert ledger.items[after.remote_id]["amount"] == 6 and after.local_op is None
    assert [r.id for r in stored_rows(hub, conn.id, "items") if r.remote_id == after.remote_id] == [new.id]


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_record_changed_at_the_provider_while_its_batch_is_pushed_meets_the_policy(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00000", {"name": "hub A"})
    tenant.write("it_00001", {"name": "hub B"})

    def meanwhile(record_id, result):  # while A is pushed, B changes at the provider: a conflict
        webhook(hub, conn, "updated", record=dict(ledger.put("it_00001", {"name": "provider B"})))
    ledger.during_update = meanwhile
    pushed = sync(hub, conn, direction="push")
    assert (pushed.status, pushed.pushed) == ("succeeded", 1)
    assert ledger.items["it_00001"]["name"] == "provider B"
    [conflict] = conflicts(hub, conn)
    b = row(hub, conn, "it_00001")
    if policy == "provider_wins":
        assert (conflict.status, b.local_op, b.data["name"]) == ("resolved", None, "provider B")
    else:
        assert (conflict.status, b.push_status, b.local_data) == ("open", "conflict", {"name": "hub B"})


def test_a_change_discarded_while_its_batch_is_pushed_is_not_sent(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00000", {"name": "hub A"})
    tenant.write("it_00001", {"name": "hub B"})
    ledger.during_update = lambda record_id, result: tenant.discard("it_00001")
    assert sync(hub, conn, direction="push").pushed == 1
    assert (ledger.items["it_00000"]["name"], ledger.items["it_00001"]["name"]) == ("hub A", "item 1")


def test_nothing_more_is_pushed_once_the_config_is_deleted(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00000", {"name": "hub A"})
    tenant.delete("it_00001")
    tenant.write("it_00002", {"name": "hub C"})
    ledger.put("it_00002", {"amount": 999})  # changed there too
    ledger.during_update = lambda record_id, result: config_service.delete_config(hub, conn.id, tenant.config.id)
    sync(hub, conn, direction="push")
    assert "it_00001" in ledger.items and ledger.items["it_00002"]["name"] == "item 2"
    assert stored_rows(hub, conn.id, "items") == []


def test_a_connection_deleted_while_a_pull_transaction_is_open_is_deleted(hub, conn, ledger, monkeypatch):
    # Deleting under a pull's open transaction deadlocked on PostgreSQL (each held rows the
    # other needed) and the deletion lost. The transaction is kept open long to widen the window.
    import asyncio
    import threading
    import time

    from hub.models import Connection
    from hub.services.connections import delete_connection
    from hub.sync import engine as engine_module

    monkeypatch.setattr(engine_module, "COMMIT_SECONDS", 30)
    monkeypatch.setattr(engine_module, "IDLE_COMMIT_SECONDS", 30)
    first, _ = create_run(hub, conn, entity="items")
    assert run(SyncEngine(hub, page_size=2).execute(first.id)).status == "succeeded"
    for item_id in ("it_00000", "it_00001", "it_new_a", "it_new_b"):
        ledger.put(item_id, {"name": f"changed {item_id}"})
    outcome: dict = {}

    def delete() -> None:
        try:
            asyncio.run(delete_connection(hub, conn.organization_id, conn.id))
            outcome["deleted"] = True
        except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
            outcome["deleted"] = repr(exc)

    def on_call(call: int) -> None:
        if call == before + 3:  # two pages written in the open transaction
            outcome["thread"] = deleting = threading.Thread(target=delete)
            deleting.start()
            if hub.engine.dialect.name == "postgresql":  # the deletion is now waiting for the pull
                wait_until(lambda: waiting_for_a_lock(hub) or not deleting.is_alive(), "the deletion under way")
            else:  # (SQLite's one writer: the deletion waits for the pull's commit whenever it comes)
                time.sleep(1.0)
    before = len(ledger.calls)
    ledger.on_call = on_call
    second, _ = create_run(hub, conn, entity="items", full_refresh=True)
    run(SyncEngine(hub, page_size=2).execute(second.id))
    outcome["thread"].join(30)
    assert outcome["deleted"] is True
    with hub.session() as session:
        assert session.get(Connection, conn.id) is None
    assert stored_rows(hub, conn.id, "items") == []


def left_sending(hub, remote_id: str) -> None:
    """The state a hub killed just after marking the change on its way leaves."""
    with hub.session() as session:
        record = session.exec(select(SyncRecord).where(SyncRecord.remote_id == remote_id)).one()
        record.push_status = "sending"
        session.add(record)
        session.commit()


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_provider_change_after_a_hub_was_killed_mid_push_is_still_a_conflict(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "hub"})
    left_sending(hub, "it_00001")
    ledger.put("it_00001", {"name": "provider"})
    assert sync(hub, conn).status == "succeeded"  # after the restart: pull, then push
    assert ledger.items["it_00001"]["name"] == "provider"
    [conflict] = conflicts(hub, conn)
    assert conflict.status == ("resolved" if policy == "provider_wins" else "open")


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_provider_change_arriving_while_the_push_reads_the_record_is_a_conflict(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "hub"})
    ledger.during_get = lambda record_id: webhook(hub, conn, "updated",
                                                  record=dict(ledger.put(record_id, {"name": "provider"})))
    sync(hub, conn, direction="push")
    sync(hub, conn, direction="push")
    assert ledger.items["it_00001"]["name"] == "provider" and len(conflicts(hub, conn)) == 1


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_an_update_made_whose_answer_was_lost_is_not_taken_for_a_change_at_the_provider(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "first"})
    ledger.lose_answers = 1
    assert sync(hub, conn, direction="push").status == "failed"  # made, but the hub cannot know
    tenant.write("it_00001", {"amount": 777})
    pushed = sync(hub, conn, direction="push")
    assert (pushed.status, pushed.pushed, pushed.conflicts) == ("succeeded", 1, 0)
    assert (ledger.items["it_00001"]["name"], ledger.items["it_00001"]["amount"]) == ("first", 777)
    after = row(hub, conn, "it_00001")
    assert (after.local_op, after.push_status, after.sent_change, conflicts(hub, conn)) == (None, None, None, [])


def test_an_update_made_before_the_hub_was_killed_is_completed_once(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00001", {"name": "hub"})
    left_sending(hub, "it_00001")
    ledger.put("it_00001", {"name": "hub"})  # it reached the provider before the kill
    pushed = sync(hub, conn, direction="push")
    assert (pushed.pushed, pushed.conflicts, row(hub, conn, "it_00001").push_status) == (1, 0, None)
    assert sync(hub, conn, direction="push").pushed == 0


def test_a_push_refused_for_its_credentials_leaves_the_change_waiting_not_on_its_way(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00001", {"name": "hub"})
    ledger.refuse_gets = 1
    assert sync(hub, conn, direction="push").error_code == "provider_auth_failed"
    assert row(hub, conn, "it_00001").push_status == "pending"
    tenant.discard("it_00001")
    assert row(hub, conn, "it_00001").local_op is None


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_delete_meets_a_provider_change_not_pulled_yet_as_a_conflict(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.delete("it_00001")
    ledger.put("it_00001", {"name": "provider"})
    sync(hub, conn, direction="push")
    assert "it_00001" in ledger.items and len(conflicts(hub, conn)) == 1


@pytest.mark.parametrize("pull_first", [False, True])
@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_provider_change_besides_the_hubs_own_unanswered_write_is_a_conflict(hub, conn, ledger, policy,
                                                                                pull_first):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "first"})
    ledger.lose_answers = 1
    assert sync(hub, conn, direction="push").status == "failed"  # made
    ledger.put("it_00001", {"amount": 555})  # and the provider changes a field the tenant changes next
    tenant.write("it_00001", {"amount": 777})
    sync(hub, conn, direction=None if pull_first else "push")
    assert ledger.items["it_00001"]["amount"] == 555 and len(conflicts(hub, conn)) == 1


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_every_unanswered_update_counts_as_the_hubs_own_write(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    for name in ("first", "second"):
        tenant.write("it_00001", {"name": name})
        ledger.lose_answers = 1
        assert sync(hub, conn, direction="push").status == "failed"
    assert ledger.items["it_00001"]["name"] == "second"
    tenant.write("it_00001", {"name": "third"})
    assert sync(hub, conn, direction="push").pushed == 1
    assert ledger.items["it_00001"]["name"] == "third" and conflicts(hub, conn) == []


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_change_made_while_the_push_reads_the_record_waits_for_the_next_push(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "first"})
    ledger.during_get = lambda record_id: tenant.write("it_00001", {"name": "second"})
    sync(hub, conn, direction="push")
    assert row(hub, conn, "it_00001").push_status == "pending"
    assert sync(hub, conn, direction="push").pushed == 1 and ledger.items["it_00001"]["name"] == "second"


def test_hub_wins_pushes_again_over_a_provider_change_arriving_during_its_update(hub, conn, ledger):
    tenant = Tenant(hub, conn, "hub_wins")
    tenant.write("it_00001", {"name": "v1"})
    ledger.during_update = lambda record_id, result: webhook(
        hub, conn, "updated", record=dict(ledger.put(record_id, {"name": "other"})))
    sync(hub, conn, direction="push")
    [conflict] = conflicts(hub, conn)
    after = row(hub, conn, "it_00001")
    assert (conflict.resolution, ledger.items["it_00001"]["name"], after.local_op) == ("hub", "v1", None)


@pytest.mark.parametrize("resolution", ["hub", "provider", "custom"])
def test_a_conflict_resolved_while_the_update_is_on_its_way_ends_as_resolved(hub, conn, ledger, resolution):
    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00001", {"name": "v1"})

    def meanwhile(record_id, result):
        webhook(hub, conn, "updated", record=dict(ledger.put(record_id, {"name": "other"})))
        [conflict] = conflicts(hub, conn)
        stored.resolve_conflict(hub, tenant.connection, tenant.config, conflict.id, resolution,
                                {"name": "custom"} if resolution == "custom" else None, mapped=False)
    ledger.during_update = meanwhile
    sync(hub, conn, direction="push")
    after = row(hub, conn, "it_00001")
    wanted = {"hub": "v1", "provider": "other", "custom": "custom"}[resolution]
    assert (ledger.items["it_00001"]["name"], after.data["name"], after.push_status) == (wanted, wanted, None)


def test_a_conflict_found_by_the_pushs_read_leaves_nothing_taken_for_the_hubs_write(hub, conn, ledger):
    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00001", {"active": True})
    ledger.put("it_00001", {"amount": 5})
    sync(hub, conn, direction="push")  # a conflict, nothing sent
    [conflict] = conflicts(hub, conn)
    stored.resolve_conflict(hub, tenant.connection, tenant.config, conflict.id, "provider", None, mapped=False)
    assert row(hub, conn, "it_00001").sent_change is None
    tenant.write("it_00001", {"name": "tenant"})
    ledger.put("it_00001", {"active": True, "name": "provider"})
    sync(hub, conn, direction="push")
    assert ledger.items["it_00001"]["name"] == "provider" and len(conflicts(hub, conn)) == 2


class AnswersWithoutId(Interleaving):
    @hookimpl
    def create_record(self, entity, data, idempotency_key):
        self.put(f"it_new_{len(self.items)}", data)
        return {"name": data.get("name")}


def test_a_create_answered_without_its_id_is_left_failed_for_the_tenant(settings):
    hub = ledger_hub(settings, AnswersWithoutId(items=2))
    conn = make_connection(hub, "ledger", {"api_key": "k"})
    new = Tenant(hub, conn, "review").write(None, {"name": "fresh"})
    pushed = sync(hub, conn, direction="push")
    after = row(hub, conn, record_id=new.id)
    assert (pushed.failed, after.push_status) == (1, "failed") and "no id" in after.push_error


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_conflict_found_while_the_update_fails_still_stands(hub, conn, ledger, policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "v1"})
    ledger.during_update = lambda record_id, result: webhook(
        hub, conn, "updated", record=dict(ledger.put(record_id, {"name": "other"})))
    ledger.lose_answers = 1
    first = sync(hub, conn, direction="push")
    assert first.failed == 0, (first.status, first.failed, first.error)  # settled on its way: no failure
    sync(hub, conn, direction="push")
    after = row(hub, conn, "it_00001")
    assert ledger.items["it_00001"]["name"] == "other"
    assert after.push_status == ("conflict" if policy == "review" else None)


@pytest.mark.parametrize("policy", ["provider_wins", "review"])
def test_a_pending_delete_meets_the_hubs_own_write_or_a_read_only_change_without_conflict(hub, conn, ledger,
                                                                                         policy):
    tenant = Tenant(hub, conn, policy)
    tenant.write("it_00001", {"name": "first"})
    ledger.lose_answers = 1
    assert sync(hub, conn, direction="push").status == "failed"  # made, its answer lost
    tenant.delete("it_00001")
    tenant.delete("it_00002")
    ledger.put("it_00002", {})  # only its updated_at moves
    sync(hub, conn)  # a pull, then the push
    assert "it_00001" not in ledger.items and "it_00002" not in ledger.items and conflicts(hub, conn) == []


def test_a_change_left_on_its_way_by_a_stopped_hub_can_be_discarded_once_no_run_is_under_way(hub, conn, ledger):
    """Refused while a live process holds the running run's lease; allowed
    once the run is over, or when its process is gone (a killed hub's run
    still shows ``running`` until it is taken up again)."""
    from hub.models import SyncRun
    from hub.sync.leases import PLACE, Lease, new_owner
    from hub.sync.stored import PushUnderWay

    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00001", {"name": "hub"})
    tenant.write("it_00002", {"name": "hub"})
    left_sending(hub, "it_00001")
    left_sending(hub, "it_00002")
    for owner in (new_owner(), f"{PLACE}:{2**22 + 1}:deadbeef0000"):  # this live process; a pid that is no more
        with hub.session() as session:
            running = SyncRun(organization_id=conn.organization_id, connection_id=conn.id, entity="items",
                              direction="push", status="running", owner=owner)
            session.add(running)
            session.commit()
            lease = Lease(hub, conn.id, owner, running.id, ttl=60)
            assert lease.try_acquire()
            if owner.split(":")[1] == str(os.getpid()):
                with pytest.raises(PushUnderWay):
                    tenant.discard("it_00001")
                lease.release()
                session.delete(running)
                session.commit()
                tenant.discard("it_00001")  # the run is over
            else:
                tenant.discard("it_00002")  # its process is gone
                lease.release()
    for remote_id in ("it_00001", "it_00002"):
        after = row(hub, conn, remote_id)
        assert (after.local_op, after.push_status) == (None, None)


def test_read_only_fields_inside_lists_do_not_make_the_hubs_own_write_a_conflict():
    """A Shopify product update whose answer was lost: the provider's version
    has the variant's new price, and the variant's own ``updated_at`` moved.
    That is the hub's own write; a changed variant title is not."""
    from hub.models import SyncRecord
    from hub.sync.store import own_write
    from hub.types import EntityField

    fields = (EntityField("id", readonly=True), EntityField("title"), EntityField("variants", "array"),
              EntityField("updated_at", "datetime", readonly=True))
    variant = {"id": 7, "price": "1.00", "title": "S", "updated_at": "2026-01-01T00:00:00Z"}
    stored = {"id": 1, "title": "Shirt", "variants": [variant], "updated_at": "2026-01-01T00:00:00Z"}
    sent = {"variants": [{**variant, "price": "2.00"}]}
    row = SyncRecord(connection_id="c", entity="products", remote_id="1", data=stored,
                     sent_change={"attempts": [sent]})
    answer = {**stored, "updated_at": "2026-01-02T00:00:00Z",
              "variants": [{**variant, "price": "2.00", "updated_at": "2026-01-02T00:00:00Z"}]}
    assert own_write(row, answer, fields)
    elsewhere = {**answer, "variants": [{**answer["variants"][0], "title": "M"}]}
    assert not own_write(row, elsewhere, fields)
    assert not own_write(row, {**answer, "variants": answer["variants"] * 2}, fields)


def test_webhook_processing_waits_for_a_connection_deletion_instead_of_deadlocking_with_it(hub, conn, ledger):
    """A deletion holds the connection's record locks and deletes its events;
    the processor took its events' rows first, then waited for those locks."""
    import threading

    from hub.sync.store import entity_key, lock

    if hub.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    with hub.session() as session:
        session.add(WebhookEvent(id="ev_del", provider="ledger", dedup_key="d1", connection_id=conn.id,
                                 organization_id=conn.organization_id, type="item.updated", entity="items",
                                 action="changed"))
        session.commit()
    processor = WebhookProcessor(hub)
    outcome: list[object] = []
    with hub.session() as deletion:
        lock(deletion, entity_key(conn.id, "items"))  # as delete_connection does, first
        worker = threading.Thread(target=lambda: outcome.append(_safely(processor._process_batch)))
        worker.start()
        # The processor is now waiting for the lock (before its events' rows, or holding them: deadlocked).
        wait_until(lambda: waiting_for_a_lock(hub) or not worker.is_alive(), "the processor under way")
        deletion.execute(sa.delete(WebhookEvent).where(WebhookEvent.id == "ev_del"))
        deletion.commit()
    worker.join(30)
    assert len(outcome) == 1 and not isinstance(outcome[0], Exception), outcome
    with hub.session() as session:
        assert session.get(WebhookEvent, "ev_del") is None


def _safely(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001  (the test reports it)
        return exc


def test_a_read_only_name_is_not_ignored_where_the_hub_itself_sent_it():
    """An order's ``name`` is read-only; its address's ``name`` is the tenant's.
    A provider version with another address name than the one the hub sent
    is not the hub's own write."""
    from hub.models import SyncRecord
    from hub.sync.store import own_write
    from hub.types import EntityField

    fields = (EntityField("id", readonly=True), EntityField("name", readonly=True),
              EntityField("shipping_address", "object"))
    stored = {"id": 1, "name": "#1001", "shipping_address": {"name": "Ada", "city": "Paris"}}
    sent = {"shipping_address": {"name": "Grace", "city": "Paris"}}
    row = SyncRecord(connection_id="c", entity="orders", remote_id="1", data=stored,
                     sent_change={"attempts": [sent]})
    assert own_write(row, {**stored, "shipping_address": {"name": "Grace", "city": "Paris"}}, fields)
    assert not own_write(row, {**stored, "shipping_address": {"name": "Someone", "city": "Paris"}}, fields)


class FailsAfterCreating(Interleaving):
    """Makes the record, then fails as a plugin can once its create went through."""

    def __init__(self, failure: Exception):
        super().__init__(items=2)
        self.failure: Exception | None = failure

    @hookimpl
    def create_record(self, entity, data, idempotency_key):
        made = dict(self.put(f"it_new_{len(self.items)}", data))
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure
        return made


@pytest.mark.parametrize("failure", [KeyError("id"), httpx.ReadTimeout("read timed out")],
                         ids=["unreadable-answer", "own-client-timeout"])
def test_a_create_that_may_have_been_made_is_never_sent_twice(settings, failure):
    """Without idempotent creates, a plugin failing after its create went out
    (an answer it cannot read, its own client timing out) leaves the record
    failed for someone to check, not pending to be created again."""
    ledger = FailsAfterCreating(failure)
    hub = ledger_hub(settings, ledger)
    conn = make_connection(hub, "ledger", {"api_key": "k"})
    new = Tenant(hub, conn, "review").write(None, {"name": "fresh"})
    sync(hub, conn, direction="push")
    sync(hub, conn, direction="push")
    assert [i["name"] for i in ledger.items.values()].count("fresh") == 1
    after = row(hub, conn, record_id=new.id)
    assert after.push_status == "failed" and "may exist there" in after.push_error


class RefusesBadNames(Interleaving):
    """Refuses the name "bad", running ``before_refusal`` first (the tenant acting meanwhile)."""

    def __init__(self):
        super().__init__(items=3)
        self.before_refusal = None

    @hookimpl
    def update_record(self, entity, record_id, data):
        if data.get("name") == "bad":
            step, self.before_refusal = self.before_refusal, None
            if step:
                step()
            raise ValidationFailed("name 'bad' is not allowed")
        return Interleaving.update_record(self, entity, record_id, data)


@pytest.mark.parametrize("meanwhile", ["fixed", "deleted"])
def test_a_change_made_while_a_refused_update_was_on_its_way_is_still_sent(settings, meanwhile):
    ledger = RefusesBadNames()
    hub = ledger_hub(settings, ledger)
    conn = make_connection(hub, "ledger", {"api_key": "k"})
    tenant = Tenant(hub, conn, "provider_wins")
    tenant.write("it_00001", {"name": "bad"})
    ledger.before_refusal = ((lambda: tenant.write("it_00001", {"name": "good"})) if meanwhile == "fixed"
                             else (lambda: tenant.delete("it_00001")))
    first = sync(hub, conn, direction="push")
    assert first.failed == 1 and row(hub, conn, "it_00001").push_status == "pending"
    assert "an earlier version was refused" in row(hub, conn, "it_00001").push_error
    second = sync(hub, conn, direction="push")
    assert second.pushed == 1
    if meanwhile == "fixed":
        assert ledger.items["it_00001"]["name"] == "good"
    else:
        assert "it_00001" not in ledger.items and row(hub, conn, "it_00001").deleted


def test_a_deletion_the_tenant_asked_for_settles_its_open_conflict(hub, conn, ledger):
    """Under review, a tenant's delete met a provider change; the provider then
    deletes the record too: the conflict is over, and nothing is pushed."""
    tenant = Tenant(hub, conn, "review")
    tenant.delete("it_00001")
    ledger.put("it_00001", {"name": "provider"})
    sync(hub, conn, direction="pull")
    assert [c.status for c in conflicts(hub, conn)] == ["open"]
    ledger.remove("it_00001")
    webhook(hub, conn, "deleted", record_id="it_00001", occurred_at=datetime.fromisoformat(ledger.tick()))
    [conflict] = conflicts(hub, conn)
    assert (conflict.status, conflict.resolution) == ("resolved", "provider")
    after = row(hub, conn, "it_00001")
    assert after.deleted and (after.local_op, after.push_status) == (None, None)
    assert sync(hub, conn, direction="push").pushed == 0


def test_a_record_created_again_keeps_the_deleted_ones_id_as_deleted(hub, conn, ledger):
    """Keeping the hub's version of a record the provider deleted creates it
    again under a new id; a late delivery of the old record does not bring
    the old id back beside it."""
    tenant = Tenant(hub, conn, "review")
    old = dict(ledger.items["it_00001"])
    tenant.write("it_00001", {"name": "mine"})
    ledger.remove("it_00001")
    webhook(hub, conn, "deleted", record_id="it_00001", occurred_at=datetime.fromisoformat(ledger.tick()))
    [conflict] = conflicts(hub, conn)
    stored.resolve_conflict(hub, tenant.connection, tenant.config, conflict.id, "hub", None, mapped=False)
    assert sync(hub, conn, direction="push").pushed == 1
    webhook(hub, conn, "updated", record=old)  # a retried delivery from before the deletion
    live = {r.remote_id: r.data.get("name") for r in stored_rows(hub, conn.id, "items") if not r.deleted}
    assert "it_00001" not in live and "mine" in live.values()
    assert row(hub, conn, record_id=conflict.record_id).data["name"] == "mine"


def test_a_create_left_on_its_way_can_be_discarded_once_its_config_only_pulls(hub, conn, ledger):
    """No push will settle it any more: discarding is the way out (a record
    made after all comes with the next pull). While the config still pushes,
    the push settles it first."""
    tenant = Tenant(hub, conn, "review")
    new = tenant.write(None, {"name": "fresh"})
    with hub.session() as session:
        record = session.get(SyncRecord, new.id)
        record.push_status = "sending"  # a hub killed in the middle of the create
        session.add(record)
        session.commit()
    with pytest.raises(stored.PendingCreate):
        stored.discard_change(hub, tenant.connection, tenant.config, new.id)
    tenant.config = config_service.update_config(hub, tenant.connection, tenant.config.id, {"direction": "pull"})
    assert stored.discard_change(hub, tenant.connection, tenant.config, new.id) is None
    assert row(hub, conn, record_id=new.id) is None


def test_events_of_one_second_wait_for_the_fetch_that_settles_them_to_succeed(hub, conn, ledger):
    """Two events of a record that cannot be ordered are settled by one fetch
    of it: when that fetch failed, the second was marked processed anyway,
    its change stored nowhere."""
    import asyncio

    Tenant(hub, conn, "provider_wins")
    second = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    webhook(hub, conn, "updated", record={**ledger.items["it_00001"], "name": "a"}, occurred_at=second)
    ids = []
    for name in ("b", "c"):
        ids.append(pending_event(hub, conn, name, second, ledger))
    ledger.refuse_gets = 1  # the fetch fails

    async def process():
        try:
            await WebhookProcessor(hub).process_once()
        finally:
            await hub.close()

    asyncio.run(process())
    with hub.session() as session:
        assert [session.get(WebhookEvent, i).status for i in ids] == ["pending", "pending"]


def test_a_tenant_delete_of_a_record_the_provider_deleted_during_review_settles_its_conflict(hub, conn, ledger):
    """The provider deleted it while the tenant's update waited in review: the
    tenant deleting it too is done (200, nothing to push), and the conflict is
    resolved for the provider's side, not left open with the update in it
    (resolved 'hub', it would create the record again)."""
    tenant = Tenant(hub, conn, "review")
    tenant.write("it_00001", {"name": "mine"})
    ledger.remove("it_00001")
    webhook(hub, conn, "deleted", record_id="it_00001", occurred_at=datetime.fromisoformat(ledger.tick()))
    before = row(hub, conn, "it_00001")
    assert (before.deleted, before.local_op, before.push_status) == (True, "update", "conflict")
    assert stored.delete_record(hub, tenant.connection, tenant.config, before.id) is None
    after = row(hub, conn, "it_00001")
    assert (after.deleted, after.local_op, after.push_status, after.local_data) == (True, None, None, None)
    assert [(c.status, c.resolution) for c in conflicts(hub, conn)] == [("resolved", "provider")]
