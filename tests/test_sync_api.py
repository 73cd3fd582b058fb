"""The sync API on the example provider over real HTTP to its fake: configs
and mappings, runs and logs, stored records raw and mapped, errors, the
scheduler and provider faults. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from hub.models import Connection, SyncConfig, SyncRecord, utcnow
from hub.sync.engine import SyncEngine
from hub.sync.stored import encode_cursor
from hub.testing import wait_until
from hub.types import Credentials
from hub_example.testing import API_KEY
from tests.conftest import API, make_org
from tests.sync_support import stored, wait_run
from tests.test_example_end_to_end import connect

TITLE_MAPPINGS = [
    {"source": "id", "target": "note_id"},
    {"source": "title", "target": "subject"},
    {"source": "body", "target": "text", "default": ""},
    {"source": "updated_at", "target": "modified_on", "transform": "date"},
    {"target": "origin", "transform": "constant", "value": "example"},
]


def configs_url(connection_id: str) -> str:
    return f"{API}/connections/{connection_id}/sync-configs"


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == code and body["error"]
    return body


def start(client, auth, connection_id: str, **body) -> dict:
    response = client.post(f"{API}/connections/{connection_id}/sync", json=body, headers=auth)
    assert response.status_code == 202, response.text
    run = response.json()["run"]
    assert run["status"] in ("queued", "running", "succeeded")
    return run


def test_sync_config_crud(client, auth):
    connection = connect(client, auth)
    url = configs_url(connection["id"])
    created = client.post(url, json={"entity": "notes", "direction": "both", "conflict_policy": "review",
                                     "schedule_minutes": 15, "mappings": TITLE_MAPPINGS}, headers=auth)
    assert created.status_code == 201, created.text
    config = created.json()["sync_config"]
    assert config["direction"] == "both" and config["enabled"] and config["next_sync_at"]
    assert [m["target"] for m in config["mappings"]] == ["note_id", "subject", "text", "modified_on", "origin"]
    assert config["state"] is None
    assert_error(client.post(url, json={"entity": "notes"}, headers=auth), 409, "sync_config_exists")
    assert [c["id"] for c in client.get(url, headers=auth).json()["sync_configs"]] == [config["id"]]
    updated = client.put(f"{url}/{config['id']}", json={"enabled": False, "conflict_policy": "hub_wins"},
                         headers=auth).json()["sync_config"]
    assert updated["enabled"] is False and updated["conflict_policy"] == "hub_wins"
    assert updated["mappings"] == config["mappings"]
    assert client.get(f"{url}/{config['id']}", headers=auth).json()["sync_config"]["enabled"] is False
    assert client.delete(f"{url}/{config['id']}", headers=auth).json() == {"success": True}
    assert_error(client.get(f"{url}/{config['id']}", headers=auth), 404, "sync_config_not_found")


def test_bad_configs_are_refused_when_saved(client, auth):
    connection = connect(client, auth)
    url = configs_url(connection["id"])
    assert_error(client.post(url, json={"entity": "tags", "direction": "push"}, headers=auth), 405, "read_only")
    assert_error(client.post(url, json={"entity": "tags", "direction": "both"}, headers=auth), 405, "read_only")
    assert_error(client.post(url, json={"entity": "invoices"}, headers=auth), 404, "unknown_entity")
    unknown = assert_error(client.post(url, json={"entity": "notes", "mappings": [
        {"source": "subject", "target": "s"}]}, headers=auth), 422, "unknown_field")
    assert "subject" in unknown["error"] and unknown["details"][0]["field"] == "subject"
    assert unknown["fields"] == ["mappings.0.source"] and unknown["details"][0]["path"] == "mappings.0.source"
    cast = assert_error(client.post(url, json={"entity": "notes", "mappings": [
        {"source": "title", "target": "t", "transform": "cents_to_decimal"}]}, headers=auth), 422, "impossible_cast")
    assert "cents_to_decimal" in cast["error"] and "string" in cast["error"]
    assert cast["fields"] == ["mappings.0.source"]
    assert_error(client.post(url, json={"entity": "notes", "direction": "sideways"}, headers=auth),
                 422, "validation_error")
    valueless = assert_error(client.post(url, json={"entity": "notes", "mappings": [
        {"target": "origin", "transform": "constant"}]}, headers=auth), 422, "validation_error")
    assert "constant takes a value" in valueless["error"]
    assert client.get(url, headers=auth).json()["sync_configs"] == []
    config = client.post(url, json={"entity": "tags"}, headers=auth).json()["sync_config"]
    assert_error(client.put(f"{url}/{config['id']}", json={"direction": "both"}, headers=auth), 405, "read_only")


def test_mappings_are_listed_and_replaced(client, auth):
    connection = connect(client, auth)
    config = client.post(configs_url(connection["id"]), json={"entity": "notes"}, headers=auth).json()["sync_config"]
    url = f"{configs_url(connection['id'])}/{config['id']}/mappings"
    assert client.get(url, headers=auth).json() == {"success": True, "sync_config_id": config["id"],
                                                     "entity": "notes", "mappings": []}
    replaced = client.put(url, json={"mappings": TITLE_MAPPINGS[:2]}, headers=auth).json()
    assert [m["source"] for m in replaced["mappings"]] == ["id", "title"]
    assert client.get(url, headers=auth).json()["mappings"] == replaced["mappings"]
    bad = client.put(url, json={"mappings": [{"source": "updated_at", "target": "x", "transform": "cents_to_decimal"}]},
                     headers=auth)
    assert_error(bad, 422, "impossible_cast")
    assert client.get(url, headers=auth).json()["mappings"] == replaced["mappings"]


def test_a_sync_run_starts_at_once_and_its_log_tells_what_happened(client, auth, example_fake):
    connection = connect(client, auth)
    queued = start(client, auth, connection["id"])
    run = wait_run(client, auth, connection["id"], queued["id"])
    assert run["status"] == "succeeded", run
    assert (run["fetched"], run["created"], run["updated"], run["deleted"]) == (25, 25, 0, 0)
    assert run["entity"] is None and run["direction"] == "pull" and run["trigger"] == "manual"
    assert run["duration_seconds"] is not None and run["error"] is None
    configs = client.get(configs_url(connection["id"]), headers=auth).json()["sync_configs"]
    assert sorted(c["entity"] for c in configs) == ["notes", "tags"]
    assert all(c["state"]["last_full_pass_at"] and not c["state"]["in_progress"] for c in configs)

    example_fake[1].state.notes.rows["note_1"]["title"] = "renamed"
    example_fake[1].state.notes.rows["note_1"]["updated_at"] = utcnow().isoformat()
    second = wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes")["id"])
    assert second["status"] == "succeeded" and second["updated"] == 1 and second["created"] == 0
    full = wait_run(client, auth, connection["id"],
                    start(client, auth, connection["id"], entity="notes", full_refresh=True)["id"])
    assert full["fetched"] == 23 and full["full_refresh"] is True

    logs = client.get(f"{API}/connections/{connection['id']}/sync/logs", params={"limit": 2}, headers=auth).json()
    assert [r["id"] for r in logs["runs"]] == [full["id"], second["id"]] and logs["has_more"]
    rest = client.get(f"{API}/connections/{connection['id']}/sync/logs", params={"cursor": logs["next_cursor"]},
                      headers=auth).json()
    assert [r["id"] for r in rest["runs"]] == [queued["id"]] and rest["next_cursor"] is None
    only_failed = client.get(f"{API}/connections/{connection['id']}/sync/logs", params={"status": "failed"},
                             headers=auth).json()
    assert only_failed["runs"] == []
    assert_error(client.get(f"{API}/connections/{connection['id']}/sync/runs/nope", headers=auth),
                 404, "sync_run_not_found")
    assert_error(client.post(f"{API}/connections/{connection['id']}/sync", json={"entity": "invoices"},
                             headers=auth), 404, "unknown_entity")
    # The configs only pull: asking to push is refused rather than a run that does nothing.
    pull_only = assert_error(client.post(f"{API}/connections/{connection['id']}/sync",
                                         json={"entity": "notes", "direction": "push"}, headers=auth),
                             422, "direction_not_configured")
    assert pull_only["error"] == "the notes sync config only pulls; set its direction to push or both to push it"
    assert_error(client.post(f"{API}/connections/{connection['id']}/sync", json={"direction": "push"},
                             headers=auth), 422, "direction_not_configured")
    both = client.post(f"{API}/connections/{connection['id']}/sync", json={"direction": "both"}, headers=auth)
    assert both.status_code == 202, both.text
    wait_run(client, auth, connection["id"], both.json()["run"]["id"])
    # Every config disabled: nothing to run for the connection as a whole; a named entity still runs.
    for config in client.get(configs_url(connection["id"]), headers=auth).json()["sync_configs"]:
        client.put(f"{configs_url(connection['id'])}/{config['id']}", json={"enabled": False}, headers=auth)
    for body in ({}, {"direction": "pull"}):
        refused = assert_error(client.post(f"{API}/connections/{connection['id']}/sync", json=body, headers=auth),
                               422, "no_enabled_sync_config")
        assert "disabled" in refused["error"]
    named = start(client, auth, connection["id"], entity="notes")
    assert wait_run(client, auth, connection["id"], named["id"])["status"] == "succeeded"
    assert_error(client.get(f"{API}/connections/nope/sync/logs", headers=auth), 404, "connection_not_found")


def test_stored_records_raw_and_mapped_in_pages(client, auth):
    connection = connect(client, auth)
    config = client.post(configs_url(connection["id"]), json={"entity": "notes", "mappings": TITLE_MAPPINGS},
                         headers=auth).json()["sync_config"]
    wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes")["id"])
    url = f"{configs_url(connection['id'])}/{config['id']}/records"
    seen, cursor = [], None
    for _ in range(10):
        body = client.get(url, params={"limit": 10} | ({"cursor": cursor} if cursor else {}), headers=auth).json()
        seen += body["records"]
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None) and body["mapped"] is False
        if not cursor:
            break
    assert len(seen) == len({r["id"] for r in seen}) == 23
    assert {r["remote_id"] for r in seen} == {f"note_{i}" for i in range(1, 24)}
    raw = next(r for r in seen if r["remote_id"] == "note_5")
    assert raw["data"]["title"] == "note 4" and raw["pending"] is False and raw["deleted"] is False
    mapped = client.get(f"{url}/note_5", params={"mapped": True}, headers=auth).json()["record"]
    assert mapped["id"] == raw["id"]
    assert mapped["data"] == {"note_id": "note_5", "subject": "note 4", "text": "",
                              "modified_on": raw["data"]["updated_at"][:10], "origin": "example"}
    assert mapped["mapping_errors"] == [] and raw["mapping_errors"] is None
    by_hub_id = client.get(f"{url}/{raw['id']}", headers=auth).json()["record"]
    assert by_hub_id["data"] == raw["data"]
    # A title is text, so a number cast is allowed when saved; "note 4" cannot become one: the
    # field gets the default and the mapped record says why (the raw record keeps the title).
    numbered = TITLE_MAPPINGS + [{"source": "title", "target": "number", "transform": "int", "default": -1}]
    saved = client.put(f"{configs_url(connection['id'])}/{config['id']}/mappings", json={"mappings": numbered},
                       headers=auth)
    assert saved.status_code == 200, saved.text
    mapped = client.get(f"{url}/note_5", params={"mapped": True}, headers=auth).json()["record"]
    assert mapped["data"]["number"] == -1 and mapped["data"]["subject"] == "note 4"
    assert mapped["mapping_errors"] == [{"field": "number", "source": "title", "transform": "int",
                                         "error": "'note 4' is not a number"}]
    assert_error(client.get(url, params={"cursor": "garbage!"}, headers=auth), 422, "invalid_cursor")
    # A filter of the record's fields (which the live listing would pass to the provider) is
    # refused, not ignored with every record answered.
    unknown = client.get(url, params={"title": "note 4", "limit": 5}, headers=auth)
    assert_error(unknown, 422, "unknown_parameter")
    assert unknown.json()["fields"] == ["title"]
    for forged in ({"after": 1}, {"after": {"id": "x"}}, {"after": "a\ud800"}):  # (a lone surrogate: no text)
        assert_error(client.get(url, params={"cursor": encode_cursor(forged)}, headers=auth), 422, "invalid_cursor")
    logs, events = (f"{API}/connections/{connection['id']}/{path}" for path in ("sync/logs", "webhooks/events"))
    for listing, forged in ((logs, {"q": "2026-01-01T00:00:00", "id": "\ud800"}),
                            (events, {"r": "2026-01-01T00:00:00", "id": "\ud800"})):
        assert_error(client.get(listing, params={"cursor": encode_cursor(forged)}, headers=auth), 422,
                     "invalid_cursor")
    assert_error(client.get(f"{url}/note_999", headers=auth), 404, "record_not_found")


def test_bad_credentials_fail_the_run_clearly_without_blocking_other_connections(client, auth, hub_app):
    good = connect(client, auth)
    other_auth = make_org(hub_app, "globex")
    other_auth.pop("org_id")
    bad = connect(client, other_auth)
    hub = hub_app.state.hub
    with hub.session() as session:
        row = session.get(Connection, bad["id"])
        hub.store_credentials(row, Credentials(secrets={"api_key": "revoked"}))
        session.add(row)
        session.commit()
    failing = start(client, other_auth, bad["id"])
    working = start(client, auth, good["id"])
    failed = wait_run(client, other_auth, bad["id"], failing["id"])
    assert failed["status"] == "failed" and failed["error_code"] == "provider_auth_failed"
    assert "invalid api key" in failed["error"]
    connection = client.get(f"{API}/connections/{bad['id']}", headers=other_auth).json()["connection"]
    assert connection["status"] == "error" and "invalid api key" in connection["last_error"]
    assert wait_run(client, auth, good["id"], working["id"])["status"] == "succeeded"
    assert_error(client.get(f"{API}/connections/{good['id']}/sync/logs", headers=other_auth), 404,
                 "connection_not_found")
    # A run that succeeds without using the credentials (nothing to push) does not vouch for them.
    [notes] = [c for c in client.get(configs_url(bad["id"]), headers=other_auth).json()["sync_configs"]
               if c["entity"] == "notes"]
    changed = client.put(f"{configs_url(bad['id'])}/{notes['id']}", json={"direction": "both"}, headers=other_auth)
    assert changed.status_code == 200, changed.text
    pushed = wait_run(client, other_auth, bad["id"], start(client, other_auth, bad["id"], entity="notes",
                                                         direction="push")["id"])
    assert (pushed["status"], pushed["pushed"]) == ("succeeded", 0)
    connection = client.get(f"{API}/connections/{bad['id']}", headers=other_auth).json()["connection"]
    assert connection["status"] == "error" and "invalid api key" in connection["last_error"]
    with hub.session() as session:  # the key is fixed at the provider's end
        row = session.get(Connection, bad["id"])
        hub.store_credentials(row, Credentials(secrets={"api_key": API_KEY}))
        session.add(row)
        session.commit()
    pushed = wait_run(client, other_auth, bad["id"], start(client, other_auth, bad["id"], entity="notes",
                                                         direction="push")["id"])
    connection = client.get(f"{API}/connections/{bad['id']}", headers=other_auth).json()["connection"]
    assert (pushed["status"], connection["status"], connection["last_error"]) == ("succeeded", "connected", None)


def test_a_refused_sync_request_creates_no_configs(client, auth):
    connection = connect(client, auth)
    url = f"{API}/connections/{connection['id']}/sync"
    for body in ({"direction": "push"}, {"entity": "tags", "direction": "push"}):
        assert_error(client.post(url, json=body, headers=auth), 422, "direction_not_configured")
        assert client.get(configs_url(connection["id"]), headers=auth).json()["sync_configs"] == []
    accepted = client.post(url, json={"entity": "tags"}, headers=auth)
    assert accepted.status_code == 202, accepted.text
    wait_run(client, auth, connection["id"], accepted.json()["run"]["id"])
    configs = client.get(configs_url(connection["id"]), headers=auth).json()["sync_configs"]
    assert [(c["entity"], c["direction"]) for c in configs] == [("tags", "pull")]


@pytest.fixture
def manual_scheduler(settings):
    """The app's scheduler ticks only when the test says (its own loop would race the test's ticks)."""
    settings.run_scheduler = False


def test_the_scheduler_runs_due_connections_and_moves_next_sync_at_on(manual_scheduler, client, auth, hub_app):
    connection = connect(client, auth, sync_enabled=True, sync_frequency_minutes=30)
    hub = hub_app.state.hub
    due = utcnow() - timedelta(minutes=1)
    with hub.session() as session:
        row = session.get(Connection, connection["id"])
        row.next_sync_at = due
        session.add(row)
        session.commit()
    scheduler = hub_app.state.sync_scheduler
    submitted = client.portal.call(scheduler.tick)
    assert len(submitted) == 1
    run = wait_run(client, auth, connection["id"], submitted[0])
    assert run["status"] == "succeeded" and run["trigger"] == "schedule"
    after = client.get(f"{API}/connections/{connection['id']}", headers=auth).json()["connection"]
    assert after["last_sync_at"] is not None
    moved = hub_app.state.hub.session().get(Connection, connection["id"]).next_sync_at
    assert moved == due + timedelta(minutes=30)  # a period on from when it was due
    assert client.portal.call(scheduler.tick) == []

    url = configs_url(connection["id"])
    [tags] = [c for c in client.get(url, headers=auth).json()["sync_configs"] if c["entity"] == "tags"]
    assert client.put(f"{url}/{tags['id']}", json={"schedule_minutes": 5}, headers=auth).json()["sync_config"][
        "next_sync_at"]
    with hub.session() as session:
        config = session.get(SyncConfig, tags["id"])
        config.next_sync_at = utcnow() - timedelta(seconds=1)
        session.add(config)
        session.commit()
    [own] = client.portal.call(scheduler.tick)
    tags_run = wait_run(client, auth, connection["id"], own)
    assert (tags_run["entity"], tags_run["trigger"], tags_run["fetched"]) == ("tags", "schedule", 2)


def test_sync_settings_sent_again_unchanged_keep_the_schedule(manual_scheduler, client, auth, hub_app):
    """Each PUT naming sync_frequency_minutes or sync_enabled (schedule_minutes
    of a config) put the next run off a whole period from now, changed or not:
    a client saving its settings form every few minutes kept syncs from ever
    running. A change now keeps the time of the last scheduled run."""
    hub = hub_app.state.hub
    connection = connect(client, auth, sync_enabled=True, sync_frequency_minutes=60)
    url = f"{API}/connections/{connection['id']}"
    config = client.post(configs_url(connection["id"]), json={"entity": "notes", "schedule_minutes": 15},
                         headers=auth).json()["sync_config"]
    config_url = f"{configs_url(connection['id'])}/{config['id']}"
    due = utcnow() + timedelta(minutes=10)
    with hub.session() as session:
        session.get(Connection, connection["id"]).next_sync_at = due
        session.get(SyncConfig, config["id"]).next_sync_at = due
        session.commit()

    def next_at(model, key):
        with hub.session() as session:
            return session.get(model, key).next_sync_at

    for body in ({"sync_frequency_minutes": 60}, {"name": "x", "sync_enabled": True}):
        assert client.put(url, json=body, headers=auth).status_code == 200
        assert next_at(Connection, connection["id"]) == due, body
    for body in ({"schedule_minutes": 15}, {"schedule_minutes": 15, "enabled": True}):
        assert client.put(config_url, json=body, headers=auth).status_code == 200
        assert next_at(SyncConfig, config["id"]) == due, body

    # Changed: a new period after the last scheduled run (the next less the old period)...
    client.put(url, json={"sync_frequency_minutes": 120}, headers=auth)
    assert next_at(Connection, connection["id"]) == due + timedelta(minutes=60)
    client.put(config_url, json={"schedule_minutes": 30}, headers=auth)
    assert next_at(SyncConfig, config["id"]) == due + timedelta(minutes=15)
    # ... due at once when that has passed (last scheduled 70 minutes ago, now every 30), keeping
    # the time of the last scheduled run for a second change before the scheduler's tick.
    client.put(url, json={"sync_frequency_minutes": 30}, headers=auth)
    assert next_at(Connection, connection["id"]) == due - timedelta(minutes=30) < utcnow()
    client.put(url, json={"sync_frequency_minutes": 45}, headers=auth)
    assert next_at(Connection, connection["id"]) == due - timedelta(minutes=15) < utcnow()
    # Off, then on again: after the last sync (never: a period from now).
    client.put(url, json={"sync_enabled": False}, headers=auth)
    assert next_at(Connection, connection["id"]) is None
    before = utcnow()
    client.put(url, json={"sync_enabled": True}, headers=auth)
    assert before + timedelta(minutes=45) <= next_at(Connection, connection["id"]) <= utcnow() + timedelta(minutes=45)
    client.put(config_url, json={"schedule_minutes": None}, headers=auth)
    assert next_at(SyncConfig, config["id"]) is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (about HTTP faults: a database is as good as the other)
def test_provider_faults_are_absorbed_by_retries(settings, example_registry, example_fake, monkeypatch):
    url, fake = example_fake
    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", url)
    from hub.api.main import create_app

    app = create_app(settings.model_copy(update={"http_retry_base_delay": 0.02}), example_registry)
    with TestClient(app) as client:
        org = make_org(app)
        org.pop("org_id")
        app.state.hub.pool.timeout = httpx.Timeout(0.3)
        connection = connect(client, org)
        fake.state.fail_next, fake.state.fail_status = 3, 502
        first = wait_run(client, org, connection["id"], start(client, org, connection["id"], entity="notes")["id"])
        fake.state.throttle_next = 8  # a 429 storm longer than the retry attempts (6): its Retry-After is waited out
        second = wait_run(client, org, connection["id"],
                          start(client, org, connection["id"], entity="notes", full_refresh=True)["id"])
        fake.state.slow_next, fake.state.slow_seconds = 2, 1.0
        third = wait_run(client, org, connection["id"],
                         start(client, org, connection["id"], entity="notes", full_refresh=True)["id"])
        assert [r["status"] for r in (first, second, third)] == ["succeeded"] * 3
        assert first["fetched"] == second["fetched"] == third["fetched"] == 23
        assert fake.state.statuses[502] == 3 and fake.state.statuses[429] >= 8
        assert stored(app.state.hub, connection["id"], "notes") == fake.state.notes.rows
        assert fake.state.slow_next == 0
        fake.state.fail_next = 1000
        down = wait_run(client, org, connection["id"], start(client, org, connection["id"], entity="notes")["id"])
        assert down["status"] == "failed" and down["error_code"] == "provider_unavailable"
        connection_after = client.get(f"{API}/connections/{connection['id']}", headers=org).json()["connection"]
        assert connection_after["status"] == "connected"
        # An integrations page's "last synced" says that the last run failed, and why.
        assert (connection_after["last_sync_status"], connection_after["last_sync_run_id"]) == ("failed", down["id"])
        assert connection_after["last_sync_error"] == down["error"] and down["error"]
        fake.state.fail_next = 0
        back = wait_run(client, org, connection["id"], start(client, org, connection["id"], entity="notes")["id"])
        connection_after = client.get(f"{API}/connections/{connection['id']}", headers=org).json()["connection"]
        assert (connection_after["last_sync_status"], connection_after["last_sync_error"],
                connection_after["last_sync_run_id"]) == ("succeeded", None, back["id"])


def test_background_work_follows_the_run_scheduler_setting(settings, example_registry, example_fake, monkeypatch):
    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    from hub.api.main import create_app

    for run_scheduler in (True, False):
        app = create_app(settings.model_copy(update={"run_scheduler": run_scheduler}), example_registry)
        with TestClient(app):
            assert app.state.webhook_processor._task is not None and app.state.sync is not None
            assert (app.state.sync_scheduler._task is not None) is run_scheduler
        assert app.state.webhook_processor._task is None and app.state.sync_scheduler._task is None


def test_deleting_a_connection_during_its_sync_stops_the_run_quietly(client, auth, hub_app, example_fake, caplog,
                                                                      recwarn, monkeypatch):
    fake = example_fake[1]
    ended: list[str] = []
    execute = SyncEngine.execute

    async def noting_its_end(self, run_id, *args, **kwargs):
        try:
            return await execute(self, run_id, *args, **kwargs)
        finally:
            ended.append(run_id)

    monkeypatch.setattr(SyncEngine, "execute", noting_its_end)
    connection = connect(client, auth)
    fake.state.hold = threading.Event()
    run_id = start(client, auth, connection["id"], entity="notes")["id"]
    wait_until(lambda: fake.state.held, "the first page asked for")
    try:
        assert client.delete(f"{API}/connections/{connection['id']}", headers=auth).status_code == 200
    finally:
        fake.state.hold.set()  # the page answered: the run meets the closed connection
    wait_until(lambda: run_id in ended, "the run ended")
    hub = hub_app.state.hub
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    assert [str(w.message) for w in recwarn if "SAWarning" in type(w.message).__name__] == []
    with hub.session() as session:
        assert session.exec(select(SyncRecord).where(SyncRecord.connection_id == connection["id"])).all() == []


def test_sync_requests_made_while_an_equal_run_is_queued_get_that_run(client, auth, example_fake):
    """One tenant clicking "sync now" 300 times queued 300 runs, each its own
    task, rows and provider calls."""
    fake = example_fake[1]
    connection = connect(client, auth)
    fake.state.hold = threading.Event()  # the first run holds the connection meanwhile
    first = start(client, auth, connection["id"], entity="notes")
    wait_until(lambda: fake.state.held, "the first run under way")
    # Clicks at the same moment too (they looked, found none and added one each), then later ones.
    queued: list[dict] = []
    try:
        clicks = [threading.Thread(target=lambda: queued.append(start(client, auth, connection["id"],
                                                                      entity="notes"))) for _ in range(6)]
        for click in clicks:
            click.start()
        for click in clicks:
            click.join(30)
        queued += [start(client, auth, connection["id"], entity="notes") for _ in range(3)]
        assert len(queued) == 9
        assert {run["id"] for run in queued} == {queued[0]["id"]} and queued[0]["id"] != first["id"]
        # Asking for more than the queued run does is a run of its own (then coalesced in turn).
        full = [start(client, auth, connection["id"], entity="notes", full_refresh=True) for _ in range(3)]
        assert {run["id"] for run in full} == {full[0]["id"]} and full[0]["id"] != queued[0]["id"]
        other = start(client, auth, connection["id"], entity="tags")
    finally:
        fake.state.hold.set()
    assert other["id"] not in {first["id"], queued[0]["id"], full[0]["id"]}
    for run in (first, queued[0], full[0], other):
        assert wait_run(client, auth, connection["id"], run["id"])["status"] == "succeeded"
    logs = client.get(f"{API}/connections/{connection['id']}/sync/logs", headers=auth).json()["runs"]
    assert len(logs) == 4


def test_mappings_saved_under_an_older_check_do_not_block_other_changes_of_their_config(client, auth, hub_app):
    """Every PUT checked the stored mappings again: a mapping a newer hub
    refuses kept the tenant from even disabling the config."""
    connection = connect(client, auth)
    config = client.post(f"{API}/connections/{connection['id']}/sync-configs",
                         json={"entity": "notes", "mappings": [{"source": "title", "target": "subject"}]},
                         headers=auth).json()["sync_config"]
    with hub_app.state.hub.session() as session:  # as an older hub let it be saved
        row = session.get(SyncConfig, config["id"])
        row.mappings = [{"source": "title.inner", "target": "subject", "transform": "rename"}]
        session.add(row)
        session.commit()
    url = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}"
    paused = client.put(url, json={"enabled": False, "schedule_minutes": 30}, headers=auth)
    assert paused.status_code == 200, paused.text
    assert paused.json()["sync_config"]["enabled"] is False
    assert paused.json()["sync_config"]["mappings"][0]["source"] == "title.inner"
    refused = client.put(url, json={"mappings": [{"source": "title.inner", "target": "subject"}]}, headers=auth)
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_field", refused.text
    fixed = client.put(f"{url}/mappings", json={"mappings": [{"source": "title", "target": "subject"}]}, headers=auth)
    assert fixed.status_code == 200, fixed.text


def test_a_part_of_the_background_stuck_in_its_stop_does_not_keep_the_process_from_stopping(caplog, monkeypatch):
    """An intermittent hang in a test's teardown: the API process's shutdown waited
    for ever on one part's stop. Each part now gets STOP_SECONDS."""
    import asyncio
    import logging

    from hub.sync import scheduler

    class Stuck:
        async def stop(self):
            await asyncio.Event().wait()  # nothing will end it

    class Quick:
        stopped = False

        async def stop(self):
            Quick.stopped = True

    monkeypatch.setattr(scheduler, "STOP_SECONDS", 0.2)
    with caplog.at_level(logging.ERROR, logger="hub.sync.scheduler"):
        asyncio.run(asyncio.wait_for(scheduler.Background([Quick(), Stuck()]).stop(), 5))
    assert Quick.stopped and any("stopping Stuck took more than" in r.getMessage() for r in caplog.records)
