"""``EntitySchema.read_after_write``: a provider that answers a write with
part of the record (Salesforce's id, HubSpot's properties written) has the
record read whole by the core, for the records API's answer and what sync
stores; a failed read leaves the write's answer standing, never an error
that would have the write sent again."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from hub import hookimpl
from hub.types import NotFound, ProviderUnavailable
from tests.conftest import API
from tests.sync_support import Ledger, serving, wait_run


class Terse(Ledger):
    """A ledger answering writes as Salesforce does: the id and nothing else.
    It adds a field of its own to each record (``owner``), as providers do."""

    def __init__(self, answer_id: bool = True):
        super().__init__(0)
        self.answer_id = answer_id
        self.reads_fail = False
        self.reads = 0

    @hookimpl
    def entity_schemas(self):
        return [dataclasses.replace(schema, read_after_write=True) for schema in super().entity_schemas()]

    @hookimpl
    def get_record(self, entity, record_id):
        self.reads += 1
        if self.reads_fail:
            raise ProviderUnavailable("ledger is answering 503 to reads")
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        return dict(self.items[record_id])

    @hookimpl
    def create_record(self, entity, data, idempotency_key):
        record = self.put(f"it_new_{len(self.items)}", {**data, "owner": "ops"})
        return {"id": record["id"], "success": True} if self.answer_id else {"success": True}

    @hookimpl
    def update_record(self, entity, record_id, data):
        if record_id in self.failing_updates:
            raise ProviderUnavailable(f"ledger cannot update {record_id} right now")
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        self.put(record_id, data)
        return {"id": record_id}


@pytest.fixture
def terse(settings):
    provider = Terse()
    with serving(settings, provider) as (_app, client, headers):
        created = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                              headers=headers)
        assert created.status_code == 201, created.text
        yield provider, client, headers, created.json()["connection"]["id"]


def test_a_create_and_an_update_answer_the_record_read_whole(terse):
    provider, client, auth, cid = terse
    records = f"{API}/connections/{cid}/entities/items/records"
    created = client.post(records, json={"data": {"name": "crate", "amount": 5}}, headers=auth)
    assert created.status_code == 201, created.text
    record = created.json()["record"]
    assert record == provider.items[record["id"]]  # the owner and the time the provider set, too
    assert record["owner"] == "ops" and record["name"] == "crate"

    updated = client.put(f"{records}/{record['id']}", json={"data": {"amount": 7}}, headers=auth)
    assert updated.status_code == 200, updated.text
    assert updated.json()["record"] == {**record, "amount": 7, "updated_at": provider.items[record["id"]]["updated_at"]}
    assert provider.reads == 2


def test_a_failed_read_back_leaves_the_write_answered_and_made_once(terse, caplog):
    provider, client, auth, cid = terse
    provider.reads_fail = True
    records = f"{API}/connections/{cid}/entities/items/records"
    with caplog.at_level(logging.WARNING, logger="hub.runtime"):
        created = client.post(records, json={"data": {"name": "crate"}}, headers=auth)
    assert created.status_code == 201, created.text
    assert created.json()["record"]["id"] in provider.items
    assert len(provider.items) == 1
    assert "reading it back failed" in caplog.text


def test_a_create_answered_without_an_id_is_a_provider_error(terse):
    provider, client, auth, cid = terse
    provider.answer_id = False
    created = client.post(f"{API}/connections/{cid}/entities/items/records", json={"data": {"name": "crate"}},
                          headers=auth)
    assert created.status_code == 502, created.text
    assert created.json()["code"] == "provider_error"
    assert "without its id" in created.json()["error"]


def test_a_pushed_record_is_stored_whole_and_not_echoed_by_the_next_pull(terse):
    provider, client, auth, cid = terse
    configs = f"{API}/connections/{cid}/sync-configs"
    config = client.post(configs, json={"entity": "items", "direction": "both"}, headers=auth)
    assert config.status_code == 201, config.text
    records = f"{configs}/{config.json()['sync_config']['id']}/records"
    made = client.post(records, json={"data": {"name": "crate", "amount": 3}}, headers=auth)
    assert made.status_code == 201, made.text
    pushed = wait_run(client, auth, cid, made.json()["run_id"])
    assert (pushed["status"], pushed["pushed"]) == ("succeeded", 1), pushed
    (remote_id,) = provider.items
    stored = client.get(records, params={"mapped": False}, headers=auth).json()["records"]
    assert [r["data"] for r in stored] == [provider.items[remote_id]]  # the owner the provider set included

    started = client.post(f"{API}/connections/{cid}/sync", json={"entity": "items"}, headers=auth)
    assert started.status_code == 202, started.text
    again = wait_run(client, auth, cid, started.json()["run"]["id"])
    assert (again["status"], again["created"], again["updated"]) == ("succeeded", 0, 0), again
