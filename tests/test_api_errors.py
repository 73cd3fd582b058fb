"""Bad input gets a clear JSON error with a stable code, never a 500."""

from __future__ import annotations

import pytest

from hub_example.testing import API_KEY

from tests.conftest import API


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == code and body["error"]
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_malformed_json_wrong_types_and_unknown_fields(client, auth):
    url = f"{API}/connections"
    assert_error(client.post(url, content=b'{"provider": ', headers={**auth, "Content-Type": "application/json"}),
                 400, "invalid_json")
    deep = b'{"provider": "example", "credentials": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert_error(client.post(url, content=deep, headers={**auth, "Content-Type": "application/json"}),
                 400, "invalid_json")
    long_number = b'{"provider": "example", "config": {"n": ' + b"7" * 5000 + b"}}"
    refused = assert_error(client.post(url, content=long_number, headers={**auth, "Content-Type": "application/json"}),
                           400, "invalid_json")
    assert "a number of more than 4,300 digits" in refused["error"]  # (it named only UTF-8 and nesting)
    body = assert_error(client.post(url, json={"provider": 12, "credentials": "x"}, headers=auth),
                        422, "validation_error")
    assert "credentials" in body["error"]
    assert body["fields"] == ["provider", "credentials"]  # (a form marks its fields by them)
    unknown = assert_error(client.post(url, json={"provider": "example", "bogus": 1}, headers=auth), 422,
                           "validation_error")
    assert unknown["fields"] == ["bogus"]
    nested = assert_error(client.post(url, json={"provider": "example", "credentials": {"api_key": 5}},
                                      headers=auth), 422, "validation_error")
    assert nested["fields"] == ["credentials.api_key"]
    assert_error(client.post(url, json=[1, 2], headers=auth), 422, "validation_error")
    # curl -d without -H 'Content-Type: application/json' sends a form: say so, not "a valid dictionary".
    form = assert_error(client.post(url, content=b'{"provider": "example"}',
                                    headers={**auth, "Content-Type": "application/x-www-form-urlencoded"}),
                        415, "unsupported_media_type")
    assert "application/json" in form["error"]
    untyped = client.build_request("POST", url, content=b'{"provider": "example"}', headers=auth)
    assert "content-type" not in untyped.headers
    assert_error(client.send(untyped), 415, "unsupported_media_type")
    assert_error(client.post(url, headers=auth), 422, "validation_error")  # no body at all: it is missing
    latin1 = assert_error(client.post(url, content='{"provider": "caf\u00e9"}'.encode("latin-1"),
                                      headers={**auth, "Content-Type": "application/json"}), 400, "invalid_json")
    assert "UTF-8" in latin1["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_unknown_provider_entity_route_and_method(client, auth):
    assert_error(client.get(f"{API}/providers/nope"), 404, "unknown_provider")
    assert_error(client.get(f"{API}/providers/example/entities/nope"), 404, "unknown_entity")
    assert_error(client.post(f"{API}/connections", json={"provider": "nope"}, headers=auth), 404, "unknown_provider")
    assert_error(client.get("/api/v1/integrations/nothing-here"), 404, "not_found")
    assert_error(client.patch(f"{API}/providers"), 405, "method_not_allowed")
    # Every method of the path is named, not only the first route's (Allow: GET, though POST is there).
    refused = client.put(f"{API}/connections", headers=auth)
    assert_error(refused, 405, "method_not_allowed")
    assert refused.headers["Allow"] == "GET, HEAD, POST" and "allowed: GET, HEAD, POST" in refused.json()["error"]
    # HEAD is GET without the body: its status and headers, authentication and all.
    listed, head = client.get(f"{API}/connections", headers=auth), client.head(f"{API}/connections", headers=auth)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == listed.headers["content-length"] != "0"
    assert head.headers["content-type"] == "application/json"
    assert client.head(f"{API}/connections").status_code == 401
    assert client.head(f"{API}/nothing-here", headers=auth).status_code == 404
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth).json()["connection"]
    post_only = client.head(f"{API}/connections/{connection['id']}/test", headers=auth)  # (no GET: no HEAD either)
    assert (post_only.status_code, post_only.headers["Allow"]) == (405, "POST")
    assert_error(client.get(f"{API}/connections/{connection['id']}/entities/nope/records", headers=auth),
                 404, "unknown_entity")
    limit = assert_error(client.get(f"{API}/connections/{connection['id']}/entities/notes/records?limit=0",
                                    headers=auth), 422, "validation_error")
    assert limit["fields"] == ["limit"] and limit["details"][0]["field"] == "query.limit"
    assert_error(client.get(f"{API}/connections/{connection['id']}/entities/notes/records?since=yesterday",
                            headers=auth), 422, "validation_error")
    assert_error(client.post(f"{API}/connections/{connection['id']}/actions/nope", json={}, headers=auth),
                 404, "unknown_action")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_missing_required_credentials_are_named(client, auth):
    body = assert_error(client.post(f"{API}/connections", json={"provider": "example"}, headers=auth),
                        422, "missing_fields")
    assert "api_key" in body["error"]
    assert body["details"] == {"missing": ["api_key"]} and body["fields"] == ["api_key"]
    unknown = assert_error(client.post(f"{API}/connections", json={
        "provider": "example", "credentials": {"api_key": API_KEY, "pasword": "x"}}, headers=auth),
        422, "unknown_fields")
    assert "pasword" in unknown["error"]
    assert unknown["details"] == {"unknown": ["pasword"]} and unknown["fields"] == ["pasword"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_oversized_body_is_413(client, auth):
    big = b'{"provider": "example", "name": "' + b"x" * 2_000_000 + b'"}'
    assert_error(client.post(f"{API}/connections", content=big,
                             headers={**auth, "Content-Type": "application/json"}), 413, "payload_too_large")

    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    streamed = client.post(f"{API}/webhooks/example", content=chunks())
    assert_error(streamed, 413, "payload_too_large")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_link_flow_on_an_api_key_provider_is_a_clear_error(client, auth):
    assert_error(client.post(f"{API}/link/example/token", json={}, headers=auth), 422, "wrong_auth_type")


def test_webhook_for_unknown_connection(client):
    assert_error(client.post(f"{API}/webhooks/example?connection_id=nope", content=b"{}"), 401,
                 "webhook_rejected")
    assert_error(client.post(f"{API}/webhooks/example", content=b"{}"), 401, "webhook_rejected")


def test_a_nul_character_is_a_clear_error_on_every_database(client, auth):
    """PostgreSQL cannot store or compare text with NUL: a 4xx in the envelope, not a 500."""
    for response in (client.get(f"{API}/connections/abc%00def", headers=auth),
                     client.post(f"{API}/webhooks/example?connection_id=ab%00c", content=b"{}")):
        assert response.status_code in (404, 422) if "webhooks" not in str(response.url) else (
            response.json()["code"] == "webhook_rejected"), response.text
        assert response.json()["success"] is False and response.json()["code"]
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth).json()["connection"]
    # In a body: refused alike by every database (SQLite stored it, PostgreSQL refused it).
    renamed = assert_error(client.put(f"{API}/connections/{connection['id']}", json={"name": "bad\u0000name"},
                                      headers=auth), 400, "invalid_json")
    assert "at name holds a NUL character" in renamed["error"]
    assert_error(client.post(f"{API}/connections", json={"provider": "example", "credentials": {
        "api_key": API_KEY, "webhook_secret": "a\u0000"}}, headers=auth), 400, "invalid_json")


def test_json_the_hub_cannot_store_and_show_again_is_refused_as_invalid_json(client, auth):
    # NaN and Infinity are not JSON (SQLite stored them as null, PostgreSQL refused them), and a
    # lone surrogate cannot be written out again: a record holding one broke every later listing.
    url = f"{API}/connections"
    for raw, why in ((b'{"provider": "example", "credentials": {"api_key": NaN}}', "NaN is not a JSON number"),
                     (b'{"provider": "example", "name": -Infinity}', "-Infinity is not a JSON number"),
                     (b'{"provider": "example", "name": "bad \\ud800 text"}', "the text at name holds a lone surrogate"),
                     (b'{"provider": "example", "credentials": {"\\udfff": "k"}}', "lone surrogate"),
                     # the error names where, never the text: it may be a secret
                     (b'{"provider": "example", "credentials": {"api_key": "sk_live_SECRET\\ud800"}}',
                      "the text at credentials.api_key holds"),
                     (b'{"provider": "example", "name": "n", "config": {"rate": 1e400}}', "a number is too large")):
        body = assert_error(client.post(url, content=raw, headers={**auth, "Content-Type": "application/json"}),
                            400, "invalid_json")
        assert why in body["error"] and "SECRET" not in body["error"]
    fine = client.post(url, content='{"provider": "example", "name": "caf\u00e9 \U0001F600", "credentials": '
                                    f'{{"api_key": "{API_KEY}"}}}}'.encode(),
                       headers={**auth, "Content-Type": "application/json"})
    assert fine.status_code == 201 and fine.json()["connection"]["name"] == "caf\u00e9 \U0001F600"


def test_a_cursor_is_refused_alike_by_every_list_however_it_is_crafted(client, auth):
    """One status (422 invalid_cursor) on every list, and no 500 for a cursor
    nesting JSON past the parser's depth."""
    import base64

    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth).json()["connection"]
    base = f"{API}/connections/{connection['id']}"
    config = client.post(f"{base}/sync-configs", json={"entity": "notes"}, headers=auth).json()["sync_config"]
    nested = base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("=")
    for url in (f"{base}/entities/notes/records", f"{base}/sync-configs/{config['id']}/records",
                f"{base}/sync-configs/{config['id']}/conflicts", f"{base}/sync/logs", f"{base}/webhooks/events"):
        for cursor in ("!!!", nested, "e30"):  # e30: {} (no position)
            response = client.get(url, params={"cursor": cursor}, headers=auth)
            if cursor == "e30" and response.status_code == 200:
                continue  # an empty position is the first page where a list reads it so
            if cursor == nested and response.json().get("code") == "validation_error":
                continue  # past the list's max_length for cursors
            assert_error(response, 422, "invalid_cursor")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_a_chunked_body_past_the_limit_is_413_on_json_routes_too(client, auth):
    def chunks():
        yield b'{"provider": "example", "name": "'
        for _ in range(40):
            yield b"x" * 65536

    assert_error(client.post(f"{API}/connections", content=chunks(),
                             headers={**auth, "Content-Type": "application/json"}), 413, "payload_too_large")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_provider_listings_of_unknown_categories_are_not_kept(client):
    for i in range(50):
        assert client.get(f"{API}/providers", params={"category": f"nothing-{i}"}).json()["providers"] == []
    cached = client.app.state.__dict__.get("providers_json", {})
    assert not any(str(key).startswith("nothing-") for key in cached)


def test_declared_connection_fields_take_values_of_their_type(client, auth):
    url = f"{API}/connections"
    # (Other types are refused by the body's schema.) A credential may be long (a PEM key), not endless.
    for credentials in ({"api_key": "k" * 16385},):
        body = assert_error(client.post(url, json={"provider": "example", "credentials": credentials},
                                        headers=auth), 422, "invalid_value")
        assert body["details"] == {"fields": ["api_key"]}
    long_key = client.post(url, json={"provider": "example", "credentials": {"api_key": "k" * 2000}}, headers=auth)
    assert long_key.json()["code"] != "invalid_value", long_key.text  # long enough for a key: tested with the provider


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_routes_whose_body_fields_are_all_optional_take_no_body(client, auth):
    """As POST /sync does: the missing body is the empty one, not a 422 "Field required"."""
    assert_error(client.post(f"{API}/link/example/token", headers=auth), 422, "wrong_auth_type")
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth).json()["connection"]
    assert_error(client.post(f"{API}/connections/{connection['id']}/actions/nope", headers=auth), 404,
                 "unknown_action")
    assert_error(client.post(f"{API}/connections/{connection['id']}/webhooks", headers=auth), 400, "not_supported")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_booleans_and_counts_in_bodies_take_json_booleans_and_integers_only(client, auth):
    """JSON has true/false and integers: "yes", 1 or "60" is a client's
    mistake to be told about, not a value to guess (``true`` as a frequency
    was read as one minute)."""
    url = f"{API}/connections"
    base = {"provider": "example", "credentials": {"api_key": API_KEY}}
    for field, value in [("sync_enabled", "yes"), ("sync_enabled", 1), ("sync_frequency_minutes", True),
                         ("sync_frequency_minutes", "60"), ("sync_frequency_minutes", 60.5)]:
        body = assert_error(client.post(url, json={**base, field: value}, headers=auth), 422, "validation_error")
        assert field in body["error"]
    created = client.post(url, json={**base, "sync_enabled": True, "sync_frequency_minutes": 30}, headers=auth)
    assert created.status_code == 201, created.text
    connection = created.json()["connection"]
    assert connection["sync_enabled"] is True and connection["sync_frequency_minutes"] == 30
    connection_url = f"{url}/{connection['id']}"
    assert_error(client.put(connection_url, json={"sync_enabled": "false"}, headers=auth), 422, "validation_error")
    assert_error(client.post(f"{connection_url}/sync", json={"full_refresh": "true"}, headers=auth),
                 422, "validation_error")
    assert_error(client.post(f"{connection_url}/sync-configs", json={"entity": "notes", "enabled": 0},
                             headers=auth), 422, "validation_error")
    config = client.post(f"{connection_url}/sync-configs", json={"entity": "notes", "direction": "both"}, headers=auth)
    assert config.status_code == 201, config.text
    config_url = f"{connection_url}/sync-configs/{config.json()['sync_config']['id']}"
    assert_error(client.put(config_url, json={"schedule_minutes": "15"}, headers=auth), 422, "validation_error")
    assert_error(client.post(f"{config_url}/records", json={"data": {"title": "x"}, "sync": "no"}, headers=auth),
                 422, "validation_error")
    assert client.get(f"{config_url}/records", headers=auth).json()["records"] == []
    assert client.get(connection_url, headers=auth).json()["connection"]["sync_enabled"] is True


def test_json_nested_past_the_limit_is_refused_before_it_is_stored(client, auth):
    """A record nested 300 levels deep was stored (201 or 500), then every
    listing of its sync config's records answered 500: it could not be written out."""
    from hub.api.bodies import MAX_DEPTH

    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth).json()["connection"]
    config = client.post(f"{API}/connections/{connection['id']}/sync-configs",
                         json={"entity": "notes", "direction": "both"}, headers=auth).json()["sync_config"]
    records = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/records"

    def nested(depth: int) -> dict:
        value: dict = {}
        for _ in range(depth):
            value = {"a": value}
        return value

    deep = assert_error(client.post(records, json={"data": {"title": "x", "body": nested(MAX_DEPTH + 1)},
                                                   "mapped": False, "sync": False}, headers=auth), 400, "invalid_json")
    assert f"nested more than {MAX_DEPTH} levels" in deep["error"]
    assert_error(client.post(records, json={"data": {"title": "x", "body": [[[[[[["y"]]]]]]] * 2 + [nested(MAX_DEPTH)]},
                                            "mapped": False, "sync": False}, headers=auth), 400, "invalid_json")
    assert client.get(records, headers=auth).json()["records"] == []
    shallow = client.post(records, json={"data": {"title": "x", "body": "y"}, "mapped": False, "sync": False},
                          headers=auth)
    assert shallow.status_code == 201, shallow.text


def test_a_change_through_an_index_of_thousands_of_digits_is_an_objects_key():
    """``int()`` of 5,000 digits raised ValueError: a 500 on the stored-record write."""
    from hub.sync.store import _as_lists, _deep_merge, index_problem
    from hub.types import EntityField, EntitySchema

    change = {"preferred_locales": {"9" * 5000: "fr"}, "metadata": {"1": "a"}}
    schema = EntitySchema("customers", "Customers", (EntityField("preferred_locales", type="array"),
                                                     EntityField("metadata", type="object")))
    assert index_problem({"preferred_locales": ["en"], "metadata": {}}, change, schema) is None
    base = {"preferred_locales": ["en"], "metadata": {}}
    _deep_merge(base, change)
    assert base["preferred_locales"] == {"9" * 5000: "fr"} and base["metadata"] == {"1": "a"}
    assert _as_lists({"9" * 5000: "x"}) == {"9" * 5000: "x"}
    assert _as_lists({"0": "x", "1": "y"}) == ["x", "y"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_an_integrations_page_on_an_allowed_origin_may_call_the_api_from_the_browser(settings, example_registry):
    from fastapi.testclient import TestClient

    from hub.api.main import create_app

    page = "https://app.example.com"
    app = create_app(settings.model_copy(update={"cors_origins": f"{page}/, https://admin.example.com"}),
                     example_registry)
    with TestClient(app) as client:
        preflight = client.options(f"{API}/connections", headers={
            "Origin": page, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == page
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        # The page reads how long to wait after a 429.
        assert "retry-after" in client.get(f"{API}/providers", headers={"Origin": page}).headers[
            "access-control-expose-headers"].lower()
        # Errors are readable by the page too (its code tells it what to do).
        refused = client.get(f"{API}/connections", headers={"Origin": page})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == page
        assert client.get(f"{API}/providers", headers={"Origin": page}).headers["access-control-allow-origin"] == page
        elsewhere = client.get(f"{API}/providers", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in elsewhere.headers
        assert client.options(f"{API}/connections", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}).status_code == 400
    with TestClient(create_app(settings, example_registry)) as client:
        assert "access-control-allow-origin" not in client.get(f"{API}/providers", headers={"Origin": page}).headers


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_every_429_says_when_to_come_back_in_whole_seconds(settings):
    """README: `rate_limited` (429, always with `Retry-After`)."""
    from hub.types import EntitySchema, Page, ProviderInfo, RateLimited
    from tests.conftest import connected_plugin, module_plugin

    waits = iter([None, 0.4, 1.5, 0.0, float("inf"), 10**9])

    def list_records(ctx, entity, cursor, page_size):
        raise RateLimited("slow down", retry_after=next(waits))
        return Page(records=[])  # pragma: no cover
    info = ProviderInfo(name="busy", label="Busy", category="test", auth_type="api_key", urls={})
    plugin = module_plugin("busy_plugin", info, [EntitySchema("things", "Things")], list_records=list_records)
    with connected_plugin(settings, plugin, "busy") as (client, auth, connection_id):
        url = f"{API}/connections/{connection_id}/entities/things/records"
        seen = []
        for _ in range(6):
            response = client.get(url, headers=auth)
            assert_error(response, 429, "rate_limited")
            seen.append(response.headers.get("retry-after"))
    assert seen == ["1", "1", "2", "1", "1", "86400"]


def test_a_record_id_no_url_can_carry_is_not_found(client, auth, caplog, monkeypatch):
    """Control characters in an id made the plugin's URL invalid: a 502 and a traceback."""
    import hub_example

    monkeypatch.setattr(hub_example, "quote", lambda text, safe="": text)  # a plugin putting ids in URLs as they are
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth).json()["connection"]
    for odd in ("note_3%0A", "%00", "a%00b", "%0D%0Ax:1", "%7F", "note_3%1E"):
        url = f"{API}/connections/{connection['id']}/entities/notes/records/{odd}"
        assert_error(client.get(url, headers=auth), 404, "not_found")
        assert_error(client.put(url, json={"data": {"title": "t"}}, headers=auth), 404, "not_found")
        assert_error(client.delete(url, headers=auth), 404, "not_found")
    assert "Traceback" not in caplog.text and "InvalidURL" not in caplog.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (the request, not its storage)
def test_a_content_type_merely_containing_json_is_not_json(client, auth):
    url = f"{API}/connections"
    body = b'{"provider": "example", "credentials": {"api_key": "k"}}'
    for content_type in ("application/jsonx", "text/json", "application/json-seq", "application/x-json+xml"):
        assert_error(client.post(url, content=body, headers={**auth, "Content-Type": content_type}),
                     415, "unsupported_media_type")


def test_an_error_of_a_moment_says_when_to_come_back_and_a_wait_that_is_not_a_number_is_left_out():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from hub.api.errors import install
    from hub.types import HubError

    class Busy(HubError):
        status, code, retry_after = 409, "busy", 2.5

    class Odd(HubError):  # a plugin's own class: anything may be there
        status, code, retry_after = 409, "odd", "soon"

    app = FastAPI()
    install(app)

    @app.get("/{which}")
    def fail(which: str):
        raise {"busy": Busy, "odd": Odd}[which]("try later")

    with TestClient(app) as client:
        busy = client.get("/busy")
        assert (busy.status_code, busy.headers.get("Retry-After"), busy.json()["code"]) == (409, "3", "busy")
        odd = client.get("/odd")
        assert (odd.status_code, odd.json()["code"]) == (409, "odd") and "Retry-After" not in odd.headers


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_down_or_locked_is_503_database_unavailable_not_a_bug(client, auth, monkeypatch, caplog):
    """README calls a 500 "a bug: please report it"; a database that cannot
    serve for now (down, unreachable, SQLite locked past its busy timeout)
    is no bug of the request, which may be sent again. /healthz says so too."""
    import sqlalchemy as sa

    hub = client.app.state.hub

    def down(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {"secret": "sk_live_do_not_log"},
                                      Exception("connection to server failed: Connection refused"))
    monkeypatch.setattr(hub.engine, "connect", down)
    for url in ("/healthz", f"{API}/connections"):
        response = client.get(url, headers=auth)
        body = assert_error(response, 503, "database_unavailable")
        assert response.headers["Retry-After"] == "5" and "try again" in body["error"]
    logged = [r.getMessage() for r in caplog.records if r.name == "hub.api"]
    assert logged and all("Connection refused" in line and "sk_live" not in line for line in logged), logged
