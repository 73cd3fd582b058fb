from hub import hookimpl
from hub.types import EntitySchema, ProviderInfo


@hookimpl
def provider_info():
    return ProviderInfo(name="rejected", label="Rejected", category="test", auth_type="api_key")


@hookimpl
def entity_schemas():
    return [EntitySchema("things", "Things")]


@hookimpl
def list_records(ctx, entity, page_number):
    return None
