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
