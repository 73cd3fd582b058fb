"""``hub sync`` killed with SIGKILL in the middle of a run, twice, then
restarted: the run resumes from its last stored page and completes, and the
record store equals the provider's data exactly: no record lost, none
duplicated. The example fake is served by this test process; the hub runs
as a subprocess on a file SQLite database."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from sqlmodel import select

from hub.config import Settings
from hub.models import SyncRun, utcnow
from hub.runtime import Hub
from hub_example.testing import API_KEY
from hub_example.testing import create_app as fake_app
from tests.sync_support import hub_command, make_connection, stored, stored_rows, subprocess_env

NOTES = 600
PAGE = 20


def runs(hub: Hub, connection_id: str) -> list[SyncRun]:
    with hub.session() as session:
        return list(session.exec(select(SyncRun).where(SyncRun.connection_id == connection_id)
                                 .order_by(SyncRun.queued_at)))


def start_sync(connection_id: str, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(hub_command() + ["sync", connection_id, "--entity", "notes", "--page-size", str(PAGE),
                                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def kill_after(process: subprocess.Popen, hub: Hub, connection_id: str, pages: int, timeout: float = 60) -> int:
    """SIGKILL the process once its run has stored at least ``pages`` pages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = runs(hub, connection_id)
        if current and current[-1].pages >= pages:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            return current[-1].pages
        if process.poll() is not None:
            pytest.fail(f"hub sync ended before it was killed: {process.communicate()}")
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"hub sync stored fewer than {pages} pages in {timeout}s")


def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing(tmp_path, serve_app, example_registry):
    fake = fake_app(notes=NOTES, delay=0.02)
    url = serve_app(fake)
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = Hub(Settings(data_dir=tmp_path / "data", database_url=database, secret_key="test-secret-key"),
              example_registry)
    hub.migrate()
    connection = make_connection(hub, "example", {"api_key": API_KEY})
    env = subprocess_env(tmp_path, HUB_DATABASE_URL=database, HUB_EXAMPLE_ORIGIN=url)

    first_kill = kill_after(start_sync(connection.id, env), hub, connection.id, pages=5)
    [killed] = runs(hub, connection.id)
    assert killed.status == "running" and 5 <= first_kill < NOTES // PAGE
    assert len(stored(hub, connection.id, "notes")) >= first_kill * PAGE

    for i in range(7):
        fake.state.notes.insert({"title": f"added while down {i}", "body": "", "updated_at": utcnow().isoformat()})
    fake.state.notes.rows["note_590"].update(title="changed ahead of the cursor", updated_at=utcnow().isoformat())

    kill_after(start_sync(connection.id, env), hub, connection.id, pages=first_kill + 8)
    assert [r.id for r in runs(hub, connection.id)] == [killed.id]

    final = start_sync(connection.id, env)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, (out, err)
    assert f"resuming interrupted run {killed.id}" in out and "succeeded" in out
    assert "records" in err and "pages=" in err
    [finished] = runs(hub, connection.id)
    assert finished.id == killed.id and finished.status == "succeeded" and finished.finished_at
    assert finished.pages >= (NOTES + 7) // PAGE

    assert stored(hub, connection.id, "notes") == fake.state.notes.rows
    rows = stored_rows(hub, connection.id, "notes")
    assert len(rows) == len({r.remote_id for r in rows}) == NOTES + 7

    fake.state.notes.rows["note_3"].update(title="changed behind", updated_at=utcnow().isoformat())
    fake.state.notes.delete("note_4")
    full = start_sync(connection.id, env, "--full")
    out, err = full.communicate(timeout=120)
    assert full.returncode == 0, (out, err)
    assert stored(hub, connection.id, "notes") == fake.state.notes.rows

    for args, code in ((["--entity", "notes", "--direction", "push"], "direction_not_configured"),
                       (["--entity", "invoices"], "unknown_entity")):
        refused = subprocess.run(hub_command() + ["sync", connection.id, *args], env=env, capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode == 1 and f"Error: {code}: " in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_cli_refuses_unknown_connections_and_a_worker_without_postgresql(tmp_path):
    env = subprocess_env(tmp_path, HUB_DATABASE_URL=f"sqlite:///{tmp_path / 'hub.db'}")
    unknown = subprocess.run(hub_command() + ["sync", "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "no connection nope" in unknown.stderr
    worker = subprocess.run(hub_command() + ["worker"], env=env, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 1 and "needs PostgreSQL" in worker.stderr
