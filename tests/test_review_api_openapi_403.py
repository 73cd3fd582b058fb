"""The API answers 403 (README: ``provider_permission_denied`` on any call
that reaches the provider, ``binding_mismatch`` on ``POST /oauth/{provider}/confirm``),
but the OpenAPI document lists no 403 for any operation: ``ERROR_RESPONSES``
in hub/api/main.py has 400, 401, 404, 405, 409, 413, 415, 422, 424, 429, 500,
502 and 503 only. A generated client treats the 403 as undocumented (many
raise a generic "unexpected status" error instead of decoding the envelope)."""

from __future__ import annotations

from hub.types import EntitySchema, PermissionDenied, ProviderInfo

from tests.conftest import API, connected_plugin, module_plugin


def test_a_403_the_api_answers_is_in_the_openapi_document(settings):
    def list_records(ctx, entity, cursor, page_size):
        raise PermissionDenied("this restricted key may not read things")

    info = ProviderInfo(name="locked", label="Locked", category="test", auth_type="api_key", urls={})
    plugin = module_plugin("locked_plugin", info, [EntitySchema("things", "Things")], list_records=list_records)
    with connected_plugin(settings, plugin, "locked") as (client, auth, connection_id):
        response = client.get(f"{API}/connections/{connection_id}/entities/things/records", headers=auth)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "provider_permission_denied"
        document = client.get("/openapi.json").json()
        paths = document["paths"]
        listed = paths[f"{API}/connections/{{connection_id}}/entities/{{entity}}/records"]["get"]["responses"]
        confirm = paths[f"{API}/oauth/{{provider}}/confirm"]["post"]["responses"]
        assert "403" in listed, f"list_records answers 403 but documents only {sorted(listed)}"
        assert "403" in confirm, f"oauth_confirm answers 403 binding_mismatch but documents only {sorted(confirm)}"
