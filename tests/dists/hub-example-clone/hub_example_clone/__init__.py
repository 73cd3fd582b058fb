from hub import hookimpl
from hub.types import EntitySchema, ProviderInfo


@hookimpl
def provider_info():
    return ProviderInfo(name="example", label="Example clone", category="productivity", auth_type="api_key")


@hookimpl
def entity_schemas():
    return [EntitySchema("notes", "Notes")]
