"""Re-enabling a sync config after a pass was left in progress: the next pass
is a full one, so deletions whose webhook events were ignored meanwhile are
swept. Runs on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from sqlmodel import select

from hub.models import SyncConfig
from hub.sync import configs as config_service
from tests.sync_support import Ledger, ledger_hub, make_connection, run, stored
from tests.test_sync_engine import state_of, sync


@pytest.fixture
def ledger():
    return Ledger(items=250)


@pytest.fixture
def hub(settings, ledger):
    return ledger_hub(settings, ledger)


@pytest.fixture
def conn(hub):
    return make_connection(hub, "ledger", {"api_key": "k"})


def test_reenabling_after_an_interrupted_incremental_pass_still_makes_a_full_pass(hub, conn, ledger):
    assert run(sync(hub, conn)).status == "succeeded"          # full pass: watermark set
    for i in range(150):                                          # 150 changes: an incremental pass of 2 pages
        ledger.put(f"it_{i:05d}", {"name": f"changed {i}"})
    ledger.fail_on_call = len(ledger.calls) + 2                   # its 2nd page fails: pass left in progress
    assert run(sync(hub, conn)).status == "failed"
    assert state_of(hub, conn.id).pass_mode == "incremental"
    ledger.fail_on_call = None
    with hub.session() as session:
        config = session.exec(select(SyncConfig).where(SyncConfig.connection_id == conn.id)).one()
    config_service.update_config(hub, conn, config.id, {"enabled": False})
    ledger.remove("it_00200")                                     # its deletion event is ignored meanwhile
    config_service.update_config(hub, conn, config.id, {"enabled": True})
    assert state_of(hub, conn.id).watermark is None
    assert run(sync(hub, conn)).status == "succeeded"
    assert run(sync(hub, conn)).status == "succeeded"
    assert "it_00200" not in stored(hub, conn.id, "items"), \
        f"watermark after re-enable: {state_of(hub, conn.id).watermark}; the deletion was never swept"
