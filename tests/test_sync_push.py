"""Bidirectional sync through mappings on the example provider's notes: a
change on either side arrives on the other in the other's shape, the hub's
own writes do not come back as changes, and conflicts follow each policy.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import select

from hub.models import SyncConflict, SyncRecord, utcnow
from hub.sync.stored import encode_cursor
from tests.conftest import API
from tests.sync_support import wait_run
from tests.test_example_end_to_end import connect
from tests.test_sync_api import assert_error, start

MAPPINGS = [
    {"source": "id", "target": "note_id"},
    {"source": "title", "target": "subject"},
    {"source": "body", "target": "text", "default": ""},
    {"source": "updated_at", "target": "modified", "transform": "datetime"},
]


def setup_notes(client, auth, policy: str = "provider_wins"):
    connection = connect(client, auth)
    config = client.post(f"{API}/connections/{connection['id']}/sync-configs",
                         json={"entity": "notes", "direction": "both", "conflict_policy": policy,
                               "mappings": MAPPINGS}, headers=auth).json()["sync_config"]
    first = wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes")["id"])
    assert first["status"] == "succeeded" and first["created"] == 23
    return connection, config, f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/records"


def provider_edit(fake, note_id: str, title: str) -> None:
    row = fake.state.notes.rows[note_id]
    row["title"] = title
    row["updated_at"] = utcnow().isoformat()


def pull(client, auth, connection_id: str) -> dict:
    run = wait_run(client, auth, connection_id,
                   start(client, auth, connection_id, entity="notes", direction="pull")["id"])
    assert run["status"] == "succeeded", run
    return run


def test_changes_travel_both_ways_through_the_mappings_without_echo(client, auth, example_fake):
    fake = example_fake[1]
    connection, _config, records = setup_notes(client, auth)

    changed = client.put(f"{records}/note_3", json={"data": {"subject": "from the hub"}}, headers=auth)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["record"]["data"]["subject"] == "from the hub" and body["record"]["pending"] is True
    push = wait_run(client, auth, connection["id"], body["run_id"])
    assert push["status"] == "succeeded" and push["direction"] == "push" and push["pushed"] == 1
    assert fake.state.notes.rows["note_3"]["title"] == "from the hub"
    after_push = client.get(f"{records}/note_3", params={"mapped": True}, headers=auth).json()["record"]
    assert after_push["pending"] is False and after_push["data"]["subject"] == "from the hub"

    created = client.post(records, json={"data": {"subject": "brand new", "text": "hello"}}, headers=auth).json()
    assert created["record"]["remote_id"] is None and created["record"]["pending"] is True
    assert wait_run(client, auth, connection["id"], created["run_id"])["pushed"] == 1
    new_note = next(n for n in fake.state.notes.rows.values() if n["title"] == "brand new")
    assert new_note["body"] == "hello"
    stored_new = client.get(f"{records}/{created['record']['id']}", params={"mapped": True}, headers=auth).json()
    assert stored_new["record"]["remote_id"] == new_note["id"] and stored_new["record"]["data"]["note_id"] == new_note["id"]

    deleted = client.delete(f"{records}/note_9", headers=auth).json()
    assert deleted["success"] is True and deleted["run_id"]  # the push queued, as for a create or an update
    wait_run(client, auth, connection["id"], deleted["run_id"])
    assert "note_9" not in fake.state.notes.rows
    # Sent again (its answer lost): done already, nothing more to push.
    again = client.delete(f"{records}/note_9", headers=auth)
    assert (again.status_code, again.json()) == (200, {"success": True, "run_id": None})

    echo = pull(client, auth, connection["id"])
    assert (echo["created"], echo["updated"], echo["conflicts"]) == (0, 0, 0)

    provider_edit(fake, "note_7", "from the provider")
    incoming = pull(client, auth, connection["id"])
    assert incoming["updated"] == 1
    mapped = client.get(f"{records}/note_7", params={"mapped": True}, headers=auth).json()["record"]["data"]
    assert mapped["subject"] == "from the provider" and mapped["note_id"] == "note_7"
    assert mapped["modified"].endswith("+00:00")

    live = client.get(records, params={"limit": 500}, headers=auth).json()["records"]
    assert sorted(r["remote_id"] for r in live) == sorted(fake.state.notes.rows)
    assert all(r["data"]["title"] == fake.state.notes.rows[r["remote_id"]]["title"] for r in live)


def test_writes_are_checked_against_the_config(client, auth):
    connection, config, records = setup_notes(client, auth)
    unmapped = assert_error(client.put(f"{records}/note_1", json={"data": {"colour": "red", "subject": "x"}},
                                       headers=auth), 422, "unknown_field")
    assert unmapped["fields"] == ["colour"] and unmapped["details"] == {"unknown": ["colour"]}
    unknown = assert_error(client.put(f"{records}/note_1", json={"data": {"colour": "red"}, "mapped": False},
                                      headers=auth), 422, "unknown_field")
    assert unknown["fields"] == ["colour"] and unknown["details"] == {"unknown": ["colour"]}
    assert_error(client.put(f"{records}/note_1", json={"data": {"note_id": "x"}}, headers=auth), 422, "empty_change")
    assert_error(client.put(f"{records}/note_404", json={"data": {"subject": "x"}}, headers=auth), 404,
                 "record_not_found")
    raw = client.put(f"{records}/note_1", json={"data": {"title": "raw"}, "mapped": False, "sync": False},
                     headers=auth).json()
    assert raw["run_id"] is None and raw["record"]["data"]["title"] == "raw"
    assert raw["record"]["pending_op"] == "update"
    # A record waiting to be deleted shows it, and is not changed back to life by a later write.
    assert client.delete(f"{records}/note_2", params={"sync": False}, headers=auth).status_code == 200
    waiting = client.get(f"{records}/note_2", headers=auth).json()["record"]
    assert waiting["pending"] is True and waiting["pending_op"] == "delete"
    assert_error(client.put(f"{records}/note_2", json={"data": {"subject": "x"}}, headers=auth), 409,
                 "record_pending_delete")
    pending = client.get(records, params={"pending": True}, headers=auth).json()["records"]
    assert sorted((r["remote_id"], r["pending_op"]) for r in pending) == [("note_1", "update"), ("note_2", "delete")]
    client.put(f"{API}/connections/{connection['id']}/sync-configs/{config['id']}", json={"direction": "pull"},
               headers=auth)
    assert_error(client.put(f"{records}/note_1", json={"data": {"subject": "x"}}, headers=auth), 405, "read_only")


@pytest.mark.parametrize("policy", ["provider_wins", "hub_wins", "review"])
def test_a_record_changed_on_both_sides_follows_the_conflict_policy(client, auth, example_fake, policy):
    fake = example_fake[1]
    connection, config, records = setup_notes(client, auth, policy)
    conflicts_url = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/conflicts"
    hub_side = client.put(f"{records}/note_2", json={"data": {"subject": "hub side"}, "sync": False}, headers=auth)
    assert hub_side.status_code == 200
    provider_edit(fake, "note_2", "provider side")

    both = wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes")["id"])
    assert both["status"] == "succeeded" and both["conflicts"] == 1 and both["direction"] == "both"
    [conflict] = client.get(conflicts_url, headers=auth).json()["conflicts"]
    assert conflict["local_data"] == {"op": "update", "data": {"title": "hub side"}}
    assert conflict["remote_data"]["title"] == "provider side" and conflict["policy"] == policy
    record = client.get(f"{records}/note_2", params={"mapped": True}, headers=auth).json()["record"]

    if policy == "provider_wins":
        assert conflict["status"] == "resolved" and conflict["resolution"] == "provider"
        assert fake.state.notes.rows["note_2"]["title"] == "provider side"
        assert record["data"]["subject"] == "provider side" and record["pending"] is False
    elif policy == "hub_wins":
        assert conflict["status"] == "resolved" and conflict["resolution"] == "hub"
        assert both["pushed"] == 1
        assert fake.state.notes.rows["note_2"]["title"] == "hub side"
        assert record["data"]["subject"] == "hub side" and record["pending"] is False
    else:
        assert conflict["status"] == "open" and both["pushed"] == 0
        assert fake.state.notes.rows["note_2"]["title"] == "provider side"
        assert record["pending"] is True and record["push_status"] == "conflict"
        assert record["data"]["subject"] == "hub side"
        assert client.get(conflicts_url, params={"status": "open"}, headers=auth).json()["conflicts"]
        # The integrations page shows the connection waits for a decision, without a query per config.
        shown = client.get(f"{API}/connections", headers=auth).json()["connections"]
        assert [c["open_conflicts"] for c in shown if c["id"] == connection["id"]] == [1]
        resolved = client.post(f"{conflicts_url}/{conflict['id']}/resolve", json={"resolution": "hub"},
                               headers=auth).json()
        assert resolved["conflict"]["status"] == "resolved" and resolved["conflict"]["resolution"] == "hub"
        assert wait_run(client, auth, connection["id"], resolved["run_id"])["pushed"] == 1
        assert fake.state.notes.rows["note_2"]["title"] == "hub side"
        assert_error(client.post(f"{conflicts_url}/{conflict['id']}/resolve", json={"resolution": "provider"},
                                 headers=auth), 409, "conflict_resolved")
        assert client.get(f"{API}/connections/{connection['id']}", headers=auth).json()["connection"][
            "open_conflicts"] == 0
    again = pull(client, auth, connection["id"])
    assert again["conflicts"] == 0 and again["updated"] == 0


@pytest.mark.parametrize("policy", ["provider_wins", "hub_wins", "review"])
def test_a_write_pushed_at_once_meets_a_change_made_at_the_provider_since_the_last_pull(client, auth,
                                                                                        example_fake, policy):
    """A write with sync queues a push without a pull first: the push reads
    the provider's version, so a change made there since is a conflict under
    the policy, not overwritten (hub_wins overwrites it, as it says)."""
    fake = example_fake[1]
    connection, config, records = setup_notes(client, auth, policy)
    conflicts_url = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/conflicts"
    provider_edit(fake, "note_2", "provider side")
    written = client.put(f"{records}/note_2", json={"data": {"subject": "hub side"}}, headers=auth)
    assert written.status_code == 200, written.text
    pushed = wait_run(client, auth, connection["id"], written.json()["run_id"])
    assert pushed["status"] == "succeeded" and pushed["direction"] == "push"
    title = fake.state.notes.rows["note_2"]["title"]
    conflicts = client.get(conflicts_url, headers=auth).json()["conflicts"]
    record = client.get(f"{records}/note_2", params={"mapped": True}, headers=auth).json()["record"]
    if policy == "hub_wins":
        assert (title, pushed["pushed"], pushed["conflicts"], conflicts) == ("hub side", 1, 0, [])
    else:
        assert (title, pushed["pushed"], pushed["conflicts"]) == ("provider side", 0, 1)
        [conflict] = conflicts
        assert conflict["local_data"]["data"] == {"title": "hub side"}
        assert conflict["remote_data"]["title"] == "provider side"
        expected = ("provider side", False) if policy == "provider_wins" else ("hub side", True)
        assert (record["data"]["subject"], record["pending"]) == expected
    # Unchanged at the provider since: pushed as usual.
    written = client.put(f"{records}/note_3", json={"data": {"subject": "plain"}}, headers=auth)
    assert wait_run(client, auth, connection["id"], written.json()["run_id"])["pushed"] == 1
    assert fake.state.notes.rows["note_3"]["title"] == "plain"

def test_review_conflicts_can_keep_the_provider_version_or_take_custom_data(client, auth, example_fake):
    fake = example_fake[1]
    connection, config, records = setup_notes(client, auth, "review")
    conflicts_url = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/conflicts"
    for note, title in (("note_4", "hub four"), ("note_5", "hub five")):
        client.put(f"{records}/{note}", json={"data": {"subject": title}, "sync": False}, headers=auth)
        provider_edit(fake, note, f"provider {note}")
    wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes")["id"])
    open_ = {c["remote_id"]: c for c in client.get(conflicts_url, params={"status": "open"}, headers=auth)
             .json()["conflicts"]}
    assert sorted(open_) == ["note_4", "note_5"]
    # A change made while the conflict waits is what the reviewer decides on.
    client.put(f"{records}/note_4", json={"data": {"subject": "hub four, again"}, "sync": False}, headers=auth)
    [shown] = [c for c in client.get(conflicts_url, params={"status": "open"}, headers=auth).json()["conflicts"]
               if c["id"] == open_["note_4"]["id"]]
    assert shown["local_data"]["data"]["title"] == "hub four, again", shown
    # Side by side in the tenant's fields, as a resolution with data takes them.
    [mapped] = [c for c in client.get(conflicts_url, params={"status": "open", "mapped": True}, headers=auth)
                .json()["conflicts"] if c["id"] == open_["note_4"]["id"]]
    assert mapped["local_data"]["op"] == "update"
    assert mapped["local_data"]["data"]["subject"] == "hub four, again"
    assert mapped["remote_data"]["subject"] == "provider note_4" and "title" not in mapped["remote_data"]
    assert mapped["local_data"]["data"]["note_id"] == mapped["remote_data"]["note_id"] == "note_4"
    # Data with another resolution than custom would be dropped unseen: refused.
    refused = client.post(f"{conflicts_url}/{open_['note_4']['id']}/resolve",
                          json={"resolution": "provider", "data": {"subject": "x"}}, headers=auth)
    assert refused.status_code == 422 and "custom" in refused.json()["error"], refused.text
    dataless = assert_error(client.post(f"{conflicts_url}/{open_['note_4']['id']}/resolve",
                                        json={"resolution": "custom"}, headers=auth), 422, "missing_fields")
    assert dataless["fields"] == ["data"]
    keep = client.post(f"{conflicts_url}/{open_['note_4']['id']}/resolve", json={"resolution": "provider"},
                       headers=auth).json()
    assert keep["run_id"] is None
    assert client.get(f"{records}/note_4", params={"mapped": True}, headers=auth).json()["record"]["data"][
        "subject"] == "provider note_4"
    custom = client.post(f"{conflicts_url}/{open_['note_5']['id']}/resolve",
                         json={"resolution": "custom", "data": {"subject": "merged five"}}, headers=auth).json()
    wait_run(client, auth, connection["id"], custom["run_id"])
    assert fake.state.notes.rows["note_5"]["title"] == "merged five"
    assert fake.state.notes.rows["note_4"]["title"] == "provider note_4"
    # What was decided is kept beside both sides (the sides are what was weighed).
    assert custom["conflict"]["resolution_data"] == {"title": "merged five"}
    resolved = {c["remote_id"]: c for c in client.get(conflicts_url, params={"mapped": True}, headers=auth)
                .json()["conflicts"]}
    assert resolved["note_5"]["resolution_data"]["subject"] == "merged five"
    assert resolved["note_5"]["resolution_data"]["note_id"] == "note_5"
    assert resolved["note_5"]["local_data"]["data"]["subject"] == "hub five"
    assert resolved["note_4"]["resolution_data"] is None


@pytest.mark.parametrize("policy", ["provider_wins", "hub_wins", "review"])
def test_a_record_the_tenant_changed_and_the_provider_deleted_follows_the_policy(client, auth, example_fake, policy):
    """Found by a full pass no longer listing it, or by the push meeting a 404:
    either way a conflict, never a change left failing forever. ``hub_wins``
    cannot push an update to a deleted record: the conflict waits in review."""
    fake = example_fake[1]
    connection, config, records = setup_notes(client, auth, policy)
    conflicts_url = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/conflicts"
    for note_id in ("note_4", "note_5"):
        assert client.put(f"{records}/{note_id}", json={"data": {"subject": "hub side"}, "sync": False},
                          headers=auth).status_code == 200
        del fake.state.notes.rows[note_id]

    swept = wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes",
                                                           direction="pull", full_refresh=True)["id"])
    assert swept["status"] == "succeeded" and swept["conflicts"] == 2 and swept["deleted"] == 2
    pushed = wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes",
                                                            direction="push")["id"])
    assert pushed["status"] == "succeeded" and pushed["failed"] == 0 and pushed["error"] is None
    conflicts = client.get(conflicts_url, headers=auth).json()["conflicts"]
    assert sorted(c["remote_id"] for c in conflicts) == ["note_4", "note_5"]
    assert all(c["remote_data"] is None and c["local_data"]["data"] == {"title": "hub side"} for c in conflicts)
    # Mapped, the hub's side is the whole record as the provider last had it, changed: what a custom
    # resolution posted back would create again (not every other field null).
    for shown in client.get(conflicts_url, params={"mapped": True}, headers=auth).json()["conflicts"]:
        assert shown["remote_data"] is None
        assert shown["local_data"]["data"]["subject"] == "hub side"
        assert shown["local_data"]["data"]["note_id"] == shown["remote_id"]
    assert {c["policy"] for c in conflicts} == {"provider_wins" if policy == "provider_wins" else "review"}
    for note_id in ("note_4", "note_5"):
        record = client.get(f"{records}/{note_id}", headers=auth).json()["record"]
        assert record["deleted"] is True
        if policy == "provider_wins":
            assert record["pending"] is False
        else:
            assert record["push_status"] == "conflict"
    assert {c["status"] for c in conflicts} == {"resolved" if policy == "provider_wins" else "open"}

    # The push meeting the provider's 404 is the same conflict.
    assert client.put(f"{records}/note_6", json={"data": {"subject": "hub side"}, "sync": False},
                      headers=auth).status_code == 200
    del fake.state.notes.rows["note_6"]
    pushed = wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes",
                                                            direction="push")["id"])
    assert pushed["status"] == "succeeded" and pushed["conflicts"] == 1 and pushed["failed"] == 0
    record = client.get(f"{records}/note_6", headers=auth).json()["record"]
    assert record["deleted"] is True and record["push_status"] == (None if policy == "provider_wins" else "conflict")


def test_conflicts_are_listed_newest_first_a_page_at_a_time(client, auth, hub_app):
    connection, config, records = setup_notes(client, auth, "review")
    hub = hub_app.state.hub
    moment = utcnow()
    with hub.session() as session:
        rows = session.exec(select(SyncRecord).where(SyncRecord.connection_id == connection["id"])
                            .order_by(SyncRecord.remote_id).limit(5)).all()
        for number, row in enumerate(rows):  # three at the same moment: the id breaks the tie
            session.add(SyncConflict(connection_id=row.connection_id, entity="notes", record_id=row.id,
                                     remote_id=row.remote_id, policy="review",
                                     created_at=moment - timedelta(seconds=1 if number >= 3 else 0)))
        session.commit()
    url = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/conflicts"
    seen, cursor = [], None
    while True:
        page = client.get(url, params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=auth).json()
        seen += page["conflicts"]
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert len(seen) == 5 and len({c["id"] for c in seen}) == 5
    assert [c["created_at"] for c in seen] == sorted((c["created_at"] for c in seen), reverse=True)
    assert_error(client.get(url, params={"cursor": encode_cursor({"before": ["never", 1]})}, headers=auth), 422,
                 "invalid_cursor")



def test_a_change_the_provider_refuses_can_be_discarded(client, auth, example_fake):
    """A delete the provider refuses (409) leaves the record failed with a
    pending delete that no write may turn into an update: discarding the
    change gives the provider's version back, and the tenant goes on."""
    fake = example_fake[1]
    connection, config, records = setup_notes(client, auth, "hub_wins")
    fake.state.fail_next, fake.state.fail_status = 1, 409
    deleted = client.delete(f"{records}/note_3", headers=auth)
    assert deleted.status_code == 200, deleted.text
    refused = wait_run(client, auth, connection["id"], client.get(
        f"{API}/connections/{connection['id']}/sync/logs", headers=auth).json()["runs"][0]["id"])
    assert (refused["status"], refused["failed"], refused["error_code"]) == ("succeeded", 1, None)
    assert refused["error"].startswith("1 change was not pushed: the records' push_status and push_error say why")
    record = client.get(f"{records}/note_3", headers=auth).json()["record"]
    assert (record["pending_op"], record["push_status"]) == ("delete", "failed")
    assert_error(client.put(f"{records}/note_3", json={"data": {"subject": "x"}}, headers=auth), 409,
                 "record_pending_delete")

    discarded = client.post(f"{records}/note_3/discard", params={"mapped": True}, headers=auth)
    assert discarded.status_code == 200, discarded.text
    record = discarded.json()["record"]
    assert (record["pending"], record["pending_op"], record["push_status"], record["deleted"]) == \
        (False, None, None, False)
    assert record["data"]["subject"] == fake.state.notes.rows["note_3"]["title"]
    assert_error(client.post(f"{records}/note_3/discard", headers=auth), 422, "no_pending_change")
    changed = client.put(f"{records}/note_3", json={"data": {"subject": "changed instead"}}, headers=auth)
    assert wait_run(client, auth, connection["id"], changed.json()["run_id"])["pushed"] == 1
    assert fake.state.notes.rows["note_3"]["title"] == "changed instead"

    # A record never created at the provider just goes.
    created = client.post(records, json={"data": {"subject": "never sent"}, "sync": False}, headers=auth).json()
    gone = client.post(f"{records}/{created['record']['id']}/discard", headers=auth)
    assert gone.status_code == 200 and gone.json()["record"] is None
    assert_error(client.get(f"{records}/{created['record']['id']}", headers=auth), 404, "record_not_found")
    assert_error(client.post(f"{records}/nope/discard", headers=auth), 404, "record_not_found")


def test_a_provider_error_echoing_a_nul_character_is_stored_and_the_change_can_be_discarded(client, auth,
                                                                                           example_fake):
    """PostgreSQL refuses NUL in text: a provider's error quoting a tenant's
    value with one in it failed to be stored, the run ended internal_error,
    the record stayed "sending" and every later push of the entity failed."""
    fake = example_fake[1]
    connection, config, records = setup_notes(client, auth, "hub_wins")
    fake.state.fail_next, fake.state.fail_status, fake.state.fail_message = 1, 422, "invalid title: a\x00b " + "x" * 3000
    # (The API refuses NUL in what it is sent; a provider's words may hold one all the same.)
    changed = client.put(f"{records}/note_4", json={"data": {"subject": "a b"}}, headers=auth)
    assert changed.status_code == 200, changed.text
    refused = wait_run(client, auth, connection["id"], changed.json()["run_id"])
    assert (refused["status"], refused["failed"]) == ("succeeded", 1), refused
    record = client.get(f"{records}/note_4", headers=auth).json()["record"]
    assert record["push_status"] == "failed"
    assert record["push_error"].startswith("invalid title: a\ufffdb xxx") and len(record["push_error"]) == 2000
    assert record["push_error_code"] == "validation_error"  # what the page acts on
    assert client.post(f"{records}/note_4/discard", headers=auth).status_code == 200
    changed = client.put(f"{records}/note_4", json={"data": {"subject": "fixed"}}, headers=auth)
    assert wait_run(client, auth, connection["id"], changed.json()["run_id"])["pushed"] == 1
    assert fake.state.notes.rows["note_4"]["title"] == "fixed"
    pushed = client.get(f"{records}/note_4", headers=auth).json()["record"]
    assert (pushed["push_error"], pushed["push_error_code"], pushed["push_error_details"]) == (None, None, None)
    # A failed run keeps the provider's words too.
    fake.state.fail_next, fake.state.fail_message = 1, "no\x00pe"
    failed = wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes",
                                                            direction="pull")["id"])
    assert failed["status"] == "failed" and "no\ufffdpe" in failed["error"], failed


def test_what_delete_record_answers_says_whether_the_provider_keeps_the_record():
    """A provider's deletion answer passed on ({"id", "deleted": true}) was
    taken for a record the provider keeps, and stored as live."""
    from hub.sync.store import kept_record

    canceled = {"id": "sub_1", "status": "canceled"}
    assert kept_record(canceled) is canceled
    assert [kept_record(answer) for answer in (True, None, {}, {"id": "cus_1", "deleted": True})] == [None] * 4
