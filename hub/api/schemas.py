"""Request and response bodies of the REST API (also the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hub.models import ConnectionPublic


class ErrorResponse(BaseModel):
    success: Literal[False] = False
    error: str = Field(description="What went wrong, for people.")
    code: str = Field(description="Stable, machine-readable error code.")
    details: Any = None


class Ok(BaseModel):
    success: Literal[True] = True


class FieldOut(BaseModel):
    name: str
    label: str
    type: str
    required: bool
    readonly: bool
    description: str


class EntityOut(BaseModel):
    name: str
    label: str
    description: str
    id_field: str
    updated_field: str | None
    supports_create: bool
    supports_update: bool
    supports_delete: bool
    supports_since: bool
    readonly: bool
    fields: list[FieldOut]


class ProviderOut(BaseModel):
    name: str
    label: str
    category: str
    description: str
    auth_type: str
    logo: str
    entities: list[str]
    actions: list[str]
    supports_webhooks: bool
    config_fields: list[FieldOut]
    credential_fields: list[FieldOut]


class ProvidersResponse(Ok):
    providers: list[ProviderOut]


class ProviderResponse(Ok):
    provider: ProviderOut


class EntitiesResponse(Ok):
    entities: list[EntityOut]


class EntityResponse(Ok):
    entity: EntityOut


class ConnectionsResponse(Ok):
    connections: list[ConnectionPublic]


class ConnectionResponse(Ok):
    connection: ConnectionPublic


class ConnectionTestResponse(Ok):
    connection: ConnectionPublic
    details: dict[str, Any]


class ConnectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    credentials: dict[str, str] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    sync_enabled: bool = False
    sync_frequency_minutes: int = Field(default=60, ge=1, le=10080)


class ConnectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    sync_enabled: bool | None = None
    sync_frequency_minutes: int | None = Field(default=None, ge=1, le=10080)
    config: dict[str, Any] | None = None
    credentials: dict[str, str] | None = None


class AuthorizeResponse(Ok):
    authorization_url: str


class OAuthCallbackResponse(Ok):
    connection: ConnectionPublic


class LinkTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, max_length=200)
    options: dict[str, Any] = Field(default_factory=dict)


class LinkTokenResponse(Ok):
    link_token: str
    expiration: str | None = None


class LinkExchangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_token: str = Field(min_length=1, max_length=500)
    metadata: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, max_length=200)


class RecordWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any]
    idempotency_key: str | None = Field(default=None, max_length=200)


class RecordsResponse(Ok):
    records: list[dict[str, Any]]
    next_cursor: str | None
    has_more: bool
    deleted_ids: list[str] = []


class RecordResponse(Ok):
    record: dict[str, Any]


class ActionInfo(BaseModel):
    name: str
    label: str
    description: str
    readonly: bool
    params: list[FieldOut]


class ActionsResponse(Ok):
    actions: list[ActionInfo]


class ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict)


class ActionResponse(Ok):
    result: Any


class WebhookResponse(Ok):
    received: int
    duplicates: int
    duplicate: bool


class WebhookRegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[str] = Field(default_factory=list, max_length=100)


class WebhookRegisterResponse(Ok):
    subscription_id: str | None
    url: str


class PluginOut(BaseModel):
    name: str
    module: str
    distribution: str | None
    version: str | None
    loaded: bool
    error: str | None
    hooks: list[str] = []
    entities: list[str] = []


class PluginsResponse(Ok):
    plugins: list[PluginOut]


class HealthResponse(Ok):
    status: str
    database: str
    providers: int
    time: datetime
