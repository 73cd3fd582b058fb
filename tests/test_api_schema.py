"""Schemathesis over the whole OpenAPI schema: no 5xx and no response that
breaks its documented schema, with a bounded number of examples."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from hub.api.main import create_app
from hub.config import Settings
from hub.plugins import PluginRegistry
from hub.services.orgs import create_organization


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    import hub_example

    registry = PluginRegistry()
    registry.register(hub_example, "example")
    data = tmp_path_factory.mktemp("schemathesis")
    app = create_app(Settings(data_dir=data, database_url=f"sqlite:///{data / 'hub.db'}", secret_key="k",
                              http_retry_attempts=1), registry)
    hub = app.state.hub
    hub.migrate()
    with hub.session() as session:
        _org, key = create_organization(session, "fuzz")
    app.state.fuzz_key = key
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Text with a NUL character is refused (400 invalid_json: PostgreSQL cannot store it, so no
    # database takes it), which JSON Schema cannot say; tests/test_api_errors.py checks that.
    schema.config.generation.update(allow_x00=False)
    return schema


def test_api_conforms_to_its_schema(api_schema):
    app = api_schema.app
    auth = {"Authorization": f"Bearer {app.state.fuzz_key}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            sent = {k.lower() for k in (case.headers or {})}
            response = case.call(headers=None if "authorization" in sent else auth)
            assert response.status_code < 500, f"{operation.label}: {response.status_code} {response.text}"
            case.validate_response(response)

        check()
