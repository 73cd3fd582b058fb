"""Discovery and registration: broken plugins are recorded, the rest serve."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from hub.plugins import DuplicateProviderError, PluginRegistry
from tests.conftest import make_org, module_plugin
from hub.types import EntityField, EntitySchema, ProviderInfo, RateLimit

DISTS = Path(__file__).parent / "dists"


def load_dist_module(dist: str, module: str) -> types.ModuleType:
    sys.path.insert(0, str(DISTS / dist))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.pop(0)


def test_rejected_plugin_is_recorded_and_others_serve(example_registry, settings):
    rejected = load_dist_module("hub-rejected", "hub_rejected")
    record = example_registry.register(rejected, "rejected")
    assert record.error and "page_number" in record.error
    assert "rejected" not in example_registry.providers
    assert "example" in example_registry.providers
    with TestClient(create_app(settings, example_registry)) as client:
        assert client.get("/api/v1/integrations/plugins").status_code == 401  # load errors name files
        auth = make_org(client.app, "plugins")
        auth.pop("org_id")
        plugins = client.get("/api/v1/integrations/plugins", headers=auth).json()["plugins"]
        by_name = {p["name"]: p for p in plugins}
        assert by_name["rejected"]["loaded"] is False
        assert "page_number" in by_name["rejected"]["error"]
        assert by_name["example"]["loaded"] is True
        names = [p["name"] for p in client.get("/api/v1/integrations/providers").json()["providers"]]
        assert names == ["example"]
        # Asked for by name (a connection of it, say), it is said to have failed, not to be missing.
        missing = client.get("/api/v1/integrations/providers/rejected").json()
        assert missing["code"] == "unknown_provider" and "rejected plugin failed to load" in missing["error"]
        assert "page_number" in missing["error"]
        health = client.get("/api/v1/integrations/healthz").json()
        assert (health["status"], health["providers"], health["plugin_errors"]) == ("ok", 1, 1)
        # Also where load balancers probe by default.
        assert client.get("/healthz").json()["plugin_errors"] == 1
        absent = client.get("/api/v1/integrations/providers/nowhere").json()["error"]
        assert absent == "no provider named 'nowhere' is installed (or HUB_PLUGINS leaves it out)"


def test_two_plugins_claiming_one_provider_id_is_a_startup_error(example_registry):
    clone = load_dist_module("hub-example-clone", "hub_example_clone")
    with pytest.raises(DuplicateProviderError) as excinfo:
        example_registry.register(clone, "example", distribution="hub-example-clone")
    assert "hub-example-clone" in str(excinfo.value) and "hub_example" in str(excinfo.value)


def test_unknown_hook_and_missing_required_hooks_are_rejected():
    registry = PluginRegistry()
    info = ProviderInfo(name="typo", label="Typo", category="x", auth_type="api_key")
    typo = module_plugin("typo_plugin", info, [], list_record=lambda ctx: None)  # misspelt hook name
    record = registry.register(typo, "typo")
    assert "unknown hook(s) list_record" in record.error

    record = registry.register(module_plugin("incomplete_plugin", info), "typo")
    assert "entity_schemas" in record.error
    assert registry.providers == {}


def test_entry_point_name_must_match_provider_name():
    registry = PluginRegistry()
    info = ProviderInfo(name="other", label="Other", category="x", auth_type="api_key")
    record = registry.register(module_plugin("mismatch", info, [EntitySchema("a", "A")]), "mismatch")
    assert "differs from provider_info name 'other'" in record.error


def test_dispatch_reaches_exactly_one_provider(example_registry):
    import asyncio

    calls = []

    def get_record(ctx, entity, record_id):
        calls.append(record_id)
        return {"id": record_id, "from": "other"}

    info = ProviderInfo(name="other", label="Other", category="x", auth_type="api_key")
    example_registry.register(module_plugin("other_provider", info, [EntitySchema("a", "A")],
                                            get_record=get_record), "other")
    result = asyncio.run(example_registry.get("other").call("get_record", ctx=None, entity="a", record_id="1"))
    assert result == {"id": "1", "from": "other"}
    assert calls == ["1"]
    # example implements get_record too, but only its own implementation may run for it
    example_info = asyncio.run(example_registry.get("example").call("provider_info"))
    assert example_info.name == "example"
    assert example_registry.get("other").implements("get_record")
    assert not example_registry.get("other").implements("list_records")


def test_hub_plugins_env_limits_loading(monkeypatch):
    from click.testing import CliRunner

    from hub import cli

    monkeypatch.setenv("HUB_PLUGINS", "")
    assert PluginRegistry.from_environment().providers == {}
    # `hub plugins` says they are not loaded, not that none is installed.
    shown = CliRunner().invoke(cli.main, ["plugins"]).output
    assert "HUB_PLUGINS" in shown and "installed (entry point" not in shown, shown


def test_hub_plugins_naming_an_uninstalled_plugin_is_reported(monkeypatch):
    monkeypatch.setenv("HUB_PLUGINS", "nosuchprovider")
    registry = PluginRegistry.from_environment()
    assert registry.providers == {}
    [record] = registry.records
    assert record.name == "nosuchprovider" and "no installed plugin" in record.error


def test_a_hook_failing_at_load_is_named_with_where_it_failed():
    def provider_info():
        raise KeyError("label")

    registry = PluginRegistry()
    record = registry.register(module_plugin("infoexc", None, [], provider_info=provider_info), "infoexc")
    assert record.error.startswith("KeyError: 'label' (in provider_info, tests/test_plugin_loading.py:")


def test_broken_declarations_are_refused_at_load_with_every_problem_named():
    info = ProviderInfo(name="sloppy", label="Sloppy", category="crm", auth_type="apikey",
                        urls={"api": "api.sloppy.invalid/v1"}, rate_limit=RateLimit(requests_per_second=0),
                        app_rate_limit=RateLimit(requests_per_second=1, scope="app"),
                        endpoint_rate_limits={"get": RateLimit(requests_per_second=1)},
                        rate_limits=(RateLimit.per(60, 60, name="minute", scope="tenant"),
                                     RateLimit.per(0, 86400, name="minute"), RateLimit.per(10, 0),
                                     RateLimit.per(10, 60, endpoint="balance/get")),
                        unmetered_urls=("tenants",))
    schemas = [
        EntitySchema("contacts", "Contacts", (EntityField("email", fields=(EntityField("domain"),)),
                                              EntityField("kind", type="emial"),
                                              EntityField("address", type="object", fields=(
                                                  EntityField("city"), EntityField("city"),
                                                  EntityField("geo", type="object", fields=(
                                                      EntityField("lat", type="float"),)))))),
        EntitySchema("contacts", "Contacts again"),
        EntitySchema("deals", "Deals", full_pass_hours=0),
        EntitySchema("leads", "Leads", full_pass_hours=1e12),
    ]
    registry = PluginRegistry()
    record = registry.register(module_plugin("sloppy_plugin", info, schemas), "sloppy")
    assert "sloppy" not in registry.providers
    for problem in ("auth_type 'apikey' is not one of", "urls['api'] = 'api.sloppy.invalid/v1' is not an absolute",
                    "entity 'contacts' is declared twice", "its id_field 'id' is not among its fields",
                    "field 'kind' has type 'emial'", "field 'email' is string but lists sub-fields",
                    "field 'address' lists the sub-fields ['city'] twice",
                    "field 'address.geo.lat' has type 'float'",
                    "rate_limit requests_per_second 0 is not a number above 0",
                    "rate_limits[0] scope 'tenant' is not", "rate_limits[1] burst 0 is not a whole number",
                    "rate_limits name ['minute'] more than once",
                    "app_rate_limit sets scope, endpoint or name, which only limits in rate_limits have",
                    "endpoint_rate_limits['get'] must start with '/'",
                    "rate_limits[2] requests_per_second 0.0 is not a number above 0 (a window",
                    "rate_limits[3] endpoint 'balance/get' must start with '/'",
                    "unmetered_urls names 'tenants', which is not one of urls",
                    "its full_pass_hours 0 must be a number of hours above 0",
                    "its full_pass_hours 1000000000000.0 must be a number of hours above 0, ten years at most"):
        assert problem in record.error, record.error


def test_hub_plugins_exits_1_when_a_plugin_did_not_load(monkeypatch):
    """For scripts: it listed a FAILED plugin, or a HUB_PLUGINS naming nothing installed, and exited 0."""
    from click.testing import CliRunner

    from hub import cli

    # (Bundled, so installed wherever the suite runs; the example provider is not everywhere.)
    monkeypatch.setenv("HUB_PLUGINS", "stripe")
    assert CliRunner().invoke(cli.main, ["plugins"]).exit_code == 0
    monkeypatch.setenv("HUB_PLUGINS", "stripe,nosuchprovider")
    for args in (["plugins"], ["plugins", "--json"]):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 1 and "nosuchprovider" in result.output, result.output
