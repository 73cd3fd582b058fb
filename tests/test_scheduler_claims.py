"""The scheduler claims each due connection (moves its ``next_sync_at`` on)
on its own: a claim failing for a passing reason (the database busy) leaves
that connection due for the next tick, and the runs of those claimed before it
still start, rather than waiting a whole period."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from hub.models import Connection, SyncRun, utcnow
from hub.sync.scheduler import Scheduler
from tests.sync_support import Ledger, make_connection
from tests.test_sync_engine import scheduler_tick


@pytest.fixture
def ledger():
    return Ledger(items=5)


def test_a_connection_claimed_in_a_tick_that_then_fails_still_gets_its_scheduled_run(hub, monkeypatch):
    now = utcnow()
    first = make_connection(hub, "ledger", {"api_key": "k"}, org_name="first")
    second = make_connection(hub, "ledger", {"api_key": "k"}, org_name="second")
    with hub.session() as session:
        for connection, due in ((first, now - timedelta(minutes=2)), (second, now - timedelta(minutes=1))):
            session.execute(sa.update(Connection).where(Connection.id == connection.id).values(
                sync_enabled=True, sync_frequency_minutes=60, next_sync_at=due))
        session.commit()

    real_advance = Scheduler._advance
    calls = []

    def advance(self, model, which, column, now, upcoming):
        calls.append(model)
        if len(calls) == 2:  # the second claim meets a passing database failure
            raise sa.exc.OperationalError("UPDATE connection", {}, Exception("database is locked"))
        return real_advance(self, model, which, column, now, upcoming)

    monkeypatch.setattr(Scheduler, "_advance", advance)
    scheduler_tick(hub, now)  # (the failed claim is logged; the others' runs start)
    monkeypatch.setattr(Scheduler, "_advance", real_advance)

    scheduler_tick(hub, now + timedelta(seconds=30))  # the next tick
    with hub.session() as session:
        scheduled = {r.connection_id for r in session.exec(select(SyncRun).where(SyncRun.trigger == "schedule"))}
        next_at = {c.id: c.next_sync_at for c in session.exec(select(Connection))}
    lost = {first.id, second.id} - scheduled
    assert not lost, (f"a connection claimed by the failed tick got no run: its next_sync_at moved on to "
                      f"{[next_at[i] for i in lost]} (now is {now}) without one")
