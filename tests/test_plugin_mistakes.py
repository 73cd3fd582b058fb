"""A plugin's hook that returns the wrong thing is reported as that
plugin's error (502 ``provider_error`` naming the provider and the hook),
not as the hub's 500 further on."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.plugins import PluginRegistry
from hub.testing import wait_for_run
from hub.types import EntityField, EntitySchema, Page, ProviderInfo
from tests.conftest import API, make_org, module_plugin

INFO = ProviderInfo(name="sloppy", label="Sloppy", category="test", auth_type="api_key",
                    urls={"api": "https://sloppy.invalid"})
THINGS = EntitySchema("things", "Things", fields=[EntityField("id", "string"), EntityField("name", "string")],
                      supports_create=True, supports_update=True)


async def _record() -> dict:
    return {"id": "t1", "name": "one"}


async def get_record(ctx, entity, record_id):
    return _record()  # forgot the await


def sloppy_plugin(**hooks):
    defaults = {
        "list_records": lambda ctx, entity, cursor, page_size, filters, since: Page(records=[]),
        "get_record": get_record,
        "create_record": lambda ctx, entity, data, idempotency_key: None,
        "update_record": lambda ctx, entity, record_id, data: [1, 2],
    }
    return module_plugin("sloppy_plugin", INFO, [THINGS], **{**defaults, **hooks})


@pytest.fixture
def client(settings):
    registry = PluginRegistry()
    registry.register(sloppy_plugin(), "sloppy")
    with TestClient(create_app(settings, registry)) as client:
        yield client


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the plugin's answers, not storage)
def test_wrong_results_of_record_hooks_are_the_plugins_error(client):
    auth = make_org(client.app)
    auth.pop("org_id")
    created = client.post(f"{API}/connections", json={"provider": "sloppy", "credentials": {"api_key": "k"}},
                          headers=auth)
    assert created.status_code == 201, created.text
    records = f"{API}/connections/{created.json()['connection']['id']}/entities/things/records"
    for response, hook, got in (
        (client.get(f"{records}/t1", headers=auth), "get_record", "coroutine"),
        (client.post(records, json={"data": {"name": "two"}}, headers=auth), "create_record", "NoneType"),
        (client.put(f"{records}/t1", json={"data": {"name": "three"}}, headers=auth), "update_record", "list"),
    ):
        assert response.status_code == 502, response.text
        body = response.json()
        assert body["code"] == "provider_error"
        assert body["error"] == f"provider sloppy returned {got} from {hook}, expected dict (hub/hookspecs.py)"


def test_a_test_connection_answering_nonsense_refuses_the_connection(settings):
    registry = PluginRegistry()
    registry.register(sloppy_plugin(test_connection=lambda ctx: "ok"), "sloppy")
    with TestClient(create_app(settings, registry)) as client:
        auth = make_org(client.app)
        auth.pop("org_id")
        refused = client.post(f"{API}/connections", json={"provider": "sloppy", "credentials": {"api_key": "k"}},
                              headers=auth)
        assert refused.status_code == 502, refused.text
        assert "returned str from test_connection" in refused.json()["error"]
        assert client.get(f"{API}/connections", headers=auth).json()["connections"] == []


def test_a_page_larger_than_asked_is_handed_out_in_slices_and_logged(settings, caplog):
    caplog.set_level(logging.INFO)
    many = [{"id": f"t{i}", "name": str(i)} for i in range(7)]
    registry = PluginRegistry()
    registry.register(sloppy_plugin(list_records=lambda ctx, entity, cursor, page_size, filters, since:
                                    Page(records=many)), "sloppy")
    with TestClient(create_app(settings, registry)) as client:
        auth = make_org(client.app)
        auth.pop("org_id")
        connection = client.post(f"{API}/connections", json={"provider": "sloppy", "credentials": {"api_key": "k"}},
                                 headers=auth).json()["connection"]
        url = f"{API}/connections/{connection['id']}/entities/things/records"
        handed, cursor = [], None
        for _ in range(10):
            page = client.get(url, params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=auth).json()
            assert len(page["records"]) <= 2
            handed += [r["id"] for r in page["records"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
    assert handed == [r["id"] for r in many]  # every one once, no page larger than asked
    assert "provider sloppy returned 7 things records for a page of 2" in caplog.text


@pytest.mark.parametrize(("page", "problem"), [
    (Page(records=None), "records are NoneType, not a list"),  # a provider's {"products": null} passed on
    (Page(records="abc"), "records are str, not a list"),
    (Page(records=[{"id": "t1"}, 1]), "records hold int where records (objects) belong"),
    (Page(records=[], deleted_ids="abc"), "deleted_ids are not a list of ids"),
    (Page(records=[], next_cursor=5), "next_cursor or watermark is not text"),
])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the plugin's answers, not storage)
def test_a_page_not_made_of_records_is_the_plugins_error_in_listings_and_sync(settings, page, problem):
    registry = PluginRegistry()
    registry.register(sloppy_plugin(list_records=lambda ctx, entity, cursor, page_size, filters, since: page),
                      "sloppy")
    with TestClient(create_app(settings, registry)) as client:
        auth = make_org(client.app)
        auth.pop("org_id")
        connection = client.post(f"{API}/connections", json={"provider": "sloppy", "credentials": {"api_key": "k"}},
                                 headers=auth).json()["connection"]
        listed = client.get(f"{API}/connections/{connection['id']}/entities/things/records", headers=auth)
        assert listed.status_code == 502 and listed.json()["code"] == "provider_error", listed.text
        assert listed.json()["error"] == f"provider sloppy returned a things page whose {problem}"
        started = client.post(f"{API}/connections/{connection['id']}/sync", json={"entity": "things"}, headers=auth)
        assert started.status_code == 202, started.text
        run = wait_for_run(client, auth, connection["id"], started.json()["run"]["id"])
        assert (run["status"], run["error_code"]) == ("failed", "provider_error"), run
        assert problem in run["error"]


def test_one_plugin_registered_under_a_second_name_leaves_the_first_working():
    """Its second registration failed, and the cleanup unregistered the object: the
    first provider's hooks were gone (a review found it)."""
    info = ProviderInfo(name="twice", label="Twice", category="test", auth_type="api_key")
    plugin = module_plugin("twice_plugin", info, [EntitySchema("things", "Things")])
    registry = PluginRegistry()
    assert registry.register(plugin, "twice").error is None
    second = registry.register(plugin, "again")
    assert second.error and "again" not in registry.providers
    assert registry.pm.is_registered(plugin) and "provider_info" in registry.providers["twice"].hooks
    assert registry.pm.hook.provider_info.get_hookimpls()
