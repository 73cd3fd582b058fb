"""SQLModel tables and the public shapes the API returns.

Tables hold secrets only in ``*_encrypted`` columns; the ``*Public`` models
have no field that could carry a secret.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import JSON, Column, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.TypeDecorator):
    """A point in time, stored in UTC and read back timezone-aware.

    SQLite keeps no offset: a plain ``DateTime(timezone=True)`` would store
    12:00+02:00 (a provider's ``updated_at`` in its shop's zone) as 12:00 and
    read it back as 12:00 UTC, two hours off, which breaks version order and
    watermarks. Naive values are taken as UTC; every value is read back in UTC.
    """

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        # (PostgreSQL answers in its session's time zone, which may be the server's own.)
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return value


class Message(sa.TypeDecorator):
    """Text for people (an error, a provider's message) of at most ``length``
    characters. Longer text is cut and NUL characters, which PostgreSQL
    refuses in text, are replaced: storing why something failed must not fail
    itself (a provider echoing a tenant's NUL in its error stalled a push)."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if isinstance(value, str):
            value = value.replace("\x00", "\ufffd")
            if self.impl.length:
                value = value[:self.impl.length]
        return value


def new_id() -> str:
    return uuid.uuid4().hex


class SecretKeyCheck(SQLModel, table=True):
    """A known text sealed with the secret key of the hub processes on this
    database (one row): a process whose key cannot open it has another key,
    and what it seals the others cannot open."""

    __tablename__ = "secret_key_check"

    id: int = Field(default=1, primary_key=True)
    sealed: str = Field(sa_type=sa.Text())
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", index=True, max_length=64)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class Connection(SQLModel, table=True):
    __tablename__ = "connections"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", index=True, max_length=64)
    provider: str = Field(index=True, max_length=64)
    category: str = Field(max_length=64)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    status: str = Field(default="connected", max_length=16)
    last_error: str | None = Field(default=None, max_length=2000, sa_type=Message(2000))
    #: The provider says the connection will stop working unless its user acts
    #: (consent about to expire): set by a CONNECTION_WARNING webhook event,
    #: ended by the user's next authorization or a CONNECTION_REPAIRED one.
    warning: str | None = Field(default=None, max_length=2000, sa_type=Message(2000))
    sync_enabled: bool = False
    sync_frequency_minutes: int = 60
    #: When the last sync run ended, how (``succeeded``, ``failed``), why it
    #: failed, and which run it was (its counts and log).
    last_sync_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    last_sync_status: str | None = Field(default=None, max_length=16)
    last_sync_error: str | None = Field(default=None, max_length=2000, sa_type=Message(2000))
    last_sync_run_id: str | None = Field(default=None, max_length=32)
    next_sync_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    credentials_encrypted: str | None = Field(default=None, sa_type=sa.Text)
    credentials_hint: str | None = Field(default=None, max_length=64)
    credentials_version: int = 0
    token_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: When the grant itself (the refresh token) stops working, where the provider says:
    #: the grant upkeep refreshes the connection before then (``HUB_GRANT_RENEWAL_DAYS``).
    refresh_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    webhook_key: str | None = Field(default=None, index=True, max_length=255)
    #: The provider-side account the credentials reach, as the plugin's
    #: ``test_connection`` names it (its ``account`` detail): the connection's
    #: records are that account's, so credentials of another are refused.
    provider_account: str | None = Field(default=None, max_length=255, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class IdempotentCreate(SQLModel, table=True):
    """A create through the records API that carried the client's
    ``idempotency_key``, and what became of it: the same request sent again
    (its answer lost) is answered the record made the first time, whatever
    the provider, for a day."""

    __tablename__ = "idempotent_creates"
    __table_args__ = (
        sa.UniqueConstraint("connection_id", "key", name="uq_idempotent_creates_key"),
        sa.Index("ix_idempotent_creates_connection_created", "connection_id", "created_at"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    connection_id: str = Field(foreign_key="connections.id", ondelete="CASCADE", max_length=32)
    key: str = Field(max_length=200)
    #: The SHA-256 of the entity and data sent: the key with other data is another request.
    fingerprint: str = Field(max_length=64)
    #: ``sending`` (under way in ``owner``), ``done`` (``record`` made), ``uncertain`` (no answer
    #: came), ``refused`` (the provider refused it: sent again, with this data or other, under
    #: another key), ``unsent`` (nothing made: sent again with the same data) or ``unanswered``
    #: (maybe made, under the key the provider dedupes by: sent again with the same data, while
    #: the provider keeps the key).
    #: Until ``done``, ``record`` is ``{"refusals": n}``: how many times the provider refused the
    #: key, which the key the plugin gets is derived with (a provider keeps a refusal under its key);
    #: ``unanswered``, with ``first_sent``: when the provider first got the key.
    status: str = Field(max_length=16)
    owner: str | None = Field(default=None, max_length=255)
    record: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class PendingRevocation(SQLModel, table=True):
    """A deleted connection's grant the provider has not taken back yet (its
    revocation failed for a passing reason): the scheduler tries again, so
    that no live token is left at a provider with no record of it here."""

    __tablename__ = "pending_revocations"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    connection_id: str = Field(max_length=32, description="the deleted connection's id, for the logs")
    organization_id: str = Field(max_length=64)
    provider: str = Field(max_length=64)
    webhook_key: str | None = Field(default=None, max_length=255)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    credentials_encrypted: str = Field(sa_type=sa.Text)
    token_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime())
    last_error: str | None = Field(default=None, max_length=2000, sa_type=Message(2000))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class OAuthState(SQLModel, table=True):
    __tablename__ = "oauth_states"

    state_hash: str = Field(primary_key=True, max_length=64)
    organization_id: str = Field(foreign_key="organizations.id", index=True, max_length=64)
    provider: str = Field(max_length=64)
    redirect_uri: str = Field(max_length=2000)
    return_to: str | None = Field(default=None, max_length=2000)
    code_verifier_encrypted: str | None = Field(default=None, sa_type=sa.Text)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    expires_at: datetime = Field(sa_type=UTCDateTime())
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    #: A flow bound to the browser that started it (``confirm=true``): the hash of its
    #: binding, the grant the callback obtained (encrypted) until the tenant's app
    #: confirms it with that binding, and when it did.
    binding_hash: str | None = Field(default=None, max_length=64)
    grant_encrypted: str | None = Field(default=None, sa_type=sa.Text)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: The hash of the ``flow`` the callback sends the browser back with: random, so that
    #: nobody holding the authorization URL (its state) can name the flow.
    flow_hash: str | None = Field(default=None, max_length=64, unique=True, index=True)


class WebhookEvent(SQLModel, table=True):
    """A verified webhook event, stored once per connection: the same provider
    event id delivered to two connections (two organizations' endpoints) is
    two events."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        sa.UniqueConstraint("connection_id", "dedup_key", name="uq_webhook_events_connection_dedup"),
        # A connection's events newest first, a page at a time, without sorting all of them.
        sa.Index("ix_webhook_events_connection_received", "connection_id", "received_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    provider: str = Field(max_length=64)
    dedup_key: str = Field(max_length=255)
    connection_id: str | None = Field(default=None, max_length=32)
    organization_id: str | None = Field(default=None, index=True, max_length=64)
    type: str = Field(max_length=128)
    entity: str | None = Field(default=None, max_length=64)
    action: str = Field(default="changed", max_length=16)
    record_id: str | None = Field(default=None, max_length=255)
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    raw: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    status: str = Field(default="pending", index=True, max_length=16)
    attempts: int = 0
    error: str | None = Field(default=None, max_length=2000, sa_type=Message(2000))
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


# ---------------------------------------------------------------- API shapes


class ConnectionPublic(BaseModel):
    id: str
    provider: str
    category: str
    name: str
    description: str | None
    status: str
    last_error: str | None
    warning: str | None = None
    sync_enabled: bool
    sync_frequency_minutes: int
    last_sync_at: datetime | None = Field(description="When the connection's last sync run ended, "
                                                     "whatever its outcome (`last_sync_status`).")
    last_sync_status: str | None = Field(default=None, description="How it ended: `succeeded` or `failed`.")
    last_sync_error: str | None = Field(default=None, description="Why it failed (the run's `error`).")
    last_sync_run_id: str | None = Field(default=None, description="The run, for its counts and log.")
    next_sync_at: datetime | None
    config: dict[str, Any]
    provider_account: str | None = Field(default=None, description=(
        "The account at the provider the credentials reach (Stripe account and mode, Shopify shop, Plaid item), "
        "as the provider's test of the connection names it; null until tested, or if the provider does not tell. "
        "While the connection holds records, credentials or configuration reaching another account are refused "
        "(`account_mismatch`): its records, cursors and waiting changes are this account's."))
    credentials_hint: str | None
    token_expires_at: datetime | None
    refresh_expires_at: datetime | None = Field(default=None, description=(
        "When the connection's grant (its refresh token) stops working, where the provider says; the hub "
        "refreshes it before then (`HUB_GRANT_RENEWAL_DAYS`), calls or not. Null: unknown, or it does not expire."))
    open_conflicts: int = Field(default=0, description=(
        "Records changed on both sides that wait for a decision (sync configs with the `review` policy): "
        "`GET .../sync-configs/{sid}/conflicts` lists them."))
    last_webhook_at: datetime | None = Field(default=None, description=(
        "When the last verified webhook event for this connection arrived, among the events kept "
        "(`HUB_WEBHOOK_RETENTION_DAYS`; a duplicate delivery does not count): whether the provider's webhooks "
        "reach the hub. Null: none in that time."))
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, connection: Connection, open_conflicts: int = 0,
           last_webhook_at: datetime | None = None) -> ConnectionPublic:
        public = cls.model_validate(connection, from_attributes=True)
        public.open_conflicts, public.last_webhook_at = open_conflicts, last_webhook_at
        return public


# ---------------------------------------------------------------- sync

_CASCADE_CONNECTION = {"foreign_key": "connections.id", "ondelete": "CASCADE", "index": True, "max_length": 32}


class SyncConfig(SQLModel, table=True):
    """What to sync for one connection and entity, in which direction, and how
    the provider's fields map to the tenant's."""

    __tablename__ = "sync_configs"
    __table_args__ = (sa.UniqueConstraint("connection_id", "entity", name="uq_sync_configs_entity"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    organization_id: str = Field(index=True, max_length=64)
    connection_id: str = Field(**_CASCADE_CONNECTION)
    entity: str = Field(max_length=64)
    direction: str = Field(default="pull", max_length=8)
    enabled: bool = True
    schedule_minutes: int | None = None
    next_sync_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    conflict_policy: str = Field(default="provider_wins", max_length=16)
    mappings: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class DroppedSyncEntity(SQLModel, table=True):
    """An entity whose sync config the tenant deleted: the provider's webhook
    events of it are ignored (neither stored nor made a pull, which would make
    the config again), until a config of it is made again."""

    __tablename__ = "dropped_sync_entities"

    connection_id: str = Field(foreign_key="connections.id", ondelete="CASCADE", primary_key=True, max_length=32)
    entity: str = Field(primary_key=True, max_length=64)
    dropped_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class SyncState(SQLModel, table=True):
    """Where the pull of one sync config stands. Written only in the
    transaction that stores the page it describes."""

    __tablename__ = "sync_states"

    sync_config_id: str = Field(primary_key=True, foreign_key="sync_configs.id", ondelete="CASCADE",
                                max_length=32)
    connection_id: str = Field(index=True, max_length=32)
    entity: str = Field(max_length=64)
    pass_mode: str | None = Field(default=None, max_length=16)
    pass_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    pass_since: datetime | None = Field(default=None, sa_type=UTCDateTime())
    cursor: str | None = Field(default=None, sa_type=sa.Text)
    pass_max_updated: datetime | None = Field(default=None, sa_type=UTCDateTime())
    pass_watermark: str | None = Field(default=None, sa_type=sa.Text)
    pass_pages: int = 0
    watermark: datetime | None = Field(default=None, sa_type=UTCDateTime())
    start_cursor: str | None = Field(default=None, sa_type=sa.Text)
    last_pass_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    last_full_pass_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class SyncRecord(SQLModel, table=True):
    """A provider record as the hub stores it, with the tenant's pending change.

    ``data`` is the provider's version as last seen (pulled, received by
    webhook or returned by a push) and ``content_hash`` its hash; ``local_data``
    is the tenant's change not yet pushed (provider field names), ``local_op``
    what to do with it. ``sent_change`` is the change last sent to the provider whose outcome is
    not stored yet: for a create its idempotency key and data (sent again as
    it was, since a provider replays a key only with the same parameters), for
    an update its data (so that the provider's version holding it is known for
    the hub's own write, not taken for a change made there).
    """

    __tablename__ = "sync_records"
    __table_args__ = (
        sa.UniqueConstraint("connection_id", "entity", "remote_id", name="uq_sync_records_remote"),
        sa.Index("ix_sync_records_push", "connection_id", "entity", "push_status",
                 sqlite_where=sa.text("push_status IS NOT NULL"), postgresql_where=sa.text("push_status IS NOT NULL")),
        # The records API lists an entity's records by id, a page at a time: without it every
        # page sorted all of the entity's records (SQLite) or filtered the whole table (PostgreSQL).
        sa.Index("ix_sync_records_list", "connection_id", "entity", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    connection_id: str = Field(foreign_key="connections.id", ondelete="CASCADE", max_length=32)
    entity: str = Field(max_length=64)
    remote_id: str | None = Field(default=None, max_length=255)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    content_hash: str | None = Field(default=None, max_length=64)
    remote_updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    first_seen_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    last_seen_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    deleted: bool = False
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    local_data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    local_op: str | None = Field(default=None, max_length=8)
    local_version: int = 0
    local_changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    push_status: str | None = Field(default=None, max_length=16)
    push_error: str | None = Field(default=None, max_length=2000, sa_type=Message(2000))
    #: ``{"code", "details"}`` of the refusal ``push_error`` tells (meaningless once it is cleared).
    push_failure: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    push_attempts: int = 0
    pushed_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    sent_change: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class SyncConflict(SQLModel, table=True):
    """A record changed on both sides since the last sync: both versions kept."""

    __tablename__ = "sync_conflicts"
    __table_args__ = (
        # A connection's open conflicts counted for each answer about it, among many resolved ones.
        sa.Index("ix_sync_conflicts_open", "connection_id", sqlite_where=sa.text("status = 'open'"),
                 postgresql_where=sa.text("status = 'open'")),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    connection_id: str = Field(**_CASCADE_CONNECTION)
    entity: str = Field(max_length=64)
    record_id: str = Field(foreign_key="sync_records.id", ondelete="CASCADE", index=True, max_length=32)
    remote_id: str | None = Field(default=None, max_length=255)
    policy: str = Field(max_length=16)
    status: str = Field(default="open", max_length=16)
    resolution: str | None = Field(default=None, max_length=16)
    local_data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    remote_data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    #: A ``custom`` resolution's change, in provider fields: what was decided, beside both sides.
    resolution_data: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class SyncRun(SQLModel, table=True):
    """One sync run: its request, progress counters and outcome (the sync log)."""

    __tablename__ = "sync_runs"
    __table_args__ = (sa.Index("ix_sync_runs_connection_queued", "connection_id", "queued_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    organization_id: str = Field(index=True, max_length=64)
    connection_id: str = Field(foreign_key="connections.id", ondelete="CASCADE", max_length=32)
    entity: str | None = Field(default=None, max_length=64)
    direction: str = Field(default="pull", max_length=8)
    full_refresh: bool = False
    trigger: str = Field(default="manual", max_length=16)
    status: str = Field(default="queued", index=True, max_length=16)
    fetched: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    pushed: int = 0
    failed: int = 0
    conflicts: int = 0
    pages: int = 0
    error: str | None = Field(default=None, max_length=2000, sa_type=Message(2000))
    error_code: str | None = Field(default=None, max_length=64)
    owner: str | None = Field(default=None, max_length=255)
    queued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class SyncLease(SQLModel, table=True):
    """Who is syncing a connection right now: one holder at a time, renewed
    while it works, taken over when it expires or its process is gone."""

    __tablename__ = "sync_leases"

    connection_id: str = Field(primary_key=True, foreign_key="connections.id", ondelete="CASCADE",
                               max_length=32)
    owner: str = Field(max_length=255)
    run_id: str | None = Field(default=None, max_length=32)
    acquired_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    expires_at: datetime = Field(sa_type=UTCDateTime())


class WebhookEventState(SQLModel, table=True):
    """Processing state of a stored webhook event: when the provider says it
    happened (to order deliveries) and when to try applying it again."""

    __tablename__ = "webhook_event_states"

    event_id: str = Field(primary_key=True, foreign_key="webhook_events.id", ondelete="CASCADE", max_length=32)
    occurred_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    next_attempt_at: datetime | None = Field(default=None, index=True, sa_type=UTCDateTime())
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


class EventEndpoint(SQLModel, table=True):
    """A URL of the tenant's app that the hub tells of what happened (a sync
    run ended, a connection's status changed, a conflict awaits review): each
    event is POSTed to it, signed with its secret (see :mod:`hub.events`)."""

    __tablename__ = "event_endpoints"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", index=True, max_length=64)
    url: str = Field(max_length=2000)
    #: The event types sent to it; empty: every type.
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str | None = Field(default=None, max_length=2000)
    enabled: bool = True
    secret_encrypted: str = Field(sa_type=sa.Text)
    #: The secret a rotation replaced, still signing beside the new one until
    #: ``previous_secret_until`` (the app switches without refusing events).
    previous_secret_encrypted: str | None = Field(default=None, sa_type=sa.Text)
    previous_secret_until: datetime | None = Field(default=None, sa_type=UTCDateTime())
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())


class EventDelivery(SQLModel, table=True):
    """One event on its way to one endpoint (the outbox): written in the
    transaction of the change it tells of, so an event is sent if and only if
    its change was committed; sent until the endpoint answers 2xx, with
    backoff, then ``delivered`` (or ``failed`` after the last attempt)."""

    __tablename__ = "event_deliveries"
    __table_args__ = (sa.Index("ix_event_deliveries_due", "status", "next_attempt_at"),
                      sa.Index("ix_event_deliveries_endpoint", "endpoint_id", "created_at"))

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    endpoint_id: str = Field(foreign_key="event_endpoints.id", ondelete="CASCADE", max_length=32)
    organization_id: str = Field(max_length=64)
    event_id: str = Field(max_length=40)
    type: str = Field(max_length=64)
    #: The body sent: ``{"id", "type", "created_at", "organization_id", "data"}``.
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending, delivered, failed
    attempts: int = 0
    #: When it is sent next; None: held (its endpoint is disabled).
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: The claim of the attempt under way (see ``EventDeliverer``): its outcome is
    #: recorded only while the claim holds (not after a retry asked for meanwhile).
    claim: str | None = Field(default=None, max_length=32)
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime())
    #: The endpoint's HTTP status at the last attempt (None: no answer).
    response_status: int | None = None
    error: str | None = Field(default=None, max_length=2000, sa_type=Message(2000))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime())


#: Every column holding a secret sealed with the hub's key, with its table's key column: what
#: ``hub reencrypt`` rewrites, and what the key check of an older database is tried on.
SEALED_COLUMNS = ((Connection, "id", "credentials_encrypted"), (PendingRevocation, "id", "credentials_encrypted"),
                  (OAuthState, "state_hash", "code_verifier_encrypted"), (OAuthState, "state_hash", "grant_encrypted"),
                  (EventEndpoint, "id", "secret_encrypted"), (EventEndpoint, "id", "previous_secret_encrypted"))
