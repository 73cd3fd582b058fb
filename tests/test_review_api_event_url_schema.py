"""The OpenAPI document's ``pattern`` for an event endpoint's ``url``
(schemas._ENDPOINT_URL) leaves out IP-address and IDN hosts, which the API
takes (201): README's default (``HUB_EVENT_PRIVATE_URLS`` true) is meant "for
an app on the same host or network as the hub", i.e. ``http://127.0.0.1:8080/...``
or ``http://10.0.0.5/...``. A generated client that enforces ``pattern``
(openapi-generator's, pydantic-based ones) cannot register such an endpoint,
though the server would take it."""

from __future__ import annotations

import re

import pytest

from tests.conftest import API


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hub-events", "http://10.0.0.5/hub-events",
                                 "http://[::1]:8080/hub-events"])
def test_the_documented_url_pattern_takes_what_the_api_takes(client, auth, url):
    created = client.post(f"{API}/event-endpoints", json={"url": url}, headers=auth)
    assert created.status_code == 201, created.text
    schema = client.get("/openapi.json").json()["components"]["schemas"]["EventEndpointCreate"]
    pattern = schema["properties"]["url"]["pattern"]
    assert re.search(pattern, url), f"the document's pattern refuses {url}, which the API accepted"


@pytest.mark.parametrize("url", ["https://app.example.com:0/x", "https://u:p@app.example.com/x",
                                 "https://app.example.com/x#f", "http://[0]/x", "http://999.1.1.1/x"])
def test_the_documented_url_pattern_refuses_what_the_api_refuses(client, auth, url):
    """Else a generated client's valid request is refused (schemathesis found port 0)."""
    refused = client.post(f"{API}/event-endpoints", json={"url": url}, headers=auth)
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_url", refused.text
    schema = client.get("/openapi.json").json()["components"]["schemas"]["EventEndpointCreate"]
    assert not re.search(schema["properties"]["url"]["pattern"], url)
