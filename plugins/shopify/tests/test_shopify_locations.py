"""Inventory levels of a shop with more locations than Shopify takes in one
``location_ids`` (50), through the hub's REST API against the fake shop over
real HTTP: a full pull stores every level once, a location added or removed
between two pages neither is lost nor comes twice, a cursor of the version
that asked for every location at once still resumes, and the fake refuses 51
ids as Shopify does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlmodel import select

from hub.models import SyncRecord, SyncState, utcnow
from hub.services.records import seal_cursor
from hub.testing import wait_for_run
from hub_shopify import testing as fake

API = "/api/v1/integrations"
LEVELS = f"/admin/api/{fake.API_VERSION}/inventory_levels.json"


@pytest.fixture
def fake_options() -> dict[str, Any]:
    return {"products": 12, "capacity": 400, "leak_per_second": 200.0}


@pytest.fixture
def hub_env() -> dict[str, str]:
    return {"REQUESTS_PER_SECOND": "200"}


def level_ids(shop) -> set[str]:
    return {f"{item}:{location}" for item, location in shop.state.store.levels}


def pages(shopify, connection_id: str, limit: int, cursor: str | None = None, max_pages: int = 200):
    """Follow next_cursor through the records API, one page at a time: yields (records, next_cursor)."""
    url = shopify.records(connection_id, "inventory_levels")
    for _ in range(max_pages):
        response = shopify.get(url, limit=limit, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        yield body["records"], body["next_cursor"]
        cursor = body["next_cursor"]
        if cursor is None:
            return
    pytest.fail(f"still a next_cursor after {max_pages} pages")


def test_a_full_pull_over_120_locations_stores_every_level_once(shopify):
    # 12 items at 120 new locations (every 10th stocks nothing) and the primary one:
    # 50 locations make 500-600 levels, so each group spans several pages of 100.
    fake.seed_locations(shopify.shop, 120, unstocked=10)
    expected = level_ids(shopify.shop)
    assert len(shopify.shop.state.store.tables["locations"]) == 122 and len(expected) == 12 + 108 * 12
    connection_id = shopify.connect()
    config = shopify.post(f"{API}/connections/{connection_id}/sync-configs",
                          {"entity": "inventory_levels", "direction": "pull"})
    assert config.status_code == 201, config.text
    started = shopify.post(f"{API}/connections/{connection_id}/sync",
                           {"entity": "inventory_levels", "direction": "pull"})
    assert started.status_code == 202, started.text
    run = wait_for_run(shopify.client, shopify.auth, connection_id, started.json()["run"]["id"], timeout=60)
    assert run["status"] == "succeeded", run
    assert run["created"] == len(expected), run
    with shopify.hub_app.state.hub.session() as session:
        stored = session.exec(select(SyncRecord).where(SyncRecord.connection_id == connection_id,
                                                       SyncRecord.entity == "inventory_levels")).all()
    assert len(stored) == len(expected) and {r.remote_id for r in stored} == expected
    assert {r.data["id"] for r in stored} == expected and not any(r.deleted for r in stored)


def test_a_location_added_or_removed_between_pages_is_listed_once_and_none_is_lost(shopify):
    added = fake.seed_locations(shopify.shop, 120)
    connection_id = shopify.connect()
    seen: list[str] = []
    new_location = removed = None
    for number, (records, cursor) in enumerate(pages(shopify, connection_id, 97)):
        seen += [r["id"] for r in records]
        locations = {r["location_id"] for r in records}
        if removed is None and added[60]["id"] in locations:
            # In the second group: a location of the first, listed already, goes, and a new one comes.
            removed = added[10]["id"]
            fake.remove_location(shopify.shop, removed)
            new_location = fake.seed_locations(shopify.shop, 1)[0]["id"]
        assert cursor is None or len(cursor) < 2000
    assert removed is not None and number > 10
    assert len(seen) == len(set(seen)), "a level was listed twice"
    now = level_ids(shopify.shop)
    gone = {f"{item}:{removed}" for item in {int(i.split(":")[0]) for i in now}}
    assert set(seen) == now | gone  # every level of the shop as it is now, and the removed one's seen before
    assert {i for i in seen if i.endswith(f":{new_location}")} == {i for i in now if i.endswith(f":{new_location}")}
    assert len([i for i in now if i.endswith(f":{new_location}")]) == 12


def test_a_cursor_of_the_previous_version_resumes_and_the_next_pass_lists_every_location(shopify):
    """The previous version asked for every location at once and handed out Shopify's bare
    page_info; a pass in progress during the upgrade goes on from it to its end."""
    connection_id = shopify.connect()
    token = fake.issue_token(shopify.shop)
    first = httpx.get(f"{shopify.shop_url}{LEVELS}", headers={"X-Shopify-Access-Token": token}, params={
        "location_ids": ",".join(str(i) for i in shopify.shop.state.store.tables["locations"].rows), "limit": 5})
    assert first.status_code == 200, first.text
    # As the records API handed it out (sealed to its entity), and as the sync engine stored it (bare).
    page_info = httpx.URL(first.links["next"]["url"]).params["page_info"]
    old_cursor = seal_cursor(shopify.hub_app.state.hub, connection_id, page_info, "inventory_levels")
    before = level_ids(shopify.shop)
    fake.seed_locations(shopify.shop, 120)  # the shop grows during the upgrade
    rest = [r["id"] for records, _ in pages(shopify, connection_id, 5, cursor=old_cursor) for r in records]
    listed = [f"{r['inventory_item_id']}:{r['location_id']}" for r in first.json()["inventory_levels"]] + rest
    assert len(listed) == len(set(listed)) and set(listed) == before  # the old pass, to its end
    again = [r["id"] for records, _ in pages(shopify, connection_id, 250) for r in records]
    assert len(again) == len(set(again)) and set(again) == level_ids(shopify.shop) and len(again) == 12 * 121


def pull(shopify, connection_id: str, **body: Any) -> dict:
    started = shopify.post(f"{API}/connections/{connection_id}/sync",
                           {"entity": "inventory_levels", "direction": "pull", **body})
    assert started.status_code == 202, started.text
    run = wait_for_run(shopify.client, shopify.auth, connection_id, started.json()["run"]["id"], timeout=60)
    assert run["status"] == "succeeded", run
    return run


def stored_ids(shopify, connection_id: str) -> list[str]:
    with shopify.hub_app.state.hub.session() as session:
        return [r.remote_id for r in session.exec(select(SyncRecord).where(
            SyncRecord.connection_id == connection_id, SyncRecord.entity == "inventory_levels",
            SyncRecord.deleted == False))]  # noqa: E712


def test_a_sync_pass_stored_with_a_previous_version_cursor_resumes_after_the_upgrade(shopify):
    """The sync engine stored the bare page_info of the previous version when the hub
    stopped; the upgraded plugin resumes the pass from it, and the next full pass
    lists the levels of every location the shop has grown to."""
    connection_id = shopify.connect()
    config = shopify.post(f"{API}/connections/{connection_id}/sync-configs",
                          {"entity": "inventory_levels", "direction": "pull"})
    assert config.status_code == 201, config.text
    token = fake.issue_token(shopify.shop)
    first = httpx.get(f"{shopify.shop_url}{LEVELS}", headers={"X-Shopify-Access-Token": token}, params={
        "location_ids": ",".join(str(i) for i in shopify.shop.state.store.tables["locations"].rows), "limit": 5})
    listed = {f"{r['inventory_item_id']}:{r['location_id']}" for r in first.json()["inventory_levels"]}
    page_info = httpx.URL(first.links["next"]["url"]).params["page_info"]
    with shopify.hub_app.state.hub.session() as session:
        session.add(SyncState(sync_config_id=config.json()["sync_config"]["id"], connection_id=connection_id,
                              entity="inventory_levels", pass_mode="full", pass_started_at=utcnow(),
                              cursor=page_info, pass_pages=1))
        session.commit()
    before = level_ids(shopify.shop)
    fake.seed_locations(shopify.shop, 120)
    pull(shopify, connection_id)
    resumed = stored_ids(shopify, connection_id)
    assert len(resumed) == len(set(resumed)) and set(resumed) == before - listed
    pull(shopify, connection_id, full_refresh=True)
    assert sorted(stored_ids(shopify, connection_id)) == sorted(level_ids(shopify.shop))


@pytest.mark.parametrize("name", ["location_ids", "inventory_item_ids"])
def test_the_fake_refuses_more_than_50_ids_as_shopify_does(shopify, name):
    token = fake.issue_token(shopify.shop)
    ids = [str(1000 + i) for i in range(51)]
    for count, status in ((50, 200), (51, 422)):
        response = httpx.get(f"{shopify.shop_url}{LEVELS}", headers={"X-Shopify-Access-Token": token},
                             params={name: ",".join(ids[:count])})
        assert response.status_code == status, response.text
    assert list(response.json()["errors"]) == [name]
    # A client's own filter keeps going to Shopify as given: 51 ids are Shopify's refusal.
    connection_id = shopify.connect()
    refused = shopify.get(shopify.records(connection_id, "inventory_levels"), **{name: ",".join(ids)})
    assert refused.status_code == 422, refused.text
