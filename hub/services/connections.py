"""Connections: create (API key, OAuth, Link), update, test, delete."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from hub.crypto import DecryptionError
from hub.events import emit, status_changed
from hub.models import (
    Connection,
    ConnectionPublic,
    PendingRevocation,
    SyncConflict,
    SyncRecord,
    SyncState,
    WebhookEvent,
    utcnow,
)
from hub.plugins import Provider
from hub.runtime import Hub, next_sync, rescheduled
from hub.sync.store import lock
from hub.sync.stored import running
from hub.types import (
    AuthFailed,
    Credentials,
    HubError,
    NotFound,
    PermissionDenied,
    ProviderUnavailable,
    RateLimited,
    ValidationFailed,
)

log = logging.getLogger("hub.connections")


class Conflict(HubError):
    code = "connection_exists"
    status = 409


class AccountMismatch(HubError):
    """New credentials (or configuration) reach another account at the
    provider than the one whose records the connection holds, or cannot tell
    which they reach (``account_unverifiable``)."""

    code = "account_mismatch"
    status = 409


#: The length of ``Connection.provider_account``: a longer account is kept cut (alike each time).
MAX_ACCOUNT = 255


def account_of(details: dict[str, Any] | None) -> str | None:
    """The ``account`` a plugin's ``test_connection`` names (None: it does not tell)."""
    value = (details or {}).get("account")
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
        return str(value)[:MAX_ACCOUNT]
    return None


def list_connections(hub: Hub, organization_id: str, provider: str | None = None) -> list[Connection]:
    with hub.session() as session:
        query = select(Connection).where(Connection.organization_id == organization_id)
        if provider:
            query = query.where(Connection.provider == provider)
        return list(session.exec(query.order_by(Connection.created_at)))


#: Longest declared config or credential value: they go into URLs, headers and indexed columns.
MAX_FIELD_LENGTH = 255
#: Longest credential: encrypted, never indexed, and may be a PEM key or a long JWT.
MAX_CREDENTIAL_LENGTH = 16384
_FIELD_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                             "boolean": (bool,)}


def _check_types(fields: Any, values: dict[str, Any], what: str, longest: int = MAX_FIELD_LENGTH) -> None:
    """Declared fields hold values of their type (a shop domain is text, not 5)."""
    bad: dict[str, str] = {}
    for field in fields:
        value = values.get(field.name)
        wanted = _FIELD_TYPES.get(field.type)
        if value is None or wanted is None:
            continue
        if (not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)
                or (isinstance(value, str) and len(value) > longest)):
            bad[field.name] = f"text of at most {longest} characters" if field.type == "string" else field.type
    if bad:
        raise ValidationFailed(f"{what} must be: " + ", ".join(f"{name} {kind}" for name, kind in bad.items()),
                               code="invalid_value", details={"fields": sorted(bad)}, fields=sorted(bad))


def _check_fields(provider: Provider, credentials: dict[str, Any], config: dict[str, Any],
                  config_types: bool = True) -> None:
    """``config_types``: check the config's values too (not when it is the
    stored one, which a PUT of new credentials does not change)."""
    _check_types(provider.info.credential_fields, credentials, "credential(s)", MAX_CREDENTIAL_LENGTH)
    if config_types:
        _check_types(provider.info.config_fields, config, "config field(s)")
    missing = [f.name for f in provider.info.credential_fields if f.required and not credentials.get(f.name)]
    missing += [f.name for f in provider.info.config_fields if f.required and config.get(f.name) in (None, "")]
    if missing:
        raise ValidationFailed(
            f"{provider.name} needs {', '.join(missing)}", code="missing_fields", details={"missing": missing},
            fields=missing,
        )
    known = {f.name for f in provider.info.credential_fields}
    unknown = sorted(set(credentials) - known) if known else []
    if unknown:
        raise ValidationFailed(
            f"{provider.name} does not take credential(s) {', '.join(unknown)}",
            code="unknown_fields", details={"unknown": unknown}, fields=unknown,
        )


def takes_typed_credentials(provider: Provider) -> bool:
    """Whether a connection of ``provider`` may be made from credentials a user
    types: an API-key provider's, and an OAuth provider's that declares
    ``credential_fields`` too (HubSpot's private-app token)."""
    return provider.info.auth_type == "api_key" or bool(provider.info.credential_fields)


async def create_api_key_connection(hub: Hub, organization_id: str, provider: Provider, *,
                                    name: str | None, description: str | None,
                                    credentials: dict[str, Any], config: dict[str, Any],
                                    sync_enabled: bool, sync_frequency_minutes: int) -> Connection:
    """Create a connection from credentials the user typed (API keys).

    The credentials are tested first when the provider can test them: nothing
    is saved if the provider refuses them.
    """
    if not takes_typed_credentials(provider):
        raise ValidationFailed(
            f"{provider.name} connects with {provider.info.auth_type}, not an API key",
            code="wrong_auth_type",
        )
    _check_fields(provider, credentials, config)
    _ensure_unique(hub, organization_id, provider.name)
    connection = Connection(
        organization_id=organization_id, provider=provider.name, category=provider.info.category,
        name=name or provider.info.label, description=description, config=dict(config),
        sync_enabled=sync_enabled, sync_frequency_minutes=sync_frequency_minutes,
    )
    hub.store_credentials(connection, Credentials(secrets=dict(credentials),
                                                  webhook_key=_webhook_key(provider, connection.config)))
    if provider.implements("test_connection"):
        ctx = hub.context(provider, connection)
        try:
            connection.provider_account = account_of(await hub.call(provider, "test_connection", ctx))
        except BaseException:
            await hub.pool.discard(connection.id)
            raise
    connection.next_sync_at = next_sync(connection)
    try:
        return await asyncio.to_thread(_save_new, hub, connection, one_per_organization=True)
    except Conflict:
        await hub.pool.discard(connection.id)
        raise


def _webhook_key(provider: Provider, config: dict[str, Any]) -> str | None:
    field = provider.info.webhook_key_config
    value = config.get(field) if field else None
    return str(value) if value else None


def _ensure_unique(hub: Hub, organization_id: str, provider: str) -> None:
    if list_connections(hub, organization_id, provider):
        raise Conflict(f"this organization already has a {provider} connection")


def _save_new(hub: Hub, connection: Connection, one_per_organization: bool = False) -> Connection:
    """Insert a new connection. ``one_per_organization`` checks again, under
    a lock, that the organization has none of the provider yet: two requests
    creating one at once both passed the first check while their credentials
    were being tested."""
    with hub.session() as session:
        if one_per_organization:
            lock(session, f"connections/{connection.organization_id}/{connection.provider}")
            if session.exec(select(Connection.id).where(Connection.organization_id == connection.organization_id,
                                                        Connection.provider == connection.provider)).first():
                raise Conflict(f"this organization already has a {connection.provider} connection")
        session.add(connection)
        try:
            session.flush()  # (before the event, whose reading of the endpoints would flush it unguarded)
        except IntegrityError:
            session.rollback()
            raise Conflict("this connection already exists") from None
        _tell(session, connection, "connection.created")
        session.commit()
        session.refresh(connection)
        return connection


#: How long reading a new grant's account may hold its callback (one attempt, no waiting out a 429).
PROBE_DEADLINE_SECONDS = 15.0


@dataclasses.dataclass(frozen=True)
class Reached:
    """The account a new grant reaches: ``account`` as its test names it (None:
    the plugin does not tell), or ``failure`` when the test could not say."""

    account: str | None = None
    failure: HubError | None = None


async def account_reached(hub: Hub, organization_id: str, provider: Provider, credentials: Credentials) -> Reached:
    """The provider account fresh credentials (an OAuth grant, a Link
    exchange) reach, from ``test_connection``: one attempt within
    :data:`PROBE_DEADLINE_SECONDS`, as the user's browser waits on it."""
    if not provider.implements("test_connection"):
        return Reached()
    probe = Connection(organization_id=organization_id, provider=provider.name, category=provider.info.category,
                       name=provider.info.label)
    hub.store_credentials(probe, credentials)
    ctx = hub.context(provider, probe)
    # Nothing stored: no status to mark, and no refresh (a rotated token would be lost: the
    # grant as exchanged is what gets stored).
    ctx.connection_id = None
    ctx.extra["token_expires_at"], ctx.extra["refreshing"] = None, True
    ctx.http.retry = dataclasses.replace(ctx.http.retry, attempts=1, throttled_wait=0.0,
                                         deadline=min(ctx.http.retry.deadline, PROBE_DEADLINE_SECONDS))
    try:
        return Reached(account_of(await hub.call(provider, "test_connection", ctx)))
    except HubError as exc:
        log.warning("%s: the account of a new authorization could not be read (%s): %s", provider.name, exc.code,
                    exc.message)
        return Reached(failure=exc)
    finally:
        await hub.pool.discard(probe.id)


def upsert_from_credentials(hub: Hub, organization_id: str, provider: Provider, credentials: Credentials,
                            name: str | None = None, allow_many: bool = False,
                            reached: Reached | None = None) -> Connection:
    """Create or re-authorize a connection after OAuth or a Link exchange.

    OAuth re-authorization of the same provider (and the same provider-side
    account: its ``webhook_key``, or the ``account`` its test names) updates
    the existing connection instead of adding another; an authorization of
    another account never takes a connection over (``connection_exists``):
    the next full pass would take the first account's records for deleted.
    Decided under the organization's lock for the provider: two callbacks at
    once make one connection.
    """
    account = reached.account if reached else None
    with hub.session() as session:
        lock(session, f"connections/{organization_id}/{provider.name}")
        query = select(Connection).where(
            Connection.organization_id == organization_id, Connection.provider == provider.name
        )
        existing = list(session.exec(query))
        match = None
        if credentials.webhook_key:
            match = next((c for c in existing if c.webhook_key == credentials.webhook_key), None)
        if match is None and account is not None:
            match = next((c for c in existing if c.provider_account == account), None)
        if match is None and existing and not allow_many:
            other = existing[0]
            if other.webhook_key and credentials.webhook_key:
                # Another account (another shop) of the provider: never take its connection over.
                raise Conflict(f"this organization's {provider.name} connection is for {other.webhook_key}; "
                               f"delete it to connect {credentials.webhook_key}")
            if other.provider_account and account is not None:
                raise Conflict(f"this organization's {provider.name} connection is for account "
                               f"{other.provider_account}; delete it to connect account {account}")
            if other.provider_account and reached is not None and reached.failure is not None:
                # Which account the grant reaches is unknown: it may be another one.
                raise AccountMismatch(
                    f"which {provider.info.label} account this authorization reaches could not be read "
                    f"({reached.failure.message}), and this organization's connection is for account "
                    f"{other.provider_account}: connect again in a moment", code="account_unverifiable",
                    details={"account": None, "connected": other.provider_account})
            match = other
        connection = match or Connection(
            organization_id=organization_id, provider=provider.name, category=provider.info.category,
            name=name or provider.info.label,
        )
        hub.store_credentials(connection, credentials)
        if account is not None:
            connection.provider_account = account
        if match is not None:
            _tell_status(session, match, "connected")
        connection.status = "connected"
        connection.last_error = connection.warning = None
        connection.updated_at = utcnow()
        session.add(connection)
        if match is None:
            _tell(session, connection, "connection.created")
        session.commit()
        session.refresh(connection)
        return connection


async def update_connection(hub: Hub, organization_id: str, connection_id: str,
                            changes: dict[str, Any]) -> Connection:
    """Apply a PUT. New credentials or configuration are tested with the
    provider before they replace what works (nothing changes if refused).
    An OAuth or Link connection's credentials and configuration come from
    its authorization (its shop, its Plaid environment): changing them means
    connecting again, never sending its tokens elsewhere.

    Credentials or configuration that reach another account at the provider
    than the connection's, or that cannot tell which they reach while the
    connection knows its own, are refused while it holds anything of its
    account (records, a sync position, webhook events waiting) or a sync of
    it is running: the next full pass would take the account's records for
    deleted, and changes waiting to be pushed would go to the other one. A
    connection that has not learnt its account yet (made before the hub kept
    it) learns it from its current credentials first; when those cannot tell
    either (revoked), nothing is known to compare with."""
    connection = await hub.db(find_connection, hub, organization_id, connection_id)
    if not changes.get("config") and not changes.get("credentials"):
        # Its name and schedule are the hub's own: they change with the plugin not loaded (an
        # operator pausing the sync of a connection whose plugin was uninstalled).
        return await asyncio.to_thread(_apply_update, hub, None, organization_id, connection_id, changes, None, None)
    provider = hub.provider(connection.provider)
    config, shaping = _changed_config(provider, connection, changes.get("config") or {})
    secrets = None
    if changes.get("credentials"):
        try:
            stored = hub.cipher.decrypt_json(connection.credentials_encrypted)
        except DecryptionError:
            # (The key that encrypted them is gone: complete new credentials replace them; the
            # check below names any field missing.)
            stored = {}
        # (An OAuth provider's connection made from typed credentials takes new ones; one made by
        # its authorization, holding a refresh token, does not: a refresh would replace them.)
        if not takes_typed_credentials(provider) or (provider.info.auth_type != "api_key"
                                                     and stored.get("refresh_token")):
            raise ValidationFailed(
                f"the credentials of a {provider.name} connection come from its {provider.info.auth_type} "
                f"authorization: connect again to change them", code="credentials_from_authorization")
        secrets = {**stored, **changes["credentials"]}
        _check_fields(provider, secrets, config if config is not None else connection.config or {},
                      config_types=False)  # (a config change was checked by _changed_config)
    tested, account, known = False, None, connection.provider_account
    if (shaping or secrets is not None) and provider.implements("test_connection"):
        candidate = connection.model_copy()
        if config is not None:
            candidate.config = config
        if secrets is not None:
            hub.store_credentials(candidate, Credentials(secrets=secrets))
        ctx = hub.context(provider, candidate)
        # Refused credentials are the caller's to fix: the connection keeps working with
        # its own, so its status must not become error (Hub.call marks the connection it names).
        ctx.connection_id = None
        tested, account = True, account_of(await hub.call(provider, "test_connection", ctx))
        if account is not None and known is None:
            known = await _current_account(hub, provider, connection)
    return await asyncio.to_thread(_apply_update, hub, provider, organization_id, connection_id, changes, config,
                                   secrets, (account, known) if tested else None)


def _tell(session: Any, connection: Connection, event_type: str) -> None:
    """Tell the app the connection was made or deleted, in that transaction."""
    emit(session, connection.organization_id, event_type,
         {"connection_id": connection.id, "provider": connection.provider, "name": connection.name,
          "status": connection.status})


def _tell_status(session: Any, connection: Connection, status: str) -> None:
    """Tell the app the connection's status becomes ``status`` (in the
    transaction that sets it), if that is a change from the status stored
    now (read under the row's lock: see :meth:`Hub.locked_status`)."""
    before = Hub.locked_status(session, connection.id)
    if before is not None:
        status_changed(session, organization_id=connection.organization_id, connection_id=connection.id,
                       provider=connection.provider, status=status, previous=before.status, last_error=None)


def public(hub: Hub, connections: list[Connection]) -> list[ConnectionPublic]:
    """The connections as the API shows them, with their open conflicts and
    last webhook delivery (one query, whatever their number);
    blocking: run it with ``hub.db``."""
    ids = [c.id for c in connections]
    if not ids:
        return []
    # One query, a lookup per connection in each index: the open conflicts' partial one, and the
    # newest end of (connection, received_at) (a GROUP BY read every event kept, tens of thousands).
    open_conflicts = (select(sa.func.count()).where(SyncConflict.connection_id == Connection.id,
                                                    SyncConflict.status == "open").scalar_subquery())
    last_webhook = (select(WebhookEvent.received_at).where(WebhookEvent.connection_id == Connection.id)
                    .order_by(WebhookEvent.received_at.desc()).limit(1).scalar_subquery())
    with hub.session() as session:
        found = {row[0]: (row[1], row[2]) for row in session.execute(
            sa.select(Connection.id, open_conflicts, last_webhook).where(Connection.id.in_(ids)))}
    return [ConnectionPublic.of(c, *found.get(c.id, (0, None))) for c in connections]


def public_one(hub: Hub, connection: Connection) -> ConnectionPublic:
    """:func:`public` of one connection."""
    return public(hub, [connection])[0]


def find_connection(hub: Hub, organization_id: str, connection_id: str) -> Connection:
    """The organization's connection (404 otherwise); blocking: run it with ``hub.db``."""
    with hub.session() as session:
        return hub.find_connection(session, organization_id, connection_id)


async def _current_account(hub: Hub, provider: Provider, connection: Connection) -> str | None:
    """The account the connection's current credentials reach, None if they
    cannot tell (refused already: the usual reason to send new ones)."""
    try:
        ctx = hub.context(provider, connection)  # (unreadable credentials cannot tell either)
        ctx.connection_id = None  # (their failing here is no news for the connection's status)
        return account_of(await hub.call(provider, "test_connection", ctx))
    except HubError:
        return None


def _holds_account_data(session: Any, connection_id: str) -> str | None:
    """What the connection keeps of its provider account, if anything:
    records, a sync position (a cursor means nothing at another account),
    webhook events still to apply, or a sync running with its current
    credentials (what it fetches is stored after the change)."""
    for table in (SyncRecord, SyncState):
        if session.exec(select(table.connection_id).where(table.connection_id == connection_id).limit(1)).first():
            return "records"
    if session.exec(select(WebhookEvent.id).where(WebhookEvent.connection_id == connection_id,
                                                  WebhookEvent.status == "pending").limit(1)).first():
        return "webhook events still to apply"
    if running(session, connection_id):
        return "a sync running"
    return None


def _check_account(session: Any, provider: Provider, connection: Connection, account: str | None,
                   known: str | None, what: str) -> None:
    """Refuse new credentials or config (``what``) reaching ``account`` when
    the connection is bound to another (see :func:`update_connection`)."""
    current = connection.provider_account or known
    if current is None or account == current:
        return
    held = _holds_account_data(session, connection.id)
    if held is None:
        return
    holding = f"this connection holds the records of {current}" if held == "records" else \
        f"this connection has {held} for {current}"
    if account is None:
        raise AccountMismatch(
            f"these {what} do not tell which {provider.info.label} account they reach, and {holding}: use "
            f"credentials that can tell (a key allowed to read the account), or delete this connection and "
            f"connect again", code="account_unverifiable", details={"account": None, "connected": current})
    raise AccountMismatch(
        f"these {what} reach {provider.info.label} account {account}, but {holding}: to switch accounts, "
        f"{'wait for it to end, or ' if held == 'a sync running' else ''}delete this connection and connect again",
        details={"account": account, "connected": current})


def _apply_update(hub: Hub, provider: Provider | None, organization_id: str, connection_id: str,
                  changes: dict[str, Any], config: dict[str, Any] | None, secrets: dict[str, Any] | None,
                  tested_account: tuple[str | None, str | None] | None = None) -> Connection:
    """``tested_account``: ``(account, known)`` when the change was tested,
    the account it reaches and the one the connection's current credentials
    reach (learnt for a connection that did not know it)."""
    with hub.session() as session:
        # Under the connection's lock, as the row is now: two PUTs at once decide one after the other,
        # and a sync may have stored its first records meanwhile.
        lock(session, f"connection/{connection_id}")
        connection = hub.find_connection(session, organization_id, connection_id)
        if tested_account is not None:
            account, known = tested_account
            assert provider is not None
            _check_account(session, provider, connection, account, known,
                           "credentials" if secrets is not None else "settings")
            connection.provider_account = account  # (None: the new ones cannot tell, and nothing is held)
        schedule = connection.sync_enabled, connection.sync_frequency_minutes
        for key in ("name", "description", "sync_enabled", "sync_frequency_minutes"):
            if key in changes and changes[key] is not None:
                setattr(connection, key, changes[key])
        if config is not None and provider is not None:
            connection.config = config
            if provider.info.webhook_key_config:  # the account its deliveries name follows the config
                connection.webhook_key = _webhook_key(provider, config)
        if secrets is not None:
            hub.store_credentials(connection, Credentials(secrets=secrets))
            _tell_status(session, connection, "connected")
            connection.status = "connected"
            connection.last_error = connection.warning = None
        if (connection.sync_enabled, connection.sync_frequency_minutes) != schedule:  # (the same sent again: kept)
            was_on, old_minutes = schedule
            connection.next_sync_at = rescheduled(
                connection.next_sync_at, old_minutes if was_on else None,
                connection.sync_frequency_minutes if connection.sync_enabled else None, connection.last_sync_at)
        connection.updated_at = utcnow()
        session.add(connection)
        session.commit()
        session.refresh(connection)
        return connection


def _changed_config(provider: Provider, connection: Connection,
                    change: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """The configuration after ``change`` merged in (None: unchanged), and
    whether a declared field changed. Of the provider's declared fields (those
    that shape its requests: the shop, the environment) only writable ones
    change, and on an OAuth or Link connection none; other keys are the
    tenant's own notes."""
    if not change:
        return None, False
    declared = {f.name: f for f in provider.info.config_fields}
    _check_types(provider.info.config_fields, change, "config field(s)")
    current = dict(connection.config or {})
    changed = sorted(k for k, v in change.items() if current.get(k) != v)
    bound = [k for k in changed if k in declared and (declared[k].readonly or provider.info.auth_type != "api_key")]
    if bound:
        raise ValidationFailed(
            f"{', '.join(bound)} of a {provider.name} connection {'is' if len(bound) == 1 else 'are'} set by its "
            f"authorization: connect again to change {'it' if len(bound) == 1 else 'them'}",
            code="config_from_authorization", details={"fields": bound}, fields=bound)
    return ({**current, **change} if changed else None), any(k in declared for k in changed)


async def test_connection(hub: Hub, organization_id: str, connection_id: str,
                          renewed: bool = False) -> tuple[Connection, dict[str, Any]]:
    """Test the connection with the provider: ``connected`` when it passes.

    ``renewed``: its user has just authorized again (a Link update-mode
    repair), which also ends the connection's ``warning`` when it passes."""
    connection = await hub.db(find_connection, hub, organization_id, connection_id)
    provider = hub.provider(connection.provider)
    ctx = hub.context(provider, connection)
    try:
        details = await hub.call(provider, "test_connection", ctx) or {}
    except (AuthFailed, ProviderUnavailable, RateLimited):
        # (Unavailable or rate limited: passing, at the provider or the bank behind it; the
        # connection is no worse for it, and a working one would stay in error.)
        raise
    except HubError as exc:
        await asyncio.to_thread(hub.mark, connection.id, "error", exc.message)
        raise
    await asyncio.to_thread(hub.mark, connection.id, "connected", None, renewed=renewed)
    if connection.provider_account is None and (account := account_of(details)) is not None:
        await asyncio.to_thread(_learn_account, hub, connection.id, account)
    return await hub.db(find_connection, hub, organization_id, connection_id), details


def _learn_account(hub: Hub, connection_id: str, account: str) -> None:
    """Keep the account of a connection that did not know it yet (made before
    the hub kept it, or by an authorization): never replaces a known one."""
    with hub.session() as session:
        session.exec(sa.update(Connection).where(Connection.id == connection_id,
                                                 Connection.provider_account.is_(None))
                     .values(provider_account=account))
        session.commit()


async def revoke_unsaved(hub: Hub, provider: Provider, credentials: Credentials,
                         reached: Reached | None = None) -> None:
    """Give back a grant obtained for a connection that could not be saved
    (``connection_exists``, say): nobody would hold its token otherwise. Not
    when another connection uses the same account (revoking would cut it off),
    by its ``webhook_key`` or the account its test named (``reached``), nor
    when that account is unknown (a revocation may end the user's whole grant)."""
    if not provider.implements("disconnect"):
        return
    if not await hub.db(may_give_back, hub, provider.name, credentials, reached):
        return
    unsaved = Connection(organization_id="", provider=provider.name, category=provider.info.category,
                         name=provider.info.label)
    hub.store_credentials(unsaved, credentials)
    ctx = hub.context(provider, unsaved)
    ctx.connection_id = None  # nothing stored to mark
    try:
        await hub.call(provider, "disconnect", ctx)
    except HubError as exc:
        log.warning("giving back an unsaved %s grant failed: %s", provider.name, exc.message)
    finally:
        await hub.pool.discard(unsaved.id)


async def delete_connection(hub: Hub, organization_id: str, connection_id: str) -> str:
    """Delete the connection, then revoke it at the provider (``disconnect``).

    Returns what became of its grant: ``revoked``; ``pending`` (a passing
    failure, the plugin not loaded, its secrets unreadable: kept and tried
    again); ``refused`` (the provider would not, for good: already invalid);
    ``none`` (nothing to revoke: no ``disconnect``, or another connection
    shares the account).

    ``ctx.extra["account_shared"]`` tells the plugin whether another
    connection (of any organization) still uses the same account (its
    ``webhook_key``: the same shop or item): then it must revoke only what is
    this connection's own. Decided after the rows are gone, under a lock per
    account, so that of two connections deleted at once the last revokes.
    """
    connection = await hub.db(find_connection, hub, organization_id, connection_id)
    provider = hub.registry.providers.get(connection.provider)
    # Its credentials, read (and refreshed, if they expire soon) before its row goes.
    ctx = None
    unreadable = False
    if provider is not None and provider.implements("disconnect"):
        try:
            ctx = hub.context(provider, connection)
        except DecryptionError:
            unreadable = True  # kept below, to be revoked if the key that encrypted them comes back
    if ctx is not None and provider is not None:
        try:
            await hub._ensure_fresh(provider, ctx)
        except HubError as exc:
            log.warning("refreshing connection %s before revoking it failed: %s", connection.id, exc.message)
    entities = set(provider.schemas) if provider is not None else set()
    await asyncio.to_thread(_delete_rows, hub, organization_id, connection_id, entities)
    outcome = "none"
    try:
        if ctx is not None and provider is not None:
            outcome = await _disconnect(hub, provider, connection, ctx)
        elif provider is None and connection.credentials_encrypted:
            # Whether it has a grant to give back is the plugin's to say: kept until it is loaded again.
            log.warning("connection %s was deleted while the %s plugin is not loaded: its grant is kept, to be "
                        "revoked once the plugin is", connection.id, connection.provider)
            await asyncio.to_thread(_keep_for_later, hub, connection, None,
                                    f"the {connection.provider} plugin is not loaded")
            outcome = "pending"
        elif unreadable:
            log.warning("connection %s was deleted with credentials this hub's secret key cannot decrypt: its "
                        "grant is kept, to be revoked if HUB_PREVIOUS_SECRET_KEY gives that key", connection.id)
            await asyncio.to_thread(_keep_for_later, hub, connection, None, "credentials unreadable")
            outcome = "pending"
    finally:
        await hub.pool.discard(connection_id)
    return outcome


def may_give_back(hub: Hub, provider: str, credentials: Credentials, reached: Reached | None) -> bool:
    """Whether a grant nobody here holds may be revoked: not while a connection
    uses its account (by its ``webhook_key``, or the account its test named:
    revoking could end that connection's grant too), nor when which account
    it reaches is unknown."""
    if credentials.webhook_key and _account_in_use(hub, provider, credentials.webhook_key):
        return False
    return reached is None or (reached.failure is None and not (
        reached.account is not None and _account_in_use(hub, provider, None, reached.account)))


def _account_in_use(hub: Hub, provider: str, webhook_key: str | None, account: str | None = None) -> bool:
    """Whether a connection of ``provider`` uses the account ``webhook_key``
    names (a shop, an item), or whose test named ``account``."""
    column, value = (Connection.webhook_key, webhook_key) if webhook_key else (Connection.provider_account, account)
    with hub.session() as session:
        return session.exec(select(Connection.id).where(
            Connection.provider == provider, column == value).limit(1)).first() is not None


#: Revocations tried again at most this often, and given up after this many attempts (about a week).
REVOCATION_BACKOFF_MAX = timedelta(hours=6)
REVOCATION_ATTEMPTS = 40


async def _disconnect(hub: Hub, provider: Provider, connection: Connection, ctx: Any) -> str:
    """Revoke at the provider; a passing failure (the provider down, a 429)
    leaves a :class:`PendingRevocation` that :func:`retry_revocations` tries
    again. Returns the outcome (see :func:`delete_connection`)."""
    try:
        return "revoked" if await _revoke(hub, provider, connection.webhook_key, ctx) else "none"
    except (AuthFailed, NotFound, ValidationFailed, PermissionDenied) as exc:
        # Refused for good (the grant is already invalid, the item gone), as retry_revocations judges.
        log.warning("revoking connection %s at %s failed: %s", connection.id, connection.provider, exc.message)
        return "refused"
    except HubError as exc:  # passing, or not known to be final (an odd answer): tried again
        log.warning("revoking connection %s at %s failed (%s): it will be tried again", connection.id,
                    connection.provider, exc.message)
        await asyncio.to_thread(_keep_for_later, hub, connection, ctx, exc.message)
        return "pending"


async def _revoke(hub: Hub, provider: Provider, key: str | None, ctx: Any) -> bool:
    """``disconnect``, under the account's lock; whether it revoked something."""
    lock = hub.shared_lock(f"account:{provider.name}:{key}") if key else contextlib.nullcontext()
    async with lock:
        ctx.extra["account_shared"] = bool(key) and await hub.db(_account_in_use, hub, provider.name, key)
        return bool(await hub.call(provider, "disconnect", ctx))


def _keep_for_later(hub: Hub, connection: Connection, ctx: Any, error: str) -> None:
    """A :class:`PendingRevocation` of the connection's grant: the credentials
    of ``ctx`` (refreshed, maybe), or without one those stored as they are."""
    with hub.session() as session:
        session.add(PendingRevocation(
            connection_id=connection.id, organization_id=connection.organization_id, provider=connection.provider,
            webhook_key=connection.webhook_key, config=dict(connection.config or {}),
            credentials_encrypted=(hub.cipher.encrypt_json(ctx.credentials) if ctx is not None
                                   else connection.credentials_encrypted),
            token_expires_at=ctx.extra.get("token_expires_at") if ctx is not None else connection.token_expires_at,
            last_error=error[:2000],
            attempts=1, next_attempt_at=utcnow() + _revocation_delay(1)))
        session.commit()


def _revocation_delay(attempts: int) -> timedelta:
    return min(REVOCATION_BACKOFF_MAX, timedelta(minutes=2 ** min(attempts, 10)))


async def retry_revocations(hub: Hub, now: Any = None, limit: int = 20) -> int:
    """Try again the revocations that are due; returns how many were settled
    (revoked, found invalid already, or the account used by a connection
    again). One failing for a passing reason waits longer each time, and is
    given up (logged) after :data:`REVOCATION_ATTEMPTS` attempts. Each row is
    claimed just before it is tried: two schedulers never revoke the same
    grant twice."""
    now = now or utcnow()
    settled = 0
    for pending in await asyncio.to_thread(_due_revocations, hub, now, limit):
        if not await asyncio.to_thread(_claim_revocation, hub, pending, now):
            continue
        provider = hub.registry.providers.get(pending.provider)
        error: str | None = None
        kept: tuple[dict[str, Any], Any] | None = None
        if provider is None:
            error = f"the {pending.provider} plugin is not installed"  # it may come back
        elif provider.implements("disconnect"):
            unsaved = Connection(organization_id=pending.organization_id, provider=pending.provider,
                                 category=provider.info.category, name=provider.info.label,
                                 config=dict(pending.config or {}), webhook_key=pending.webhook_key,
                                 credentials_encrypted=pending.credentials_encrypted,
                                 token_expires_at=pending.token_expires_at)
            try:
                ctx = hub.context(provider, unsaved)
            except DecryptionError as exc:  # its key may come back (HUB_PREVIOUS_SECRET_KEY): tried again
                ctx, error = None, exc.message
            if ctx is not None:
                ctx.connection_id = None  # nothing stored to mark; a refresh stays in memory
                try:
                    await hub._ensure_fresh(provider, ctx)
                    await _revoke(hub, provider, pending.webhook_key, ctx)
                except (AuthFailed, NotFound, ValidationFailed, PermissionDenied) as exc:
                    log.info("the %s grant of deleted connection %s is not valid any more: %s", pending.provider,
                             pending.connection_id, exc.message)
                except Exception as exc:  # the provider down, a 429, a plugin failing: try again later
                    error = exc.message if isinstance(exc, HubError) else f"{type(exc).__name__} in the plugin"
                finally:
                    await hub.pool.discard(unsaved.id)
                # A refresh made for it rotated the grant's tokens: the ones kept must be the new ones.
                kept = (ctx.credentials, ctx.extra.get("token_expires_at"))
        await asyncio.to_thread(_after_retry, hub, pending.id, error, now, kept)
        settled += error is None
    return settled


#: How long a claimed revocation is someone's: a scheduler that stops in the middle leaves it that long.
REVOCATION_CLAIM = timedelta(minutes=10)


def _due_revocations(hub: Hub, now: Any, limit: int) -> list[PendingRevocation]:
    with hub.session() as session:
        return list(session.exec(select(PendingRevocation).where(PendingRevocation.next_attempt_at <= now)
                                 .order_by(PendingRevocation.next_attempt_at).limit(limit)))


def _claim_revocation(hub: Hub, pending: PendingRevocation, now: Any) -> bool:
    with hub.session() as session:
        taken = session.execute(sa.update(PendingRevocation).where(
            PendingRevocation.id == pending.id, PendingRevocation.next_attempt_at == pending.next_attempt_at)
            .values(next_attempt_at=now + REVOCATION_CLAIM))
        session.commit()
    return taken.rowcount == 1


def _after_retry(hub: Hub, pending_id: str, error: str | None, now: Any,
                 kept: tuple[dict[str, Any], Any] | None = None) -> None:
    with hub.session() as session:
        pending = session.get(PendingRevocation, pending_id)
        if pending is None:
            return
        if error is None:
            session.delete(pending)
        elif pending.attempts + 1 >= REVOCATION_ATTEMPTS:
            log.error("giving up revoking the %s grant of deleted connection %s after %d attempts: %s",
                      pending.provider, pending.connection_id, pending.attempts + 1, error)
            session.delete(pending)
        else:
            pending.attempts += 1
            pending.last_error = error[:2000]
            pending.next_attempt_at = now + _revocation_delay(pending.attempts)
            if kept is not None:
                pending.credentials_encrypted = hub.cipher.encrypt_json(kept[0])
                pending.token_expires_at = kept[1]
            session.add(pending)
        session.commit()


def _delete_rows(hub: Hub, organization_id: str, connection_id: str, entities: set[str]) -> None:
    from hub.models import SyncConfig, SyncRun
    from hub.sync.store import entity_key, lock

    with hub.session() as session:
        entities |= {c.entity for c in session.exec(select(SyncConfig).where(SyncConfig.connection_id == connection_id))}
        # After the transactions writing its records (a pull's pages) end, and before the next:
        # deleting under one deadlocks on PostgreSQL over the rows both hold.
        lock(session, *(entity_key(connection_id, entity) for entity in entities))
        connection = hub.find_connection(session, organization_id, connection_id)
        # Its runs before it, in the order a run's end updates them (the run, then the
        # connection), rather than by the cascade after it: the other order deadlocks with it.
        session.execute(sa.delete(SyncRun).where(SyncRun.connection_id == connection_id))
        _delete_dependents(session, connection.id)
        session.delete(connection)
        _tell(session, connection, "connection.deleted")
        session.commit()


def _delete_dependents(session: Any, connection_id: str) -> None:
    from hub.models import WebhookEvent

    for event in session.exec(select(WebhookEvent).where(WebhookEvent.connection_id == connection_id)):
        session.delete(event)


#: After a grant renewal that failed for a passing reason (the provider down, a 429), or that
#: left the grant as it was (a plugin keeping lasting tokens), the connection waits this long.
RENEWAL_RETRY = timedelta(hours=1)
RENEWAL_UNCHANGED = timedelta(days=1)
#: Connection id -> when the grant upkeep may try it again (this process's; see renew_grants).
_renewal_wait: dict[str, Any] = {}


async def renew_grants(hub: Hub, now: Any = None, limit: int = 50) -> int:
    """Refresh the grants that would lapse without a call to the provider:
    a connection whose refresh token expires within ``HUB_GRANT_RENEWAL_DAYS``
    (``refresh_expires_at``: Shopify's 90 days, renewed at each refresh), and
    one holding a token that never expires of a provider retiring such tokens
    (``ProviderInfo.lasting_tokens_until``: the plugin exchanges it for an
    expiring grant). Returns how many were refreshed.

    Connections ``connected`` or in ``error`` (their grant may be fine) are
    renewed, through the same locked refresh as a call's; one the provider
    refuses becomes ``expired``, as at any refresh. Two processes renewing
    at once refresh once: the second finds the grant renewed. A connection
    renewed, or left as it was, waits a day before this process tries it
    again (an hour after a passing failure)."""
    now = now or utcnow()
    for connection_id in [k for k, until in _renewal_wait.items() if until <= now]:
        del _renewal_wait[connection_id]
    renewed = 0
    for connection in await asyncio.to_thread(_grants_to_renew, hub, now, limit):
        provider = hub.registry.providers[connection.provider]
        try:
            ctx = hub.context(provider, connection)
        except DecryptionError as exc:
            log.warning("grant of connection %s not renewed: %s", connection.id, exc.message)
            _renewal_wait[connection.id] = now + RENEWAL_UNCHANGED
            continue
        lasting = connection.refresh_expires_at is None
        if lasting and ctx.credentials.get("refresh_token"):
            _renewal_wait[connection.id] = now + RENEWAL_UNCHANGED  # refreshable: not a lasting token
            continue
        try:
            await hub._refresh(provider, ctx, force=True)
        except AuthFailed as exc:  # (the connection is marked expired, or in error, with the reason)
            log.info("grant of connection %s could not be renewed: %s", connection.id, exc.message)
            _renewal_wait[connection.id] = now + RENEWAL_RETRY  # (in error, a frozen shop: not at every pass)
            continue
        except Exception as exc:  # the provider down, a 429, a plugin failing: tried again later
            log.warning("grant of connection %s not renewed, tried again in an hour: %s", connection.id,
                        exc.message if isinstance(exc, HubError) else f"{type(exc).__name__} in the plugin")
            _renewal_wait[connection.id] = now + RENEWAL_RETRY
            continue
        if lasting and ctx.extra.get("token_expires_at") is None and not ctx.credentials.get("refresh_token"):
            _renewal_wait[connection.id] = now + RENEWAL_UNCHANGED  # the plugin kept it lasting
            continue
        log.info("renewed the %s grant of connection %s", connection.provider, connection.id)
        # (A grant the refresh did not extend, of a fixed lifetime, is not refreshed at every pass.)
        _renewal_wait[connection.id] = now + RENEWAL_UNCHANGED
        renewed += 1
    return renewed


def _grants_to_renew(hub: Hub, now: Any, limit: int) -> list[Connection]:
    providers = [name for name, provider in hub.registry.providers.items()
                 if provider.implements("refresh_credentials")]
    if not providers:
        return []
    lasting = [name for name in providers if hub.registry.providers[name].info.lasting_tokens_until is not None]
    due = sa.and_(Connection.refresh_expires_at <= now + timedelta(days=hub.settings.grant_renewal_days),
                  Connection.status.in_(("connected", "error")))
    if lasting:
        # (In error too: a call with the old token after an exchange whose answer was lost.)
        due = sa.or_(due, sa.and_(Connection.provider.in_(lasting), Connection.token_expires_at.is_(None),
                                  Connection.refresh_expires_at.is_(None),
                                  Connection.status.in_(("connected", "error"))))
    waiting = list(_renewal_wait)
    with hub.session() as session:
        return list(session.exec(select(Connection).where(
            Connection.provider.in_(providers),
            Connection.credentials_encrypted.is_not(None), due,
            *([Connection.id.not_in(waiting)] if waiting else []),
            # The soonest to lapse first, tokens that never expire last (on both databases).
        ).order_by(Connection.refresh_expires_at.is_(None), Connection.refresh_expires_at).limit(limit)))
