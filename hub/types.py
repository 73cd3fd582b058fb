"""What provider plugins and the core exchange.

Plugins build these objects and raise these errors; the core turns them into
storage rows and API responses. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

AuthType = Literal["oauth2", "api_key", "link", "none"]
FieldType = Literal[
    "string", "integer", "number", "boolean", "datetime", "date", "object", "array", "money"
]
ConnectionStatus = Literal["connected", "error", "expired", "disconnected"]


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class RateLimit:
    """How fast the core may call a provider.

    A token bucket by default: ``burst`` requests at once, refilled at
    ``requests_per_second``. With ``window_seconds``, a count instead: at
    most ``burst`` requests in any ``window_seconds`` (a provider's "60 per
    minute", "5,000 per day"; a bucket of the same figures would let twice as
    many through in a window). :meth:`per` builds one.

    ``usage_header`` names a response header of the form ``used/limit``
    (Shopify's ``X-Shopify-Shop-Api-Call-Limit``); ``remaining_header`` names
    a header counting requests left (HubSpot's, Xero's ``X-MinLimit-Remaining``).
    When present the core re-synchronises its count with what the provider
    reports, so several hub processes sharing one quota back off together.

    Further limits (``ProviderInfo.rate_limits``) say what they count:
    ``endpoint`` (the end of the URL path, ``"/accounts/balance/get"``: only
    calls to it count) and ``scope``: ``"connection"`` counts one
    connection's calls (one account's, when connections share an account),
    ``"app"`` the calls of every connection of the provider in this process
    (Xero's 10,000 per minute per app, Plaid's per-client limits). ``name``
    is what ``describe_error`` calls the limit a refusal names
    (``RateLimited(limit="day")``): that limit is then the one paused or
    refused.
    """

    requests_per_second: float
    burst: int = 1
    usage_header: str | None = None
    remaining_header: str | None = None
    window_seconds: float = 0.0
    scope: Literal["connection", "app"] = "connection"
    endpoint: str = ""
    name: str = ""

    @classmethod
    def per(cls, requests: int, seconds: float, **kwargs: Any) -> RateLimit:
        """At most ``requests`` in any ``seconds``: ``RateLimit.per(60, 60)``."""
        # (seconds of 0 or less: a declaration mistake the hub names when it loads the plugin)
        return cls(requests_per_second=requests / seconds if seconds > 0 else 0.0, burst=requests,
                   window_seconds=seconds, **kwargs)


class PartialRecord(dict):
    """A write's answer standing for the record it made when the core could
    not read the record whole after it (``EntitySchema.read_after_write``):
    part of the record only. Sync stores it as not verified, so that the
    next version read from the provider is taken as the record, not as a
    change made there (a conflict)."""


@dataclass(frozen=True)
class EntityField:
    """One field of an entity, as the provider names it.

    ``format`` says how the provider writes a ``datetime`` field held as a
    number: ``"unix"`` (epoch seconds, Stripe's) or ``"unix_ms"`` (epoch
    milliseconds); empty for ISO 8601 text. Mappings write times back so.
    ``create_only``: set when a record is created, never changed after (a
    Shopify order's ``line_items``); the core refuses an update that changes
    it (``read_only_field``) before calling the plugin, and leaves it out of
    one that writes it back unchanged.
    ``fields``: for an ``object`` field, the fields inside it (Plaid's
    ``balances``: ``available``, ``current``...); for an ``array`` field, the
    fields of each of its items (Shopify's ``variants``). Declared, they are
    what a mapping's dotted path may name (``balances.available``,
    ``variants.0.price``: another name is ``unknown_field`` when the mapping
    is saved) and what a field picker shows; left empty, the object is open
    (Stripe's ``metadata``) and any path into it is taken.
    """

    name: str
    label: str = ""
    type: FieldType = "string"
    required: bool = False
    readonly: bool = False
    description: str = ""
    format: str = ""
    create_only: bool = False
    fields: tuple[EntityField, ...] = ()

    def field(self, name: str) -> EntityField | None:
        """The declared sub-field ``name`` (see ``fields``)."""
        return next((f for f in self.fields if f.name == name), None)

    def public(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fields"}
        data["label"] = self.label or self.name.replace("_", " ").capitalize()
        data["fields"] = [f.public() for f in self.fields]
        return data


@dataclass(frozen=True)
class EntitySchema:
    """An entity (a kind of record) a provider exposes.

    ``id_field`` names the field holding the provider's record id and
    ``updated_field`` the field holding its last-modified time (used for
    incremental sync when the provider filters by modification time), a
    dotted path where the provider keeps it inside an object (QuickBooks'
    ``MetaData.LastUpdatedTime``).
    The ``supports_*`` flags say which writes the provider allows; the core
    refuses the others with a ``ReadOnly`` error before calling the plugin.
    ``since_on_creation``: ``list_records``'s ``since`` filters on creation
    time (Stripe's ``created[gte]``), so sync never pulls increments by it (a
    change to an older record would be missed): its passes are full ones.
    ``listed_for_days``: the provider lists only the records created in the
    last that many days (Shopify's orders without ``read_all_orders``: 60);
    ``created_field`` holds a record's creation time (ISO 8601). A full pass
    then takes a record it did not see for deleted only if it was created
    within the window (two days' margin): older ones aged out of the listing.
    ``fixed_page_size``: the provider's pages hold up to that many records
    whatever ``page_size`` asks (Xero's 100, Salesforce's query batches): the
    records API hands a page larger than the client's ``limit`` out in slices
    (of the page it keeps a while, else calling the hook again as it first
    did), and the conformance
    suite takes such pages. Sync takes whole pages either way.
    ``filters``: the names of the filters ``list_records`` takes for this
    entity (the provider's own query parameters: Shopify's ``vendor``); the
    core refuses a list asked with another (``unknown_filter``) before
    calling the plugin, rather than a provider ignoring it (Shopify does)
    answering an unfiltered list as if filtered. ``None``: not declared, the
    plugin checks them. The catalog shows them.
    ``custom_fields``: a regular expression matching (whole) the dotted paths
    of the fields an account may add to the entity beyond those declared:
    Salesforce's custom fields (``[A-Za-z][A-Za-z0-9_]*__c``), HubSpot's own
    properties (``properties\\.[a-z][a-z0-9_]*``). Sync's field mappings may
    name them, and stored records' writes set them; their type is unknown
    until a record holds one, so a mapping's cast of one is checked on each
    record, not when the mapping is saved. ``None``: only declared fields.
    ``full_pass_hours``: the provider's modified-since listing misses some
    changes (Xero: a contact's ``IsCustomer``, ``IsSupplier`` and
    ``Balances`` change without moving ``UpdatedDateUTC``), so sync makes a
    pass a full one when the last full pass is older than that many hours;
    passes in between stay incremental. ``None``: increments miss nothing.
    ``read_after_write``: the provider answers a create or an update with
    part of the record only (Salesforce: its id; HubSpot: the properties
    written), so the core reads it whole (``get_record``) after the write,
    for what sync stores and the records API answers. The plugin's
    ``create_record``/``update_record`` then return what they have (the
    answer, with the record's id at ``id_field``). If that read fails (a
    429, an outage), the write's answer stands rather than an error: the
    write was made, and an error would have it sent again (a second record
    at a provider without idempotency keys); the next pull reads it whole.
    """

    name: str
    label: str
    fields: tuple[EntityField, ...] = ()
    description: str = ""
    id_field: str = "id"
    updated_field: str | None = None
    supports_create: bool = False
    supports_update: bool = False
    supports_delete: bool = False
    supports_since: bool = False
    since_on_creation: bool = False
    listed_for_days: int | None = None
    created_field: str | None = None
    fixed_page_size: int | None = None
    filters: tuple[str, ...] | None = None
    custom_fields: str | None = None
    read_after_write: bool = False
    full_pass_hours: float | None = None

    @property
    def readonly(self) -> bool:
        return not (self.supports_create or self.supports_update or self.supports_delete)

    def field(self, name: str) -> EntityField | None:
        return next((f for f in self.fields if f.name == name), None)

    def custom(self, path: str) -> bool:
        """Whether ``path`` names a field an account may add (``custom_fields``)."""
        return bool(self.custom_fields) and re.fullmatch(self.custom_fields, path) is not None

    def updated_value(self, record: Any) -> Any:
        """The value at ``updated_field`` (a dotted path) in a record, or None."""
        if not self.updated_field:
            return None
        value = record
        for part in self.updated_field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "id_field": self.id_field,
            "updated_field": self.updated_field,
            "supports_create": self.supports_create,
            "supports_update": self.supports_update,
            "supports_delete": self.supports_delete,
            "supports_since": self.supports_since,
            "since_on_creation": self.since_on_creation,
            "listed_for_days": self.listed_for_days,
            "fixed_page_size": self.fixed_page_size,
            "full_pass_hours": self.full_pass_hours,
            "filters": list(self.filters) if self.filters is not None else None,
            "custom_fields": self.custom_fields,
            "readonly": self.readonly,
            "fields": [f.public() for f in self.fields],
        }


@dataclass(frozen=True)
class ProviderInfo:
    """What a provider is and how the core should talk to it.

    ``urls`` maps names to URL templates formatted with the connection's config,
    its declared ``config_fields`` only (for example
    ``{"api": "https://{shop}/admin/api/2026-10"}``); the operator
    can point every URL at another origin (a fake server, a proxy) with the
    provider setting ``origin``. ``webhook_tolerance_seconds`` bounds how old a
    signed delivery may be. ``supports_pkce`` makes the core send a PKCE
    challenge in the OAuth flow. ``endpoint_rate_limits`` adds limits of single
    endpoints (keyed by the end of the URL path, e.g. Plaid's
    ``"/accounts/balance/get"``: 5 per minute per item) on top of
    ``rate_limit``; ``app_rate_limit`` limits calls made before a connection
    exists (code exchange, Link tokens), shared by all tenants.
    ``rate_limits`` adds the provider's other limits; a call waits for every
    one that counts it: windows (Xero's 60 per minute and 5,000 per day per
    tenant), limits of the whole app (``scope="app"``), of an endpoint; see
    :class:`RateLimit`. ``max_concurrent_requests`` bounds the calls under
    way at once for one connection's account (Xero's 5, QuickBooks' 10; 0:
    no bound).
    ``unmetered_urls`` names ``urls`` whose calls no limit of the account
    counts (``rate_limit``, ``rate_limits``, ``endpoint_rate_limits``,
    ``max_concurrent_requests``, the allocation): calls to that URL or under
    it are neither paced nor counted, and their answers' usage headers and
    429s touch no limit (Xero's ``connections``, the tenants of a grant: no
    tenant's call, so none of a tenant's 60 a minute and 5,000 a day).
    ``credential_fields`` are what a user types to connect (an API key); an
    ``oauth2`` provider declaring them also takes typed credentials, without
    its authorization flow (HubSpot's private-app token: no refresh token, so
    a refused token marks the connection broken rather than refreshed).
    ``webhook_key_config`` names the connection config field that webhook
    deliveries identify a connection by (Stripe Connect's ``account``), for
    providers whose connections are created from typed credentials.
    ``allocation_header``: a response header telling how much of the
    account's allocation of calls over a long period is used, as
    ``used/limit`` (a ``name=`` before it is skipped: Salesforce's
    ``Sforce-Limit-Info: api-usage=18/5000``, its org's 24 hours). The
    operator may then cap this hub's use of it (``allocation_share``, see
    :func:`hub.runtime.allocation_of`), leaving the rest to the account's
    other apps and people.
    ``empty_webhook_answers``: the provider wants a delivery accepted with a
    200 and no body (Xero: "There is no body in the response"; its check of a
    new webhook fails otherwise); others get the hub's JSON summary.
    ``url_defaults`` gives template values that settings and config may
    override (Shopify's ``api_version``). ``idempotent_creates`` says that
    ``create_record`` sends its ``idempotency_key`` where the provider honours
    it (Stripe's ``Idempotency-Key``): a create the hub cannot know the outcome
    of (a timeout, the hub killed mid-call) is then sent again, by sync and by
    the records API; without it, such a create is left for someone to check
    rather than risk a duplicate (``create_outcome_unknown`` to a client's
    create sent again with its key). ``idempotency_key_seconds``: how long
    the provider keeps a key's answer (Stripe prunes them after 24 hours);
    a create first sent longer ago is not sent again with its key, which the
    provider would take for a new create, but left as of unknown outcome.
    ``minor_units`` gives the decimals of the currencies whose amounts the
    provider's API counts otherwise than ISO 4217 (Stripe's MGA has none):
    field mappings of amounts in minor units use them.
    ``lasting_tokens_until``: the provider stops taking access tokens that
    never expire at this time (Shopify's public apps: 1 January 2027). The
    core's grant upkeep calls ``refresh_credentials`` for each connection
    (``connected`` or in ``error``) holding one (no expiry, no
    ``refresh_token``), for the plugin to exchange it for an expiring grant;
    the catalog shows the date.
    """

    name: str
    label: str
    category: str
    auth_type: AuthType
    description: str = ""
    logo: str = ""
    urls: dict[str, str] = field(default_factory=dict)
    rate_limit: RateLimit | None = None
    endpoint_rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    app_rate_limit: RateLimit | None = None
    rate_limits: tuple[RateLimit, ...] = ()
    max_concurrent_requests: int = 0
    scopes: tuple[str, ...] = ()
    supports_pkce: bool = False
    supports_webhooks: bool = False
    config_fields: tuple[EntityField, ...] = ()
    credential_fields: tuple[EntityField, ...] = ()
    webhook_tolerance_seconds: int = 300
    webhook_key_config: str | None = None
    url_defaults: dict[str, str] = field(default_factory=dict)
    idempotent_creates: bool = False
    idempotency_key_seconds: float | None = None
    minor_units: dict[str, int] = field(default_factory=dict)
    lasting_tokens_until: datetime | None = None
    empty_webhook_answers: bool = False
    allocation_header: str | None = None
    unmetered_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Action:
    """A provider-specific operation beyond CRUD (confirm a payment intent,
    adjust inventory). ``params`` describes its parameters; the core checks
    that required ones are present before calling ``run_action``.
    ``readonly`` actions change nothing at the provider."""

    name: str
    label: str
    description: str = ""
    params: tuple[EntityField, ...] = ()
    readonly: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "readonly": self.readonly,
            "params": [p.public() for p in self.params],
        }


# ---------------------------------------------------------------- exchanged values


@dataclass
class RequestAuth:
    """Headers and query parameters that authenticate one provider request."""

    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Page:
    """One page of records and the opaque cursor of the next page.

    ``next_cursor`` is ``None`` on the last page. ``deleted_ids`` lists records
    the provider reports as removed (Plaid's ``removed``) so sync can mark them.
    ``watermark`` may carry the provider's own resumable position (Plaid's
    ``next_cursor`` after the last page), stored by sync for the next run.
    ``restarted`` says this page does not follow the cursor it was asked
    with: the provider could not go on, and the listing starts over from the
    very beginning (every record again, or, asked with ``since``, every one
    changed since). Records earlier pages gave may have been removed
    meanwhile without being reported, so sync makes a pass without ``since``
    a full one from this page on: what the new listing does not give is
    marked deleted at its end.
    """

    records: list[dict[str, Any]]
    next_cursor: str | None = None
    deleted_ids: list[str] = field(default_factory=list)
    watermark: str | None = None
    restarted: bool = False


@dataclass
class Credentials:
    """Secrets the core stores encrypted for a connection.

    ``secrets`` is everything secret (access/refresh tokens, API keys, Plaid
    access token, webhook secrets); ``config`` is non-secret connection config
    learnt during auth (shop domain, item id, account id); ``expires_at`` is
    when the access token stops working, if it does; ``refresh_expires_at``
    is when the grant itself (the refresh token) stops working, if the
    provider says (Shopify's 90 days, Xero's 60, QuickBooks' 100): the core
    refreshes the connection before then even if nothing calls the provider
    meanwhile, so that a quiet connection does not lapse. ``webhook_key`` is the
    provider-side identity webhook deliveries carry (shop domain, item id), used
    to route deliveries to the connection.
    """

    secrets: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    webhook_key: str | None = None
    refresh_expires_at: datetime | None = None


@dataclass
class ErrorDescription:
    """What ``describe_error`` read from a provider's error body, for the core
    to raise as the error class of the answer's status (as it does with a
    plain message): the message, and the provider's fields it names (dotted
    paths into its records), its own error object (``details``) and code."""

    message: str
    fields: tuple[str, ...] | list[str] = ()
    details: Any = None
    code: str | None = None


@dataclass
class WebhookRequest:
    """A raw webhook delivery as the hub received it. ``body`` is untouched bytes.

    ``method`` and ``url`` are for signatures over the request line (HubSpot's
    v3 signs method, URI, body and timestamp): ``url`` is the URL the provider
    called as the public sees it, ``HUB_PUBLIC_URL`` with the path and the raw
    query string (behind a proxy the hub's own view of the URL differs).
    """

    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    url: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self.headers.items():
            if key.lower() == name:
                return value
        return default


@dataclass
class WebhookEvent:
    """A normalized webhook event.

    ``dedup_key`` identifies the delivery across retries (Stripe's event id,
    Shopify's ``X-Shopify-Event-Id``, a derived hash where the provider has
    none). ``type`` is ``<entity>.<action>`` in the hub's vocabulary
    (``order.created``). ``entity`` is the hub entity name and ``action`` one of
    ``created``, ``updated``, ``deleted`` or ``changed`` (something changed,
    fetch to know what). ``record`` is the full record when the payload carries
    it, else ``None``.

    Three actions concern the connection itself, not a record (``entity`` is
    ``None``): :data:`CONNECTION_BROKEN` (the provider says the connection no
    longer works until its user acts: Plaid's ``ITEM: ERROR``, Shopify's
    ``app/uninstalled``), :data:`CONNECTION_REPAIRED` (it works again:
    Plaid's ``LOGIN_REPAIRED``) and :data:`CONNECTION_WARNING` (it works, but
    will stop unless its user acts by some time: Plaid's
    ``PENDING_EXPIRATION``, consent about to expire). ``message`` says why,
    for people; the core shows it as the connection's ``last_error``, or, of a
    warning, as its ``warning`` (its ``status`` unchanged).

    :data:`REDACTED`: privacy law asks that the record be erased (Shopify's
    ``customers/redact``): the core deletes its stored copy (changes and
    conflicts too), empties the bodies of the connection's webhook events
    about it and keeps it known as erased (a late older delivery of it is
    ignored, its body not kept); with no ``entity``, every record of the connection
    (``shop/redact``). Give such an event no ``record`` and an empty
    ``raw``: the request itself names the person.
    """

    dedup_key: str
    type: str
    entity: str | None = None
    action: str = "changed"
    record_id: str | None = None
    record: dict[str, Any] | None = None
    occurred_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


#: Webhook actions about the connection rather than a record (see :class:`WebhookEvent`).
CONNECTION_BROKEN = "connection_error"
CONNECTION_REPAIRED = "reconnected"
CONNECTION_WARNING = "connection_warn"
#: Webhook action: erase the record (or, with no entity, the connection's records) for privacy law.
REDACTED = "redacted"


# ---------------------------------------------------------------- errors


class HubError(Exception):
    """Base of every error the API turns into ``{"success": false, ...}``.

    ``code`` is stable and machine readable; the message is for people and must
    never contain secrets.
    """

    code = "hub_error"
    status = 400
    #: Seconds after which asking again may succeed, sent as ``Retry-After``
    #: (an error of a moment: a rate limit, a request still under way).
    retry_after: float | None = None

    def __init__(self, message: str, *, code: str | None = None, details: Any = None,
                 provider_status: int | None = None, fields: Iterable[str] = ()):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details
        self.provider_status = provider_status
        #: The fields the error is about: the provider's, as dotted paths into
        #: its records (``address.city``, ``line_items.0.quantity``), or the
        #: request's (a missing credential, a tenant field no mapping targets,
        #: ``mappings.1.source``). The API shows them, and a refused push names
        #: the provider's in the tenant's fields too (through the sync
        #: config's mappings).
        self.fields: tuple[str, ...] = tuple(str(field) for field in fields)


class AuthFailed(HubError):
    """The provider rejected the connection's credentials (revoked, wrong, expired).

    ``account_refused``: the provider refuses the account, not the credentials
    (Shopify's frozen shop, a 402): the grant works again once its owner acts,
    so a token refresh refused so leaves the connection in ``error`` with the
    reason, its grant kept, rather than ``expired`` (authorize again)."""

    code = "provider_auth_failed"
    status = 424

    def __init__(self, message: str, *, account_refused: bool = False, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.account_refused = account_refused


class PermissionDenied(HubError):
    """The credentials work, but may not do this (HTTP 403: a Stripe restricted
    key without the permission, a Shopify app without the scope). Unlike
    :class:`AuthFailed` it does not mark the connection broken."""

    code = "provider_permission_denied"
    status = 403


class NotFound(HubError):
    """The record (or provider, entity, connection) does not exist."""

    code = "not_found"
    status = 404


class ValidationFailed(HubError):
    """The provider or the hub rejected the input as invalid."""

    code = "validation_error"
    status = 422


class ReadOnly(HubError):
    """The entity does not allow this write."""

    code = "read_only"
    status = 405


class StaleVersion(HubError):
    """The provider refused a write because the record changed since the
    version it was based on (the ``base`` passed to ``update_record`` or
    ``delete_record``): QuickBooks' stale ``SyncToken``, an HTTP 412. Sync
    reads the record again: under ``review`` and ``provider_wins`` the change
    meets that version as a conflict; under ``hub_wins`` it is sent once more
    on it. Refused again, or with no ``get_record`` to read it, the push fails
    and waits for the tenant."""

    code = "stale_version"
    status = 409


class RateLimited(HubError):
    """The provider's rate limit was still exceeded after the core's retries."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None, limit: str | None = None,
                 **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        #: Which declared limit (``RateLimit.name``) the provider says was met, where it says
        #: (Xero's ``X-Rate-Limit-Problem``): the core pauses or refuses that one.
        self.limit = limit


class ProviderUnavailable(HubError):
    """The provider failed (5xx, timeout, network) after the core's retries.

    ``maybe_applied``: the request was a write that may have taken effect
    (no answer, or a 5xx, to a request that is not idempotent).
    ``retry_now``: the provider says the same request can succeed if sent
    again shortly (Stripe's ``Stripe-Should-Retry: true`` on a 409); returned
    by ``describe_error``, it makes the core re-send an idempotent request
    with backoff, as after a 5xx."""

    code = "provider_unavailable"
    status = 503

    def __init__(self, message: str, *, maybe_applied: bool = False, retry_now: bool = False, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.maybe_applied = maybe_applied
        self.retry_now = retry_now


class ProviderError(HubError):
    """The provider answered with an error the other classes do not describe."""

    code = "provider_error"
    status = 502


class NotSupported(HubError):
    """The provider does not implement this operation (no such hook)."""

    code = "not_supported"
    status = 400


class InsufficientScope(HubError):
    """The user granted fewer permissions than the provider asks for.

    Raised by ``exchange_code`` with the ``credentials`` obtained: the core
    gives that grant back (unless another connection uses the same account)
    and fails the flow with ``insufficient_scope``."""

    code = "insufficient_scope"
    status = 422

    def __init__(self, message: str, *, credentials: Credentials | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.credentials = credentials


class ConfigurationError(HubError):
    """The hub or the connection lacks a setting the provider needs."""

    code = "configuration_error"
    status = 400


class WebhookRejected(HubError):
    """A webhook delivery failed verification (forged, stale or malformed)."""

    code = "webhook_rejected"
    status = 401


def signed_unix_time(text: str | None, *, milliseconds: bool = False) -> int:
    """The Unix time (seconds) a delivery's signature header carries, read
    safely: ``str.isdigit`` alone takes "²", and ``int`` refuses it, or
    thousands of digits; either, raised from ``verify_webhook``, would be
    logged as the plugin crashing on every forged delivery. With
    ``milliseconds`` the header counts milliseconds (HubSpot's
    ``X-HubSpot-Request-Timestamp``); still seconds are returned.

    :raises WebhookRejected: not 1 to 12 ASCII digits (15 in milliseconds).
    """
    text = (text or "").strip()
    if not (0 < len(text) <= (15 if milliseconds else 12) and text.isascii() and text.isdigit()):
        raise WebhookRejected("missing or malformed signature timestamp")
    return int(text) // 1000 if milliseconds else int(text)
