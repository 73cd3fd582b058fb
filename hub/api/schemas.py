"""Request and response bodies of the REST API (also the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

from hub.events import EVENT_TYPES
from hub.models import ConnectionPublic


def _not_text_or_boolean(value: Any) -> Any:
    # JSON's integers include 60.0 (JSON Schema says so); "60" and true are a client's mistake.
    if isinstance(value, (str, bool)):
        raise ValueError("must be a JSON integer")
    return value


#: Minutes between syncs in a request body: a JSON integer (not a string or
#: a boolean), from one minute to a week.
Minutes = Annotated[int, Field(ge=1, le=10080), BeforeValidator(_not_text_or_boolean)]


class ErrorResponse(BaseModel):
    success: Literal[False] = False
    error: str = Field(description="What went wrong, for people.")
    code: str = Field(description="Stable, machine-readable error code.")
    details: Any = None
    fields: list[str] | None = Field(default=None, description=(
        "The fields a refusal is about, where known: the request's, or the provider's as dotted paths into its "
        "records (`email`, `address.city`)."))


class Ok(BaseModel):
    success: Literal[True] = True


class FieldOut(BaseModel):
    name: str
    label: str
    type: str
    required: bool
    readonly: bool
    description: str
    fixed_after_connect: bool = Field(default=False, description=(
        "A connection's config field given when connecting (an OAuth authorize parameter such as Shopify's "
        "`shop`) or set by its authorization, which `PUT /connections/{id}` refuses to change (connect again)."))
    format: str = Field(default="", description="How a `datetime` held as a number is written: `unix` (epoch "
                                                "seconds) or `unix_ms`; empty for ISO 8601 text.")
    create_only: bool = Field(default=False, description="Set when a record is created, never changed after: "
                                                         "an update that changes it is `read_only_field`.")
    fields: list[FieldOut] = Field(default_factory=list, description=(
        "An object's fields, or each item's of an array (a mapping names them `balances.available`, "
        "`variants.0.price`); empty: an open object, any path taken."))


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
    since_on_creation: bool
    listed_for_days: int | None = Field(default=None, description=(
        "The provider lists only the records created in the last that many days (Shopify's orders without "
        "`read_all_orders`): a full sync pass does not take older records it no longer sees for deleted."))
    fixed_page_size: int | None = Field(default=None, description=(
        "The provider's pages hold up to that many records whatever is asked: a listing with a smaller `limit` "
        "is handed out in slices (of a page the hub keeps a while, else fetched again: ask a `limit` at least "
        "this large)."))
    full_pass_hours: float | None = Field(default=None, description=(
        "The provider's modified-since listing misses some changes of this entity (Xero contacts' `IsCustomer`): "
        "a sync pass is a full one when the last full pass is older than this many hours. Null: increments miss "
        "nothing."))
    filters: list[str] | None = Field(default=None, description=(
        "The filters a listing of this entity takes (query parameters besides `cursor`, `limit` and `since`); "
        "another is refused (`unknown_filter`). Null: not declared by the plugin."))
    custom_fields: str | None = Field(default=None, description=(
        "A regular expression matching the (dotted) names of fields an account may add beyond `fields` "
        "(Salesforce's `…__c`): field mappings may name them, and record writes set them. Null: none."))
    readonly: bool
    fields: list[FieldOut]


class RateLimitOut(BaseModel):
    """One of the provider's limits as its plugin declares them, which the hub paces its
    calls by (an operator's overrides, `HUB_<PROVIDER>_REQUESTS_PER_SECOND` and the like, are
    not shown)."""

    calls: int | None = Field(default=None, description="A window: at most this many calls in any `per_seconds`.")
    per_seconds: float | None = None
    requests_per_second: float | None = Field(default=None, description="A token bucket: its rate, and `burst`.")
    burst: int | None = None
    scope: str = Field(description="`connection`: counted per connected account; `app`: every connection's calls.")
    endpoint: str | None = Field(default=None, description="Only calls to URL paths ending so count.")
    name: str | None = None


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
    rate_limits: list[RateLimitOut] = Field(default_factory=list, description=(
        "What the provider allows, as its plugin declares it: a client can plan around a daily quota."))
    max_concurrent_requests: int | None = Field(default=None, description="Calls under way at once per account.")
    lasting_tokens_until: datetime | None = Field(default=None, description=(
        "When the provider stops taking access tokens that never expire (Shopify's public apps: 1 January "
        "2027); the hub exchanges the ones its connections hold for expiring grants before then."))


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
    sync_enabled: StrictBool = False
    sync_frequency_minutes: Minutes = 60


class ConnectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    sync_enabled: StrictBool | None = None
    sync_frequency_minutes: Minutes | None = None
    config: dict[str, Any] | None = None
    credentials: dict[str, str] | None = None


class ConnectionDeleted(Ok):
    revocation: Literal["revoked", "pending", "refused", "none"] = Field(description=(
        "What became of its grant at the provider: `revoked`; `pending` (the provider down or rate limiting, "
        "the plugin not loaded: the hub tries again, for about a week); `refused` (for good: the grant was "
        "invalid already); `none` (nothing to revoke, or another connection shares the account)."))


class AuthorizeResponse(Ok):
    authorization_url: str
    binding: str | None = Field(default=None, description=(
        "With `confirm=true`: keep it in the session of the user who started, and send it with "
        "`POST /oauth/{provider}/confirm` when that user's browser comes back with `status=authorized`."))


class OAuthConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: str = Field(max_length=64, description="the `flow` the callback sent the browser back with")
    binding: str = Field(max_length=200, description="the `binding` the authorize answer gave")


class OAuthCallbackResponse(Ok):
    connection: ConnectionPublic


class OAuthRefusal(BaseModel):
    code: str = Field(description="the refusal's stable code, as the redirect carried it (`tenant_required`)")
    error: str = Field(description="what it says, for people")
    details: Any = Field(default=None, description="what the provider's plugin said of it: Xero's organisations "
                                                   "to choose from (`{\"tenants\": [{\"tenant_id\", \"name\"}]}`)")


class OAuthRefusalResponse(Ok):
    refusal: OAuthRefusal


class LinkTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, max_length=200)
    options: dict[str, Any] = Field(default_factory=dict)
    connection_id: str | None = Field(
        default=None, max_length=64,
        description="Repair this connection (Plaid's update mode: the user logs in to the same item again, after "
                    "ITEM_LOGIN_REQUIRED); then the exchange answers this connection, connected again.")


class LinkTokenResponse(Ok):
    link_token: str
    expiration: str | None = None


class LinkExchangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_token: str = Field(min_length=1, max_length=500)
    link_token: str = Field(min_length=1, max_length=500,
                            description="The token of `POST /link/{provider}/token` the widget ran with.")
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
    #: The provider could not follow the cursor and listed again from its first
    #: record: what earlier pages gave may have been removed since.
    restarted: bool = False
    #: On a last page, where the provider keeps a position to resume from
    #: (Plaid's transactions cursor): pass it as ``cursor`` later to list what
    #: changed since, removals in ``deleted_ids``. ``None`` otherwise.
    watermark: str | None = None


class RecordResponse(Ok):
    record: dict[str, Any]


class DeletedResponse(Ok):
    #: The record as the provider keeps it after its deletion (a canceled
    #: subscription), or ``None`` where the provider removed it.
    record: dict[str, Any] | None = None


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
    plugin_errors: int = Field(default=0, description="Installed plugins that failed to load (GET /plugins says "
                                                      "which and why).")
    time: datetime


# ---------------------------------------------------------------- sync

from hub.sync.mapping import FieldMapping  # noqa: E402

SyncDirection = Literal["pull", "push", "both"]
ConflictPolicy = Literal["provider_wins", "hub_wins", "review"]


class SyncConfigCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str = Field(min_length=1, max_length=64)
    direction: SyncDirection = "pull"
    enabled: StrictBool = True
    schedule_minutes: Minutes | None = Field(
        default=None,
        description="Own schedule of this entity; unset: synced with the connection's `sync_frequency_minutes`.")
    conflict_policy: ConflictPolicy = "provider_wins"
    mappings: list[FieldMapping] = Field(default_factory=list, max_length=500)


class SyncConfigUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    direction: SyncDirection | None = None
    enabled: StrictBool | None = None
    schedule_minutes: Minutes | None = None
    conflict_policy: ConflictPolicy | None = None
    mappings: list[FieldMapping] | None = Field(default=None, max_length=500)


class SyncStateOut(BaseModel):
    in_progress: bool = Field(description="A pass was interrupted (or is running) and resumes from its cursor.")
    pass_mode: str | None
    pass_pages: int
    watermark: datetime | None = Field(description="Records modified since then are fetched by the next incremental pass.")
    has_provider_position: bool = Field(description="The provider gave a position the next pass starts from.")
    last_pass_at: datetime | None
    last_full_pass_at: datetime | None


class SyncConfigOut(BaseModel):
    id: str
    connection_id: str
    entity: str
    direction: SyncDirection
    enabled: bool
    schedule_minutes: int | None
    next_sync_at: datetime | None
    conflict_policy: ConflictPolicy
    mappings: list[FieldMapping]
    state: SyncStateOut | None = None
    created_at: datetime
    updated_at: datetime


class SyncConfigResponse(Ok):
    sync_config: SyncConfigOut


class SyncConfigsResponse(Ok):
    sync_configs: list[SyncConfigOut]


class MappingsReplace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mappings: list[FieldMapping] = Field(max_length=500)


class MappingsResponse(Ok):
    sync_config_id: str
    entity: str
    mappings: list[FieldMapping]


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity: str | None = Field(default=None, max_length=64,
                               description="One entity; unset: every enabled sync config (a pull config for "
                                           "every entity when the connection has none yet).")
    full_refresh: StrictBool = Field(default=False, description="Fetch everything again instead of the changes since "
                                                                "the last pass; records gone at the provider are "
                                                                "marked deleted.")
    direction: SyncDirection | None = Field(default=None, description="Only pull or only push; unset: as configured.")


class SyncRunOut(BaseModel):
    id: str
    connection_id: str
    entity: str | None
    direction: str
    full_refresh: bool
    trigger: str
    status: Literal["queued", "running", "succeeded", "failed"]
    fetched: int
    created: int
    updated: int
    deleted: int
    pushed: int
    failed: int
    conflicts: int
    pages: int
    error: str | None = Field(description=(
        "Why the run failed; on a run that succeeded, what it skipped (a sync config deleted during it), "
        "with no error_code; on a queued run, why it was put back in the queue (interrupted)."))
    error_code: str | None
    queued_at: datetime
    started_at: datetime | None = Field(description=(
        "When the run first started: a run interrupted and resumed keeps it."))
    finished_at: datetime | None
    duration_seconds: float | None = Field(description=(
        "Wall-clock seconds from started_at to finished_at: for a run interrupted (the hub stopped, a worker "
        "died) and resumed, the time until it was resumed counts too."))


class SyncRunResponse(Ok):
    run: SyncRunOut


class SyncLogsResponse(Ok):
    runs: list[SyncRunOut]
    next_cursor: str | None
    has_more: bool


class MappingErrorOut(BaseModel):
    field: str = Field(description="The tenant's field, given the mapping's default instead.")
    source: str = Field(description="The provider field path whose value could not be converted.")
    transform: str
    error: str = Field(description="Why, for people.")


class StoredRecordOut(BaseModel):
    id: str = Field(description="The hub's id of the record.")
    remote_id: str | None = Field(description="The provider's id; null until a record created in the hub is pushed.")
    entity: str
    data: dict[str, Any] = Field(description="The record (mapped to the tenant's fields with `mapped=true`), "
                                             "including changes not pushed yet.")
    mapping_errors: list[MappingErrorOut] | None = Field(
        default=None, description="With `mapped=true`: the values that could not be converted (their fields hold "
                                  "the mapping's default; the raw record keeps the provider's value). Null when raw.")
    deleted: bool
    deleted_at: datetime | None
    pending: bool = Field(description="The hub has a change the provider does not have yet.")
    pending_op: Literal["create", "update", "delete"] | None = Field(
        default=None, description="What the next push does with that change: create the record at the provider, "
                                  "update it, or delete it (a record waiting to be deleted cannot be changed).")
    push_status: str | None
    push_error: str | None
    push_error_code: str | None = Field(default=None, description=(
        "The stable code of the provider's refusal (`validation_error`, `not_found`, `rate_limited`...), with "
        "`push_error`."))
    push_error_details: Any = Field(default=None, description=(
        "What the provider said about it, in its fields (Shopify: `{\"fields\": {\"title\": [...]}}`; Stripe: "
        "`{\"param\": \"balance\"}`), with `push_error`."))
    push_error_fields: list[str] | None = Field(default=None, description=(
        "The fields the provider refused, where it said which: the provider's field paths in a raw record; in "
        "a mapped one (`?mapped=true`) the tenant's fields mapped from them (a refused field no mapping reads "
        "is left out), with `push_error`."))
    remote_updated_at: datetime | None
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    updated_at: datetime


class StoredRecordsResponse(Ok):
    records: list[StoredRecordOut]
    mapped: bool
    next_cursor: str | None
    has_more: bool


class StoredRecordDeleted(Ok):
    run_id: str | None = Field(default=None, description="The push run queued for the deletion, if any.")


class StoredRecordResponse(Ok):
    record: StoredRecordOut
    run_id: str | None = Field(default=None, description="The push run queued for this change, if any.")


class StoredRecordDiscarded(Ok):
    record: StoredRecordOut | None = Field(description="The provider's version again; null when the record was "
                                                       "never created there and is gone.")


class StoredRecordWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any]
    mapped: StrictBool = Field(default=True, description="`data` uses the tenant's (mapped) field names.")
    sync: StrictBool = Field(default=True, description="Queue a push to the provider now.")


class SyncConflictOut(BaseModel):
    id: str
    record_id: str
    remote_id: str | None
    entity: str
    policy: str
    status: Literal["open", "resolved"]
    resolution: str | None
    local_data: dict[str, Any] | None = Field(description="The hub's change: `op` and `data` (provider fields; "
                                                          "`?mapped=true`: the whole record in the tenant's).")
    remote_data: dict[str, Any] | None = Field(description="The provider's version; null when it deleted the record.")
    resolution_data: dict[str, Any] | None = Field(default=None, description=(
        "What a `custom` resolution pushed: its change (provider fields; `?mapped=true`: the whole record in the "
        "tenant's); null otherwise."))
    created_at: datetime
    resolved_at: datetime | None


class SyncConflictsResponse(Ok):
    conflicts: list[SyncConflictOut]
    next_cursor: str | None = None
    has_more: bool = False


class ConflictResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Literal["provider", "hub", "custom"] = Field(
        description="`provider`: keep the provider's version; `hub`: push the hub's change; "
                    "`custom`: push `data` instead.")
    data: dict[str, Any] | None = Field(default=None, description="The record to push, for `custom` only.")
    mapped: StrictBool = True
    sync: StrictBool = True

    @model_validator(mode="after")
    def _data_only_for_custom(self) -> ConflictResolve:
        # Accepted and dropped, it would look pushed.
        if self.data is not None and self.resolution != "custom":
            raise ValueError(f"data is only taken by a custom resolution, not {self.resolution!r}")
        return self


class SyncConflictResponse(Ok):
    conflict: SyncConflictOut
    run_id: str | None = None


# ---------------------------------------------------------------- webhook events

WebhookEventStatus = Literal["pending", "failed", "processed", "ignored"]


class WebhookEventOut(BaseModel):
    id: str
    connection_id: str | None
    provider: str
    dedup_key: str = Field(description="The provider's event id: a delivery is stored once per connection. An id "
                                       "longer than 255 characters is stored as its digest, `sha256:<hex>`.")
    type: str
    entity: str | None
    action: str
    record_id: str | None
    status: WebhookEventStatus = Field(
        description="`pending`: to apply, or waiting for the sync of its entity; `failed`: gave up after its "
                    "attempts (retry it); `processed`: applied; `ignored`: nothing to apply.")
    attempts: int = Field(description="Tries so far; a sync run it waited for that failed is one, waiting is none.")
    error: str | None = Field(description="Why the last try failed.")
    received_at: datetime
    occurred_at: datetime | None = Field(description="When the provider says it happened.")
    processed_at: datetime | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="When a pending event is tried (or looked at) again.")


class WebhookEventsResponse(Ok):
    events: list[WebhookEventOut]
    next_cursor: str | None
    has_more: bool


class WebhookEventResponse(Ok):
    event: WebhookEventOut


# -- events for the tenant's app (outbound webhooks)


class EventTypeOut(BaseModel):
    type: str
    description: str
    subscribable: bool = Field(description=(
        "Whether an endpoint's `events` may list it (`ping` is sent to the endpoint pinged, whatever it takes)."))


class EventTypesResponse(Ok):
    event_types: list[EventTypeOut]


_EVENTS_FIELD = Field(default=None, max_length=50, description=(
    "The event types sent to the endpoint (GET /event-types); empty or left out: every type."))
#: An event type's name. The document lists them (for generated clients); the
#: service refuses another with its own code, ``unknown_event_type``.
EventTypeName = Annotated[str, Field(max_length=64, json_schema_extra={
    "enum": [name for name in EVENT_TYPES if name != "ping"]})]  # (a ping goes to the endpoint pinged, whatever it takes)
#: What an endpoint's URL is, for the document: http(s), a host (a name, IDNs written as
#: xn--; an IPv4 address; a bracketed IPv6 one), a port that is one, no credentials
#: (user:password@), no #fragment. The service checks it further and says what is wrong (``invalid_url``).
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join((
    f"({_H16}:){{7}}{_H16}", f"({_H16}:){{1,7}}:", f"({_H16}:){{1,6}}:{_H16}", f"({_H16}:){{1,5}}(:{_H16}){{1,2}}",
    f"({_H16}:){{1,4}}(:{_H16}){{1,3}}", f"({_H16}:){{1,3}}(:{_H16}){{1,4}}", f"({_H16}:){{1,2}}(:{_H16}){{1,5}}",
    f"{_H16}:(:{_H16}){{1,6}}", f":((:{_H16}){{1,7}}|:)"))
_IPV4 = r"((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_ENDPOINT_URL: dict[str, Any] = {"pattern": (
    rf"^https?://(\[({_IPV6})\]|{_IPV4}|([A-Za-z0-9_~-]+\.)*[A-Za-z_~][A-Za-z0-9_~-]*)"
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?([/?][!-\"$-~]*)?$")}


class EventEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, json_schema_extra=_ENDPOINT_URL, description=(
        "Where events are POSTed: an http:// or https:// URL of the app, without credentials (the app checks "
        "each event's `Hub-Signature` instead)."))
    events: list[EventTypeName] | None = _EVENTS_FIELD
    description: str | None = Field(default=None, max_length=2000)
    enabled: StrictBool = True


class EventEndpointUpdate(BaseModel):
    """Fields left out keep their value; ``url`` and ``enabled`` cannot be null."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default=None, min_length=1, max_length=2000, json_schema_extra=_ENDPOINT_URL)  # type: ignore[assignment]
    events: list[EventTypeName] | None = _EVENTS_FIELD
    description: str | None = Field(default=None, max_length=2000)
    enabled: StrictBool = Field(default=None)  # type: ignore[assignment]


class EventDeliveryCounts(BaseModel):
    pending: int
    delivered: int
    failed: int


class EventEndpointOut(BaseModel):
    id: str
    url: str
    events: list[str] = Field(description="The types sent; empty: every type.")
    description: str | None
    enabled: bool
    previous_secret_until: datetime | None = Field(description=(
        "After a rotation: until when the previous secret still signs beside the new one (each event then "
        "carries two `v1`); null once that has passed, or with no rotation. Only the one previous secret is kept: "
        "a second rotation drops the first's."))
    created_at: datetime
    updated_at: datetime
    deliveries: EventDeliveryCounts = Field(description=(
        "Its deliveries kept (HUB_EVENT_RETENTION_DAYS), by status: `failed` ones gave up after about a day of "
        "attempts and can be sent again (POST .../deliveries/{id}/retry)."))


class EventEndpointResponse(Ok):
    endpoint: EventEndpointOut


class EventEndpointWithSecret(Ok):
    endpoint: EventEndpointOut
    secret: str = Field(description=(
        "The endpoint's signing secret, shown this once: the app checks each event's `Hub-Signature` with it."))


class EventEndpointsResponse(Ok):
    endpoints: list[EventEndpointOut]


class EventDeliveryOut(BaseModel):
    id: str
    event_id: str
    type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None = Field(description="When it is tried next (pending ones).")
    last_attempt_at: datetime | None
    response_status: int | None = Field(description="The endpoint's HTTP status at the last attempt; null: no answer.")
    error: str | None = Field(description="Why the last attempt failed.")
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any] = Field(description="The event, as sent.")


class EventDeliveryResponse(Ok):
    delivery: EventDeliveryOut


class EventDeliveriesResponse(Ok):
    deliveries: list[EventDeliveryOut]
    next_cursor: str | None
    has_more: bool


# -- the events themselves, as the app receives them (the document's ``webhooks``)


class _ConnectionEventData(BaseModel):
    connection_id: str
    provider: str


class SyncEventData(_ConnectionEventData):
    run: SyncRunOut


class ConnectionEventData(_ConnectionEventData):
    name: str
    status: str


class StatusChangedData(_ConnectionEventData):
    status: Literal["connected", "error", "expired"]
    previous_status: str
    last_error: str | None


class RecordsChangedData(_ConnectionEventData):
    entity: str
    sync_config_id: str | None = Field(description="The entity's sync config (null: a webhook's record of an "
                                                    "entity with none)")
    source: Literal["sync", "webhook"]
    run_id: str | None = Field(default=None, description="The run that stored them (source sync).")
    webhook_event_id: str | None = Field(default=None, description="The webhook event (source webhook).")
    created: list[str] = Field(description="Provider ids of records new to the hub (or deleted before and back).")
    updated: list[str] = Field(description="Provider ids of records whose stored version changed.")
    deleted: list[str] = Field(description="Provider ids of records marked deleted.")


class ConflictOpenedData(_ConnectionEventData):
    entity: str
    sync_config_id: str | None
    conflict_id: str
    record_id: str
    remote_id: str | None
    provider_deleted: bool


class RecordsErasedData(_ConnectionEventData):
    entity: str | None = Field(description="The erased record's entity; null: every record of the connection.")
    remote_id: str | None = Field(description="The erased record's provider id; null: every record.")


class PingData(BaseModel):
    endpoint_id: str


#: The ``data`` of each event type.
EVENT_DATA: dict[str, type[BaseModel]] = {
    "sync.succeeded": SyncEventData, "sync.failed": SyncEventData,
    "connection.created": ConnectionEventData, "connection.deleted": ConnectionEventData,
    "connection.status_changed": StatusChangedData, "records.changed": RecordsChangedData,
    "records.erased": RecordsErasedData, "conflict.opened": ConflictOpenedData, "ping": PingData,
}
