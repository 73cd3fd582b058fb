"""The conformance suite passes the example provider and fails each broken
variant in tests/broken_plugins with the message that says what to fix.

The variants run through pytester exactly as a plugin package runs the suite:
a ``ConformanceSuite`` subclass with a ``target``, fixtures from the ``hub``
pytest plugin."""

from __future__ import annotations

import dataclasses
import re

from urllib.parse import urlencode

import hub_example
import pytest
from broken_plugins import example_target
from broken_plugins.linkex import linkex_fake, linkex_plugin

from hub import hookimpl
from hub.testing.conformance import (
    ConformanceError,
    ConformanceSuite,
    ConformanceTarget,
    Harness,
    check_auth_flow,
    check_plugin_loads,
    check_provider_info,
    check_token_refresh,
    forbid_own_http_clients,
)
from hub.types import Credentials
from tests.oauth_provider import build_plugin, create_fake

pytest_plugins = ["pytester"]


class TestExampleConformance(ConformanceSuite):
    target = example_target()


# variant -> {failing test: what its message must say}
BROKEN = {
    "early_stop": {
        "test_list_pagination[notes]": "list_records for 'notes' returned next_cursor=None after 2 of 3 pages "
                                       "* return the next page's cursor until the last page",
        "test_list_pagination[tags]": "list_records for 'tags' returned next_cursor=None after 2 of * pages",
    },
    "ignores_page_size": {
        "test_list_pagination[notes]": "list_records for 'notes' returned 8 records on page 1 for page_size=3: "
                                       "pass page_size to the provider*",
        "test_list_pagination[tags]": "list_records for 'tags' returned * records on page 1 for page_size=3*",
    },
    "accepts_any_webhook": {
        "test_webhook_forged_rejected": "a forged delivery (body changed after signing) answered HTTP 200* "
                                        "verify the signature over the raw request.body with hmac.compare_digest*",
        "test_webhook_stale_rejected": "a stale delivery (signed long ago) answered HTTP 200* compare the signed "
                                       "timestamp with ctx.provider.webhook_tolerance_seconds*",
        "test_webhook_stale_forged_rejected": "a stale delivery whose body changed after signing answered HTTP "
                                              "200*expected 401 webhook_rejected: verify the signature over the "
                                              "raw request.body before anything else*",
    },
    "checks_age_first": {
        "test_webhook_stale_forged_rejected": "a stale delivery whose body changed after signing answered HTTP 401 "
                                              "webhook_stale: * expected 401 webhook_rejected: verify_webhook "
                                              "judged its age before its signature; verify the signature first*",
    },
    "unclamped_pages": {
        "test_list_pagination[notes]": "listing 'notes' with limit=250 (the API's largest) answered HTTP 422 "
                                       "validation_error* clamp page_size to the provider's maximum page size*",
        "test_list_pagination[tags]": "listing 'tags' with limit=250*clamp page_size*",
    },
    "readonly_writes": {
        "test_unsupported_writes_refused[tags]": "the schema declares 'tags' read-only (supports_create=False) but "
                                                 "create_record wrote one anyway* raise hub.types.ReadOnly for it*",
    },
    "create_fails": {
        "test_writes_round_trip[tags]": "creating 'tags' {'name': 'conformance tag'} answered HTTP 502 "
                                        "provider_error* the schema declares supports_create for 'tags': fix "
                                        "create_record (or the sample), or set supports_create=False",
    },
    "leaky_errors": {
        "test_unknown_record_not_found[notes]": "get_record('notes', 'conformance-missing-0000') raised KeyError: "
                                                "'id' instead of a hub error: raise hub.types.NotFound*",
        "test_unknown_record_not_found[tags]": "get_record('tags', *) raised KeyError*",
        "test_unknown_entity_not_found": "list_records for the unknown entity * raised KeyError: 'data' instead "
                                         "of a hub error*do not pass raise_for_status=False*",
        "test_writes_round_trip[notes]": "after deleting 'notes' *, getting it answered HTTP 502 provider_error*"
                                         "get_record raise NotFound*",
        "test_ids_are_one_path_segment[notes]": "get_record('notes', 'note_1#x') returned *: the id reached the "
                                                "provider's URL unquoted*urllib.parse.quote(record_id, safe='')*",
        "test_ids_are_one_path_segment[tags]": "get_record('tags', 'tag_1#x') returned *",
    },
    "get_differs": {
        "test_get_matches_list[notes]": "get_record and list_records give 'notes' record * differently (fields "
                                        "['author']): return the same representation from both*",
    },
    "missing_schema": {
        "test_entity_schema[tags]": "entity 'tags' declares no fields: list its fields as EntityField(...)*",
    },
    "undeclared_entity": {
        "test_webhook_events_well_formed": "verify_webhook returned an event for entity 'note', which has no "
                                          "schema (entities: ['notes', 'tags'])*",
    },
    "own_client": {
        "test_uses_core_http_client": "list_records built its own client (httpx.AsyncClient built at "
                                      "*own_client.py:* in list_records): use ctx.http*",
        "test_unknown_entity_not_found": "list_records for the unknown entity * raised KeyError*",
        "test_rate_limit_waited": "a list of 'notes' whose first request met a 429 with Retry-After: 1 "
                                  "answered *, expected 200 after the wait: reach the provider through ctx.http*",
    },
}

SUITE = """
import broken_plugins.{variant} as variant
from broken_plugins import example_target

from hub.testing.conformance import ConformanceSuite


class TestVariant(ConformanceSuite):
    target = example_target(variant)
"""


@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_suite_fails_broken_plugin_saying_what_to_fix(pytester, variant):
    pytester.makepyfile(**{f"test_{variant}_conformance": SUITE.format(variant=variant)})
    result = pytester.runpytest("-p", "no:cacheprovider", "-rf")
    failed = set(re.findall(r"^FAILED \S+::TestVariant::(\S+)", result.stdout.str(), re.M))
    assert failed == set(BROKEN[variant]), result.stdout.str()
    for message in BROKEN[variant].values():
        result.stdout.fnmatch_lines(["*" + _literal_brackets(message) + "*"])
    assert result.parseoutcomes().get("errors", 0) == 0


def _literal_brackets(pattern: str) -> str:
    return pattern.replace("[", "\0").replace("]", "[]]").replace("\0", "[[]")


def test_suite_passes_the_example_through_pytester(pytester):
    pytester.makepyfile(test_example_conformance=SUITE.replace("broken_plugins.{variant}", "hub_example"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 20


def test_suite_passes_a_plugin_that_checks_the_url_a_delivery_was_posted_to(pytester):
    pytester.makepyfile(test_signs_url_conformance=SUITE.format(variant="signs_url"))
    result = pytester.runpytest("-p", "no:cacheprovider", "-rf")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 20


def test_suite_without_target_says_how_to_declare_it(pytester):
    pytester.makepyfile(test_missing_target="""
from hub.testing.conformance import ConformanceSuite

class TestNothing(ConformanceSuite):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*set `target = ConformanceTarget(provider=..., fake_app=..., ...)`*"])
    assert result.ret != 0


def test_name_mismatch_is_reported_with_the_hub_load_error():
    target = ConformanceTarget(provider="notes", plugin=hub_example, fake_app=lambda: None)
    with pytest.raises(ConformanceError, match=r"refused to load plugin 'notes'.*entry point name 'notes' "
                                               r"differs from provider_info name 'example'"):
        check_plugin_loads(target)


def test_missing_entry_point_says_how_to_declare_it():
    target = ConformanceTarget(provider="nosuchprovider", fake_app=lambda: None)
    with pytest.raises(ConformanceError, match=r'\[project.entry-points."hub.providers"\] nosuchprovider = '
                                               r'"hub_nosuchprovider"'):
        check_provider_info(target)


def test_own_client_guard_allows_only_the_core_pool():
    import asyncio

    import httpx

    from hub.http import ClientPool

    pool = ClientPool()
    with forbid_own_http_clients() as violations:
        client = pool.client("connection-1")
        with pytest.raises(RuntimeError, match="ctx.http"):
            httpx.Client()
    assert isinstance(client, httpx.AsyncClient)
    assert len(violations) == 1 and "test_conformance.py" in violations[0]
    asyncio.run(pool.close())
    httpx.Client().close()


OAUTH_SETTINGS = {"client_id": "cid", "client_secret": "csecret"}


def test_oauth_connection_is_made_through_the_flow_and_its_url_checked(tmp_path):
    target = ConformanceTarget(provider="oauthex", plugin=build_plugin(), fake_app=create_fake,
                               settings=OAUTH_SETTINGS)
    harness = Harness(target, tmp_path).start()
    try:
        assert harness.connection["provider"] == "oauthex" and harness.connection["token_expires_at"]
        assert harness.secrets()["access_token"] in harness.fake_app.state.access
        check_auth_flow(harness)
    finally:
        harness.stop()


def _connect_without_oauth(harness):
    from hub.services.connections import upsert_from_credentials

    connection = upsert_from_credentials(harness.hub, harness.organization_id, harness.provider,
                                         Credentials(secrets={"access_token": "at_x", "refresh_token": "rt_x"}))
    return {"id": connection.id}


def test_oauth_url_without_state_and_challenge_is_reported(tmp_path):
    plugin = build_plugin()

    @hookimpl
    def authorization_url(ctx, redirect_uri):
        return ctx.url("authorize") + "?" + urlencode({"client_id": "cid", "redirect_uri": redirect_uri})

    plugin.authorization_url = authorization_url
    target = ConformanceTarget(provider="oauthex", plugin=plugin, fake_app=create_fake, settings=OAUTH_SETTINGS,
                               connect=_connect_without_oauth)
    harness = Harness(target, tmp_path).start()
    try:
        with pytest.raises(ConformanceError, match=r"authorization_url returned '.*': it does not carry the state "
                                                   r"unchanged as \?state=; supports_pkce is set but the "
                                                   r"code_challenge is not in it"):
            check_auth_flow(harness)
    finally:
        harness.stop()


@pytest.mark.parametrize("token", ["link-sandbox", ""])
def test_link_token_is_checked(tmp_path, token):
    plugin = linkex_plugin()
    if not token:
        @hookimpl
        def create_link_token():
            return {"link_token": "", "expiration": None}

        plugin.create_link_token = create_link_token
    target = ConformanceTarget(provider="linkex", plugin=plugin, fake_app=linkex_fake,
                               connect=lambda harness: harness.link_exchange("pub1", link_token=harness.link_token()))
    harness = Harness(target, tmp_path)
    try:
        if not token:
            # The hub refuses an empty link token itself: the suite says what to return.
            with pytest.raises(ConformanceError, match="create_link_token must return"):
                harness.start()
            return
        harness.start()
        assert harness.connection["config"] == {"item_id": "item-pub1"}
        check_auth_flow(harness)
    finally:
        harness.stop()


def test_round_trips_compare_the_scalars_inside_declared_objects_too():
    """HubSpot keeps a contact's data under ``properties``: an update_record
    dropping the change passed when only top-level scalars were compared."""
    from hub.testing.conformance import _at, _echoed
    from hub.types import EntityField, EntitySchema

    schema = EntitySchema("contacts", "Contacts", (
        EntityField("id"), EntityField("name"), EntityField("tags", type="array"),
        EntityField("properties", type="object", fields=(EntityField("email"), EntityField("address", type="object",
                                                                                            fields=(EntityField("city"),)))),
        EntityField("metadata", type="object"),
    ))
    update = {"name": "Ada", "tags": ["a"], "metadata": {"k": "v"}, "undeclared": 1,
              "properties": {"email": "ada@example.com", "address": {"city": "London"}, "other": "x"}}
    assert _echoed(schema, update) == [("name", "Ada"), ("properties.email", "ada@example.com"),
                                       ("properties.address.city", "London")]
    record = {"properties": {"email": "old@example.com", "address": None}}
    assert _at(record, "properties.email") == "old@example.com"
    assert _at(record, "properties.address.city") is _at({}, "name")  # absent: not compared on create
    # An entity declaring no fields: its top-level scalars, as they come.
    assert _echoed(EntitySchema("notes", "Notes"), {"title": "x", "tags": ["a"]}) == [("title", "x")]


def _expire(fake_app):
    fake_app.state.access.clear()


def test_token_refresh_is_checked_through_the_api(tmp_path):
    """The suite never called refresh_credentials: a plugin whose refresh crashed passed."""
    for name in ("working", "broken", "untold"):
        (tmp_path / name).mkdir()
    target = ConformanceTarget(provider="oauthex", plugin=build_plugin(), fake_app=create_fake,
                               settings=OAUTH_SETTINGS, expire_tokens=_expire)
    harness = Harness(target, tmp_path / "working").start()
    try:
        check_token_refresh(harness)
        assert harness.fake_app.state.refresh_calls == 2
    finally:
        harness.stop()

    broken = build_plugin()

    @hookimpl
    async def refresh_credentials(ctx):
        raise KeyError("expires_in")

    broken.refresh_credentials = refresh_credentials
    harness = Harness(dataclasses.replace(target, plugin=broken), tmp_path / "broken").start()
    try:
        with pytest.raises(ConformanceError, match=r"listing 'contacts' after the fake stopped accepting the "
                                                   r"access token answered HTTP 502 provider_error.*refresh_credentials"):
            check_token_refresh(harness)
    finally:
        harness.stop()
    harness = Harness(dataclasses.replace(target, expire_tokens=None), tmp_path / "untold").start()
    try:
        with pytest.raises(ConformanceError, match=r"give ConformanceTarget\(expire_tokens=\.\.\.\)"):
            check_token_refresh(harness)
    finally:
        harness.stop()


def test_wait_for_run_works_with_the_harness_client(tmp_path):
    """PLUGINS.md offers wait_for_run for a plugin's sync tests beside the Harness,
    whose client's base URL already ends in the API prefix: the path was doubled."""
    from hub.testing import wait_for_run

    harness = Harness(example_target(), tmp_path).start()
    try:
        connection_id = harness.connection["id"]
        harness.seed("notes", 2)
        started = harness.api.post(f"/connections/{connection_id}/sync", json={"entity": "notes"})
        assert started.status_code == 202, started.text
        run = wait_for_run(harness.api, {}, connection_id, started.json()["run"]["id"])
        assert run["status"] == "succeeded" and run["fetched"] >= 1
    finally:
        harness.stop()


def test_a_provider_declaring_pages_it_cannot_size_passes_pagination(tmp_path):
    """Xero's 100 a page, Salesforce's batches: declared, such pages pass (the API slices them)."""
    from broken_plugins import fixed_pages
    from hub.testing.conformance import check_pagination

    harness = Harness(example_target(fixed_pages), tmp_path).start()
    try:
        check_pagination(harness, "notes")
    finally:
        harness.stop()


def test_pages_the_provider_cannot_size_are_counted_as_their_slices(tmp_path):
    """Several provider pages of 7 cut in slices of 3 make more API pages than the records
    over 3: a correct provider declaring fixed_page_size was failed for taking too many."""
    from broken_plugins import fixed_pages
    from hub.testing.conformance import check_pagination

    harness = Harness(example_target(fixed_pages), tmp_path).start()
    try:
        harness.seed("notes", 7)
        check_pagination(harness, "notes")
    finally:
        harness.stop()
