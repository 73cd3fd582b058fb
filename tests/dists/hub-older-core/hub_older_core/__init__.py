"""A provider that would load, were it made for this hub-core."""

from hub import hookimpl
from hub.types import ProviderInfo


@hookimpl
def provider_info():
    return ProviderInfo(name="older", label="Older", category="test", auth_type="api_key")


@hookimpl
def entity_schemas():
    return []
