"""The running hub: settings, database, cipher, plugins and HTTP pool together,
and the one place that builds provider contexts and calls provider hooks."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
import dataclasses
import fcntl
import hashlib
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import Session, select

from hub.config import Settings, SettingsError, is_http_url
from hub.context import ProviderContext
from hub.crypto import Cipher, DecryptionError, mask
from hub.db import make_engine, migrate
from hub.http import NOT_SENT, Allocation, ClientPool, ProviderHTTP, RetryPolicy
from hub.models import SEALED_COLUMNS, Connection, SecretKeyCheck, utcnow
from hub.plugins import PluginRegistry, Provider
from hub.types import (
    AuthFailed,
    ConfigurationError,
    Credentials,
    EntitySchema,
    HubError,
    NotFound,
    Page,
    PartialRecord,
    PermissionDenied,
    ProviderError,
    ProviderInfo,
    ProviderUnavailable,
    RateLimit,
    RequestAuth,
    ValidationFailed,
)

log = logging.getLogger("hub.runtime")

#: What the hooks called for a connection must return (hub/hookspecs.py).
HOOK_RESULTS: dict[str, type | tuple[type, ...]] = {
    "list_records": Page,
    "get_record": dict,
    "create_record": dict,
    "update_record": dict,
    "test_connection": (dict, type(None)),
    "refresh_credentials": Credentials,
    "account_fields": (list, tuple, type(None)),
}

def page_problem(page: Page) -> str | None:
    """What is wrong with a ``Page`` a plugin returned, or None: its records
    must be a list of objects, its ``deleted_ids`` a list of ids (text or
    numbers) and its cursors text."""
    if not isinstance(page.records, list):
        return f"records are {type(page.records).__name__}, not a list"
    odd = [type(r).__name__ for r in page.records if not isinstance(r, dict)]
    if odd:
        return f"records hold {odd[0]} where records (objects) belong"
    if not isinstance(page.deleted_ids, (list, tuple)) or any(
            isinstance(i, bool) or not isinstance(i, (str, int)) for i in page.deleted_ids):
        return "deleted_ids are not a list of ids"
    if not all(c is None or isinstance(c, str) for c in (page.next_cursor, page.watermark)):
        return "next_cursor or watermark is not text"
    return None


SECRET_HINT_KEYS = ("api_key", "secret_key", "access_token", "token")


#: Credential names of OAuth tokens: when the stored ones differ from a call's, another caller refreshed.
_TOKEN_KEYS = ("access_token", "refresh_token")

#: Hooks that change the provider's data.
WRITE_HOOKS = frozenset(("create_record", "update_record", "delete_record", "run_action"))

#: The bucket of a provider that declares no rate limit: it never paces.
UNPACED = RateLimit(requests_per_second=1e9, burst=10**9)


class Hub:
    """Everything a request handler, the scheduler or the CLI needs."""

    def __init__(self, settings: Settings, registry: PluginRegistry | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self.engine = make_engine(settings.resolved_database_url)
        #: Whether this start made the data directory's secret.key (checked against the database's key
        #: by :meth:`migrate`).
        self.made_secret_key = False
        if not settings.secret_key:
            settings.ensure_data_dir()  # (secret.key is there)
            self._refuse_a_new_key_for_old_secrets()
            self.made_secret_key = not (settings.data_dir / "secret.key").exists()
        try:
            self.cipher = Cipher.from_settings(settings.secret_key, settings.data_dir, settings.previous_secret_key)
        except OSError as exc:
            raise SettingsError(f"HUB_DATA_DIR={settings.data_dir}: cannot read or create its secret.key "
                                f"({exc.strerror or exc}); or set HUB_SECRET_KEY") from None
        self.registry = registry if registry is not None else PluginRegistry.from_environment()
        self.pool = ClientPool(
            transport=transport,
            timeout=httpx.Timeout(settings.http_timeout_seconds, connect=min(10.0, settings.http_timeout_seconds)),
            retry=RetryPolicy(attempts=settings.http_retry_attempts, base_delay=settings.http_retry_base_delay,
                              deadline=settings.http_deadline_seconds,
                              max_response_bytes=settings.http_max_response_bytes))
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_slots: tuple[Any, asyncio.Semaphore] | None = None
        self._provider_settings: dict[str, dict[str, str]] = {}
        # Refreshes whose callers were cancelled still run to their save; close() waits for them.
        self._refreshes: set[asyncio.Future[bool]] = set()
        #: Provider pages being handed out in slices (hub.services.records), newest last.
        self.slice_pages: OrderedDict[tuple, tuple[float, Page]] = OrderedDict()

    def _refuse_a_new_key_for_old_secrets(self) -> None:
        """A missing ``secret.key`` is made anew on first run; made anew beside a
        database of secrets it did not encrypt (the file lost, another machine
        on the same PostgreSQL), it would leave every credential unreadable."""
        path = self.settings.data_dir / "secret.key"
        if path.exists():
            return
        try:
            with self.engine.connect() as connection:
                held = connection.execute(sa.text(
                    "SELECT count(*) FROM connections WHERE credentials_encrypted IS NOT NULL")).scalar()
        except sa.exc.SQLAlchemyError:
            return  # (no database yet, or not reachable: the next step says so)
        if held:
            raise SettingsError(
                f"HUB_DATA_DIR={self.settings.data_dir} has no secret.key, but the database holds {held} "
                f"connection{'s' if held != 1 else ''} whose credentials a secret key encrypted: restore secret.key "
                f"from a backup (or from the machine that made them), or set HUB_SECRET_KEY to that key. A new "
                f"key would leave them unreadable")

    def migrate(self) -> None:
        """Bring the database's schema up to date, then check this process's
        secret key against the one the database's secrets are sealed with
        (:meth:`check_secret_key`)."""
        migrate(self.engine)
        self.check_secret_key()

    def check_secret_key(self) -> None:
        """Seal the key check with this process's key if the database has
        none yet (its first start), else open it.

        A key that cannot open it is not the one the other processes on this
        database use: what either seals, the other cannot open. A key this
        start made (no ``HUB_SECRET_KEY``, no ``secret.key``: two machines
        started together on a new PostgreSQL database) is removed and the
        start refused. Another (a key replaced on purpose after it was lost)
        is logged as an error: its connections say ``credentials_unreadable``
        until given their credentials again; ``hub reencrypt`` then seals the
        check with it.

        :raises SettingsError: this start made a key the database's is not.
        """
        check = _sealed_check(self.engine)
        if check is None:
            # (A database of a hub before the check: the key its secrets were sealed with is its key.)
            stored = _a_stored_secret(self.engine)
            if stored is None or self._opens(stored):
                _seal_check(self.engine, self.cipher.encrypt(SECRET_KEY_CHECK))
                check = _sealed_check(self.engine)  # (another start's, if it sealed first: that one stands)
        readable = check is not None and self._opens(check, SECRET_KEY_CHECK)
        if readable:
            return
        if self.made_secret_key:
            (self.settings.data_dir / "secret.key").unlink(missing_ok=True)
            raise SettingsError(
                f"HUB_DATA_DIR={self.settings.data_dir} had no secret.key, and the one this start made is not the "
                f"key of the other hub processes on this database (what one sealed, the other could not open): "
                f"copy their secret.key into this data directory, or set the same HUB_SECRET_KEY on every process")
        log.error("this process's secret key is not the one the database's secrets were sealed with: what it seals, "
                  "hub processes with that key cannot open. Set the same HUB_SECRET_KEY on every process (or "
                  "HUB_PREVIOUS_SECRET_KEY to the old one); if the old key is lost for good, give the connections "
                  "their credentials again and run `hub reencrypt`")

    def _opens(self, sealed: str, expected: str | None = None) -> bool:
        try:
            opened = self.cipher.decrypt(sealed)
        except DecryptionError:
            return False
        return expected is None or opened == expected

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    async def db(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` (blocking database work) for async code: in a worker
        thread on PostgreSQL, where a query is a network round trip that must
        not hold the event loop (and every request with it); inline on SQLite,
        whose queries run in-process, where the hop to a thread costs more
        than a read (WAL reads never wait for a writer)."""
        if self.engine.dialect.name == "sqlite":
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def close(self) -> None:
        """Close the HTTP pool, once the refreshes under way have saved what
        they got (the provider spent the old refresh token as it answered;
        a process ending before the save would lose the new one)."""
        pending = [task for task in self._refreshes if task.get_loop() is asyncio.get_running_loop()]
        if pending:
            await asyncio.wait(pending, timeout=REFRESH_CLOSE_WAIT_SECONDS)
        await self.pool.close()

    def provider(self, name: str) -> Provider:
        return self.registry.get(name)

    def provider_settings_problems(self) -> list[str]:
        """What is wrong with the loaded providers' settings the core reads
        (``HUB_<PROVIDER>_ORIGIN``, ``_REQUESTS_PER_SECOND``, ``_BURST``,
        ``_ALLOCATION_SHARE``...), a line each: found at start, rather than as
        a ``configuration_error`` (or an unreachable provider) at every call."""
        problems = []
        for name, provider in sorted(self.registry.providers.items()):
            settings, prefix = self.provider_settings(name), f"HUB_{name.upper()}_"
            origin = settings.get("origin")
            if origin and not is_http_url(origin):  # (empty: none, as ProviderContext.url reads it)
                problems.append(f"{prefix}ORIGIN={origin!r}: not an http:// or https:// URL (the provider's "
                                f"place: a fake server's, a proxy's)")
            try:
                for declared in (provider.info.rate_limit, provider.info.app_rate_limit):
                    effective_rate_limit(declared, settings)
                allocation_of(provider.info, settings)
            except ConfigurationError as exc:
                given = ", ".join(f"{prefix}{key.upper()}={settings[key]!r}" for key in (
                    "requests_per_second", "burst", "allocation_share", "allocation_wait_seconds") if key in settings)
                problems.append(f"{given}: {exc.message}")
        return problems

    def provider_settings(self, name: str) -> dict[str, str]:
        # Read from the environment once per provider: it is fixed at startup.
        cached = self._provider_settings.get(name)
        if cached is None:
            cached = self._provider_settings[name] = self.settings.provider_settings(name)
        return cached

    # -- contexts

    def webhook_url(self, provider: str, connection_id: str | None = None) -> str:
        url = f"{self.settings.public_url.rstrip('/')}/api/v1/integrations/webhooks/{provider}"
        return f"{url}?connection_id={connection_id}" if connection_id else url

    def app_context(self, provider: Provider, config: dict[str, Any] | None = None) -> ProviderContext:
        """A context with no connection yet (OAuth start, Link token, code exchange)."""
        ctx = ProviderContext(
            provider=provider.info, config=dict(config or {}), credentials={},
            settings=self.provider_settings(provider.name), http=None,  # type: ignore[arg-type]
            webhook_url=self.webhook_url(provider.name),
        )
        ctx.http = self._http(provider, f"app:{provider.name}", ctx, connection=None)
        return ctx

    def context(self, provider: Provider, connection: Connection) -> ProviderContext:
        ctx = ProviderContext(
            provider=provider.info,
            config=dict(connection.config or {}),
            credentials=self.cipher.decrypt_json(connection.credentials_encrypted),
            settings=self.provider_settings(provider.name),
            http=None,  # type: ignore[arg-type]
            connection_id=connection.id,
            webhook_url=self.webhook_url(provider.name, connection.id),
            account=connection.webhook_key or connection.provider_account,
        )
        ctx.extra["token_expires_at"] = connection.token_expires_at
        ctx.http = self._http(provider, connection.id, ctx, connection=connection)
        return ctx

    def _http(self, provider: Provider, key: str, ctx: ProviderContext,
              connection: Connection | None) -> ProviderHTTP:
        async def auth() -> RequestAuth:
            if connection is not None:
                await self._ensure_fresh(provider, ctx)
            if provider.implements("request_auth"):
                result = await provider.call("request_auth", ctx=ctx)
                if result is not None:
                    return result
            return RequestAuth()

        async def describe(response: httpx.Response) -> Any:
            if provider.implements("describe_error"):
                return await provider.call("describe_error", response=response, ctx=ctx)
            return None

        async def refresh() -> bool:
            if connection is None or not provider.implements("refresh_credentials"):
                return False
            if ctx.extra.get("refreshing"):
                return False  # a 401 from the token endpoint itself: the refresh failed
            if not ctx.credentials.get("refresh_token"):
                # Nothing to refresh with; but the grant may have been renewed since this call's
                # context was made (the grant upkeep exchanged a token that never expires).
                return await self._reload_renewed(ctx)
            return await self._refresh(provider, ctx, force=True)

        def rebase(url: str, config_before: Any) -> str:
            """``url``, built when the connection's config was ``config_before``,
            on its URLs as the config makes them now: a refresh that moved the
            provider's host (Salesforce's ``instance_url``) sends the call it
            retries there (whichever call's 401 made the refresh)."""
            if config_before is None or config_before == ctx.config:
                return url
            before = dataclasses.replace(ctx, config=config_before)
            for name in provider.info.urls:
                try:
                    old, new = before.url(name), ctx.url(name)
                except ConfigurationError:
                    continue
                if old != new and url.startswith(old):
                    return new + url[len(old):]
            return url

        declared = provider.info.rate_limit if connection is not None else provider.info.app_rate_limit
        rate_limit = effective_rate_limit(declared, ctx.settings)
        endpoint_limits = provider.info.endpoint_rate_limits if connection is not None else {}
        further = provider.info.rate_limits if connection is not None else ()
        if _off(ctx.settings.get("endpoint_rate_limits")):
            # The operator's account has other limits (or a test's fake has none).
            endpoint_limits = {}
            further = tuple(limit for limit in further if not limit.endpoint)
        if _off(ctx.settings.get("rate_limits")):
            further = ()
        # A provider limits calls per account (Shopify: per app and shop), which two organizations'
        # connections may share: they share its buckets, or together they would send twice its rate.
        # (A saved connection's: the account of one being created is what its user typed, untested.)
        # The account: as deliveries name it, else as the connection's test did (a provider without
        # webhooks: two organizations connecting one Xero tenant share its limits all the same).
        account = connection and (connection.webhook_key or connection.provider_account)
        shared = account and sa.inspect(connection).has_identity
        paced = f"account|{provider.name}|{account}" if shared else key
        if paced != key:
            self.pool.adopt(paced, key)
        limits = [(limit, self.pool.limiter(
            f"app|{provider.name}|limit{index}" if limit.scope == "app" else f"{paced}|limit{index}", limit))
            for index, limit in enumerate(further)]
        return ProviderHTTP(
            # A provider declaring no rate still gets a bucket (that never paces): it keeps the
            # refusal of a long limit (a daily quota) for the connection's next calls.
            self.pool.client(key), self.pool.limiter(paced, rate_limit or UNPACED),
            rate_limit, auth=auth, describe_error=describe, refresh=refresh,
            rebase=rebase, config_now=lambda: dict(ctx.config),
            retry=self.pool.retry, endpoint_limiters=self.pool.endpoint_limiters(paced, endpoint_limits),
            limits=limits,  # type: ignore[arg-type]
            concurrency=self.pool.concurrency(paced, provider.info.max_concurrent_requests)
            if connection is not None else None,
            allocation=allocation_of(provider.info, ctx.settings) if connection is not None else None,
            unmetered=_unmetered_urls(provider.info, ctx),
            traces_sending=self.pool.traces_sending,
        )

    # -- token refresh

    def lock(self, connection_id: str) -> asyncio.Lock:
        lock = self._locks.get(connection_id)
        if lock is None:
            lock = self._locks[connection_id] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def shared_lock(self, name: str, timeout: float = 60.0) -> AsyncIterator[None]:
        """A lock held by one hub process at a time (API replicas, workers,
        ``hub sync``): a PostgreSQL advisory lock, or a lock file beside the
        SQLite database. Waits without blocking the event loop.

        :raises ProviderUnavailable: another process held it past ``timeout``.
        """
        deadline = time.monotonic() + timeout

        async def wait() -> None:
            if time.monotonic() > deadline:
                raise ProviderUnavailable(f"timed out waiting for another hub process ({name})")
            await asyncio.sleep(0.05)

        if self.engine.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            # The lock is a session's: it holds a pooled connection until released. Taken and
            # given back in a thread (a pool run dry must not stop the event loop), and by at
            # most SHARED_LOCK_SLOTS holders at once, so that what they do meanwhile still
            # finds connections in the pool.
            async with self._shared_lock_slots():
                db = await asyncio.to_thread(self.engine.connect)
                try:
                    while not await asyncio.to_thread(_try_advisory_lock, db, key):
                        await wait()
                    try:
                        yield
                    finally:
                        await asyncio.to_thread(_advisory_unlock, db, key)
                finally:
                    await asyncio.to_thread(db.close)
            return
        database = self.engine.url.database
        directory = Path(database).parent if database and database != ":memory:" else self.settings.data_dir
        directory = directory / "locks"
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock"), "w") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await wait()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _shared_lock_slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._lock_slots is None or self._lock_slots[0] is not loop:  # (one per event loop: hub sync runs several)
            self._lock_slots = (loop, asyncio.Semaphore(SHARED_LOCK_SLOTS))
        return self._lock_slots[1]

    async def _ensure_fresh(self, provider: Provider, ctx: ProviderContext) -> None:
        expires_at = ctx.extra.get("token_expires_at")
        if expires_at is None or not provider.implements("refresh_credentials"):
            return
        if expires_at - timedelta(seconds=self.settings.refresh_margin_seconds) > utcnow():
            return
        await self._refresh(provider, ctx, force=False)

    async def _refresh(self, provider: Provider, ctx: ProviderContext, force: bool) -> bool:
        """Refresh once under the connection's locks (this process's, then the
        one shared by every hub process on the database); persist with
        compare-and-swap. A grant no connection stores (one being given back)
        is refreshed in memory only."""
        if not ctx.connection_id:
            return await self._refresh_unsaved(provider, ctx)
        # Shielded: a caller cancelled while the provider answers (a run stopped, a prefetch
        # dropped) must not lose the rotated refresh token, which the provider already spent.
        refreshing = asyncio.ensure_future(self._refresh_saved(provider, ctx, force))
        self._refreshes.add(refreshing)
        refreshing.add_done_callback(self._refreshes.discard)
        refreshing.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(refreshing)

    async def _refresh_saved(self, provider: Provider, ctx: ProviderContext, force: bool) -> bool:
        assert ctx.connection_id is not None
        async with self.lock(ctx.connection_id), self.shared_lock(f"refresh:{ctx.connection_id}"):
            current = await asyncio.to_thread(self._stored_connection, ctx.connection_id)
            if current is None:
                return False
            stored = self.cipher.decrypt_json(current.credentials_encrypted)
            stored_expiry = current.token_expires_at
            seen_expiry = ctx.extra.get("token_expires_at")
            # Tokens other than those this call holds: another caller refreshed meanwhile. (Not
            # the expiry alone: a provider giving none leaves it None before and after.)
            renewed = stored_expiry != seen_expiry or any(
                stored.get(key) != ctx.credentials.get(key) for key in _TOKEN_KEYS)
            if renewed or (
                not force and stored_expiry
                and stored_expiry - timedelta(seconds=self.settings.refresh_margin_seconds) > utcnow()
            ):
                ctx.credentials = stored
                ctx.config = {**ctx.config, **(current.config or {})}
                ctx.extra["token_expires_at"] = stored_expiry
                return True
            # The stored secrets are the base: one registered since this call began (a webhook
            # secret) is kept.
            ctx.credentials = stored
            version = current.credentials_version
            # No recursion through ctx.http while refreshing: neither the expiry
            # check nor the retry-after-401 may refresh again under this lock.
            ctx.extra["token_expires_at"] = None
            ctx.extra["refreshing"] = True
            try:
                fresh: Credentials = await provider.call("refresh_credentials", ctx=ctx)
            except AuthFailed as exc:
                if not exc.account_refused:
                    raise await self._refresh_refused(ctx, exc, version) from None
                # The account is refused, not the grant (Shopify's frozen shop), which works again
                # once its owner acts: authorizing again would not help. The connection is in error
                # with the reason, its grant kept.
                await asyncio.to_thread(self.mark, ctx.connection_id, "error", exc.message)
                raise
            except (PermissionDenied, ValidationFailed, NotFound) as exc:
                raise await self._refresh_refused(ctx, exc, version) from None
            finally:
                ctx.extra["token_expires_at"] = seen_expiry
                ctx.extra["refreshing"] = False
            # What the token answer teaches of the config (Salesforce's instance_url, which may
            # move) is kept as the authorization's was (a value it leaves empty is not news).
            taught = {key: value for key, value in fresh.config.items() if value not in (None, "")}
            if not fresh.secrets and not taught and fresh.expires_at is None and fresh.refresh_expires_at is None:
                return False  # the plugin keeps the grant as it is (a token that never expires): nothing changes
            secrets, expires_at = await self._save_refreshed_surely(
                ctx.connection_id, version, {**ctx.credentials, **fresh.secrets}, fresh,
                {key: ctx.credentials.get(key) for key in _TOKEN_KEYS}, taught)
            if secrets is None:
                return False
            ctx.credentials = secrets
            ctx.config = {**ctx.config, **taught}
            ctx.extra["token_expires_at"] = expires_at
            return True

    async def _reload_renewed(self, ctx: ProviderContext) -> bool:
        """Take the stored tokens if they are not the ones ``ctx`` holds;
        whether it did. A context of no stored connection (credentials being
        tested before they are saved, a deleted connection's grant given
        back) has none to take: its 401 stands."""
        if ctx.connection_id is None:
            return False
        current = await asyncio.to_thread(self._stored_connection, ctx.connection_id)
        if current is None or not current.credentials_encrypted:
            return False
        stored = self.cipher.decrypt_json(current.credentials_encrypted)
        if all(stored.get(key) == ctx.credentials.get(key) for key in _TOKEN_KEYS):
            return False
        ctx.credentials = stored
        ctx.extra["token_expires_at"] = current.token_expires_at
        return True

    async def _refresh_refused(self, ctx: ProviderContext, exc: HubError, version: int | None = None) -> AuthFailed:
        """A refused refresh grant (OAuth's invalid_grant is a 400) means the user
        must authorize again: the connection is ``expired``, unless its grant
        was replaced since the refresh read it (``version``: the user authorized
        again meanwhile, and the provider revoked the old grant as it issued
        the new one): that grant is not the one refused."""
        message = f"token refresh refused: {exc.message}"
        assert ctx.connection_id is not None
        await asyncio.to_thread(self.mark, ctx.connection_id, "expired", message, credentials_version=version)
        return AuthFailed(message, code="token_refresh_failed")

    async def _save_refreshed_surely(self, connection_id: str, *args: Any) -> tuple[dict[str, Any] | None,
                                                                                     datetime | None]:
        """:meth:`_save_refreshed`, tried again while the database fails for a
        passing reason (SQLite's write lock held past its wait, a PostgreSQL
        connection dropped), still under the refresh's locks: the provider has
        spent the old refresh token, and the new one is in this memory only."""
        delays = REFRESH_SAVE_RETRY_DELAYS
        for attempt, delay in enumerate((*delays, None)):
            try:
                return await asyncio.to_thread(self._save_refreshed, connection_id, *args)
            except sa.exc.OperationalError as exc:
                if delay is None:
                    log.error("connection %s: the tokens a refresh got could not be saved after %d tries (%s): "
                              "the provider may have spent the stored refresh token, and the user may have to "
                              "authorize again", connection_id, attempt + 1, type(exc.orig).__name__)
                    raise
                log.warning("connection %s: saving the tokens a refresh got failed (%s): trying again in %.1f s",
                            connection_id, type(exc.orig).__name__, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _stored_connection(self, connection_id: str) -> Connection | None:
        with self.session() as session:
            return session.get(Connection, connection_id)

    def _save_refreshed(self, connection_id: str, version: int, secrets: dict[str, Any], fresh: Credentials,
                        refreshed_from: dict[str, Any], taught: dict[str, Any] | None = None,
                        ) -> tuple[dict[str, Any] | None, datetime | None]:
        """Store a refresh's tokens, compare-and-swap on the credentials'
        version; returns the credentials and expiry now in force (None: the
        connection is gone)."""
        for _attempt in range(3):
            with self.session() as session:
                from hub.events import status_changed
                from hub.sync.store import lock as serialise  # (it imports this module)

                # Under the connection's lock: a tenant's label set meanwhile (a PUT) stays, and the
                # status this makes ``connected`` is the one told to the app as replaced.
                serialise(session, f"connection/{connection_id}")
                before = self.locked_status(session, connection_id)
                config = None
                if taught:
                    # Merged over the row as it is now; unchanged, the config is not written.
                    stored_config = session.execute(sa.select(Connection.config).where(
                        Connection.id == connection_id)).scalar() or {}
                    config = {**stored_config, **taught} if any(
                        stored_config.get(k) != v for k, v in taught.items()) else None
                grant: dict[str, Any] = {}
                if fresh.refresh_expires_at is not None:
                    grant["refresh_expires_at"] = fresh.refresh_expires_at
                elif fresh.secrets.get("refresh_token") not in (None, refreshed_from.get("refresh_token")):
                    # A new refresh token whose lifetime the provider did not say: the old one's is not its.
                    grant["refresh_expires_at"] = None
                updated = session.execute(
                    sa.update(Connection)
                    .where(Connection.id == connection_id, Connection.credentials_version == version)
                    .values(
                        credentials_encrypted=self.cipher.encrypt_json(secrets),
                        credentials_version=version + 1,
                        token_expires_at=fresh.expires_at,
                        status="connected",
                        last_error=None,
                        updated_at=utcnow(),
                        **({"config": config} if config is not None else {}), **grant,
                    )
                )
                if updated.rowcount == 1 and before is not None:
                    status_changed(session, organization_id=before.organization_id, connection_id=connection_id,
                                   provider=before.provider, status="connected", previous=before.status,
                                   last_error=None)
                session.commit()
                if updated.rowcount == 1:
                    return secrets, fresh.expires_at
                # Written meanwhile by something other than a refresh (they hold the lock): the
                # provider's new tokens go over what is stored now, never dropped (a rotated
                # refresh token is the only one that still works).
                current = session.get(Connection, connection_id)
                if current is None:
                    return None, None
                stored = self.cipher.decrypt_json(current.credentials_encrypted)
                if any(stored.get(key) != value for key, value in refreshed_from.items()):
                    # Connected again meanwhile (a new grant): it stands; the old grant's new tokens
                    # are not written over it.
                    return stored, current.token_expires_at
                secrets = {**stored, **fresh.secrets}
                version = current.credentials_version
        log.warning("connection %s kept changing during refresh; its new tokens were not saved", connection_id)
        return secrets, fresh.expires_at

    async def _refresh_unsaved(self, provider: Provider, ctx: ProviderContext) -> bool:
        if ctx.extra.get("refreshing"):
            return False
        seen_expiry = ctx.extra.get("token_expires_at")
        ctx.extra["token_expires_at"], ctx.extra["refreshing"] = None, True
        try:
            fresh: Credentials = await provider.call("refresh_credentials", ctx=ctx)
        except (AuthFailed, PermissionDenied, ValidationFailed, NotFound) as exc:
            raise AuthFailed(f"token refresh refused: {exc.message}", code="token_refresh_failed") from None
        except BaseException:
            ctx.extra["token_expires_at"] = seen_expiry
            raise
        finally:
            ctx.extra["refreshing"] = False
        ctx.credentials = {**ctx.credentials, **fresh.secrets}
        ctx.extra["token_expires_at"] = fresh.expires_at
        return True

    # -- calling providers

    async def call(self, provider: Provider, hook: str, ctx: ProviderContext, **kwargs: Any) -> Any:
        """Call a provider hook, turning whatever goes wrong into a hub error.

        A result of the wrong type (:data:`HOOK_RESULTS`) is a ``ProviderError``
        naming the plugin and the hook, not a failure further on.

        An ``AuthFailed`` from a connection's call marks the connection ``error``.
        """
        try:
            result = await provider.call(hook, ctx=ctx, **kwargs)
        except AuthFailed as exc:
            # A refused refresh was marked where it was refused (``_refresh_refused``), or deliberately
            # not: the grant it refreshed had been replaced meanwhile, and the new one stands.
            if ctx.connection_id and exc.code != "token_refresh_failed":
                await asyncio.to_thread(self.mark, ctx.connection_id, "error", exc.message)
            raise
        except HubError:
            raise
        except httpx.HTTPError as exc:
            log.warning("provider %s %s: HTTP error %s", provider.name, hook, type(exc).__name__)
            # A plugin's own client failed: a write may have gone through unless it never left.
            raise ProviderUnavailable(f"provider {provider.name} unreachable: {type(exc).__name__}",
                                      maybe_applied=hook in WRITE_HOOKS and not isinstance(exc, NOT_SENT)) from None
        except Exception:
            log.exception("provider %s failed in %s", provider.name, hook)
            raise ProviderError(f"provider {provider.name} failed in {hook}") from None
        expected = HOOK_RESULTS.get(hook)
        if expected is not None and not isinstance(result, expected):
            if inspect.iscoroutine(result):
                result.close()  # an un-awaited call inside the hook
            wanted = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
            message = (f"provider {provider.name} returned {type(result).__name__} from {hook}, "
                       f"expected {wanted} (hub/hookspecs.py)")
            log.error(message)
            raise ProviderError(message)
        if hook == "list_records" and (problem := page_problem(result)):
            # (A provider's odd answer passed on as it came: a null list, a list of texts.)
            message = f"provider {provider.name} returned a {kwargs.get('entity')} page whose {problem}"
            log.error(message)
            raise ProviderError(message)
        if hook == "list_records" and len(result.records) > (kwargs.get("page_size") or len(result.records)):
            # Sync takes it whole; the records API hands it out in slices (fetching it again for
            # each): fine for a provider whose pages cannot be sized, costly for one that can.
            log.info("provider %s returned %d %s records for a page of %d", provider.name, len(result.records),
                     kwargs.get("entity"), kwargs["page_size"])
        if hook in ("create_record", "update_record"):
            schema = provider.schemas.get(kwargs.get("entity"))
            if schema is not None and schema.read_after_write:
                return await self._read_after_write(provider, ctx, schema, kwargs.get("record_id"), result)
        return result

    async def _read_after_write(self, provider: Provider, ctx: ProviderContext, schema: EntitySchema,
                                record_id: str | None, written: dict[str, Any]) -> dict[str, Any]:
        """The record a write made, read whole (``EntitySchema.read_after_write``),
        else the write's own answer (the write was made: see there)."""
        if record_id is None:
            record_id = written.get(schema.id_field)
            if not isinstance(record_id, (str, int)) or isinstance(record_id, bool) or record_id == "":
                message = (f"provider {provider.name} answered the creation of a {schema.name} record without "
                           f"its id at {schema.id_field!r}")
                log.error(message)
                raise ProviderError(message)
        try:
            return await self.call(provider, "get_record", ctx, entity=schema.name, record_id=str(record_id))
        except HubError as exc:
            log.warning("provider %s: the %s record %s was written, but reading it back failed (%s): the write's "
                        "answer stands", provider.name, schema.name, record_id, exc.code)
            return PartialRecord(written)

    def mark(self, connection_id: str, status: str, error: str | None, *, renewed: bool = False,
             credentials_version: int | None = None) -> None:
        """Set the connection's ``status`` and ``last_error``; ``renewed`` (its
        user has just authorized again) also ends its ``warning``. A change of
        status is told to the app (``connection.status_changed``, with the
        change)."""
        from hub.events import status_changed
        from hub.sync.store import lock

        values: dict[str, Any] = {"status": status, "last_error": (error or None) and error[:2000],
                                  "updated_at": utcnow()}
        if renewed:
            values["warning"] = None
        with self.session() as session:
            lock(session)  # (SQLite: the status read stays true until the write)
            before = self.locked_status(session, connection_id)
            if before is None:
                return  # (deleted meanwhile)
            if credentials_version is not None and session.execute(sa.select(Connection.credentials_version).where(
                    Connection.id == connection_id)).scalar() != credentials_version:
                return  # (about credentials replaced meanwhile: not the ones it holds now)
            session.execute(sa.update(Connection).where(Connection.id == connection_id).values(**values))
            status_changed(session, organization_id=before.organization_id, connection_id=connection_id,
                           provider=before.provider, status=status, previous=before.status,
                           last_error=values["last_error"])
            session.commit()

    @staticmethod
    def locked_status(session: Session, connection_id: str) -> Any:
        """The connection's ``status``, ``organization_id`` and ``provider``
        (None: it is gone), its row held until the transaction ends
        (PostgreSQL: ``FOR NO KEY UPDATE``, which inserts of its records do not
        wait for; SQLite: the caller's transaction holds the write lock, see
        :func:`hub.sync.store.lock`). A change of status is then told once,
        from the status it replaces."""
        query = sa.select(Connection.status, Connection.organization_id, Connection.provider).where(
            Connection.id == connection_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(key_share=True)
        return session.execute(query).first()

    # -- credentials

    def store_credentials(self, connection: Connection, credentials: Credentials) -> None:
        """Encrypt and attach credentials (and what they teach about config)."""
        connection.credentials_encrypted = self.cipher.encrypt_json(credentials.secrets)
        connection.credentials_hint = credential_hint(credentials.secrets)
        if sa.inspect(connection).persistent:
            # Counted in the UPDATE itself: a version another writer committed since this row was
            # read is not reused, so a compare-and-swap holding that version (a refresh) fails.
            connection.credentials_version = Connection.credentials_version + 1
        else:
            connection.credentials_version += 1
        connection.token_expires_at = credentials.expires_at
        connection.refresh_expires_at = credentials.refresh_expires_at
        connection.config = {**(connection.config or {}), **credentials.config}
        if credentials.webhook_key:
            connection.webhook_key = credentials.webhook_key

    def find_connection(self, session: Session, organization_id: str, connection_id: str) -> Connection:
        connection = session.exec(
            select(Connection).where(Connection.id == connection_id, Connection.organization_id == organization_id)
        ).first()
        if connection is None:
            raise NotFound("no such connection", code="connection_not_found")
        return connection


#: Shared (PostgreSQL advisory) locks one process holds at once; each holds a pooled connection.
SHARED_LOCK_SLOTS = 8


def _try_advisory_lock(db: sa.Connection, key: int) -> bool:
    taken = bool(db.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar())
    db.commit()  # (the session keeps the lock; no transaction stays open while it is held)
    return taken


def _advisory_unlock(db: sa.Connection, key: int) -> None:
    db.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    db.commit()


#: The text the key check seals.
SECRET_KEY_CHECK = "hub secret key check"


def _sealed_check(engine: sa.Engine) -> str | None:
    with Session(engine) as session:
        check = session.get(SecretKeyCheck, 1)
        return check.sealed if check is not None else None


def _a_stored_secret(engine: sa.Engine) -> str | None:
    """A secret the database holds sealed (``SEALED_COLUMNS``), if any: of
    each table, the row changed last where it says when (a connection given
    new credentials after a key was lost is under the key in use)."""
    with Session(engine) as session:
        for model, _key, column_name in SEALED_COLUMNS:
            column, newest = getattr(model, column_name), getattr(model, "updated_at", None)
            query = sa.select(column).where(column.is_not(None))
            found = session.execute((query.order_by(newest.desc()) if newest is not None else query).limit(1)).scalar()
            if found is not None:
                return found
    return None


def _seal_check(engine: sa.Engine, sealed: str) -> None:
    """Store the key check unless one is there (another process's first
    start sealed it meanwhile: that one stands)."""
    with Session(engine) as session:
        session.add(SecretKeyCheck(id=1, sealed=sealed))
        try:
            session.commit()
        except sa.exc.IntegrityError:
            session.rollback()


def _off(setting: str | None) -> bool:
    return (setting or "").lower() in ("off", "0", "false")


def _unmetered_urls(info: ProviderInfo, ctx: ProviderContext):
    """Whether a URL is under one of ``info.unmetered_urls`` (as the context
    makes them now: the operator's ``origin`` included), or None when the
    provider declares none."""
    if not info.unmetered_urls:
        return None

    def unmetered(url: str) -> bool:
        for name in info.unmetered_urls:
            try:
                base = ctx.url(name).rstrip("/")
            except ConfigurationError:
                continue
            if url == base or url.startswith((base + "/", base + "?")):
                return True
        return False

    return unmetered


#: Waits between tries to save a refresh's tokens when the database fails for a passing reason.
REFRESH_SAVE_RETRY_DELAYS = (0.2, 1.0, 3.0, 10.0)
#: How long closing waits for refreshes under way (their saves may be retried, above); within
#: the API's STOP_SECONDS for closing.
REFRESH_CLOSE_WAIT_SECONDS = 15.0
#: How long a connection's calls wait once its account's allocation is used up to the operator's share.
ALLOCATION_WAIT_SECONDS = 3600.0


def allocation_of(info: ProviderInfo, settings: dict[str, str]) -> Allocation | None:
    """The operator's cap on this hub's use of the account's allocation of
    calls (``ProviderInfo.allocation_header``): the setting
    ``allocation_share`` (``HUB_<PROVIDER>_ALLOCATION_SHARE``, a fraction
    above 0 and at most 1: ``0.8`` leaves a fifth to the account's other apps
    and people), for ``allocation_wait_seconds`` at a time (default an hour,
    as calls of a rolling day free up). None: no cap (the provider's own limit).

    :raises ConfigurationError: a share or wait that is not such a number.
    """
    share = settings.get("allocation_share")
    if not share or not info.allocation_header:
        return None
    try:
        fraction = float(share)
        wait = float(settings.get("allocation_wait_seconds") or ALLOCATION_WAIT_SECONDS)
    except ValueError:
        fraction = wait = math.nan
    if not (0 < fraction <= 1 and math.isfinite(wait) and wait > 0):
        raise ConfigurationError(f"HUB_{info.name.upper()}_ALLOCATION_SHARE must be a fraction above 0 and at most "
                                 f"1 (0.8: this hub uses at most 80% of the account's allocation), and "
                                 f"HUB_{info.name.upper()}_ALLOCATION_WAIT_SECONDS a number of seconds above 0")
    return Allocation(info.allocation_header, fraction, wait)


def effective_rate_limit(declared: RateLimit | None, settings: dict[str, str]) -> RateLimit | None:
    """The declared limit, unless the operator's plan differs: the provider
    settings ``requests_per_second`` and ``burst`` override it (Shopify Plus
    leaks 20/s, Stripe live mode allows 100/s). For a window
    (``RateLimit.per``), ``burst`` is its calls per window, and
    ``requests_per_second`` alone sets them to that rate times the window."""
    rate, burst = settings.get("requests_per_second"), settings.get("burst")
    if not rate and not burst:
        return declared
    try:
        base = declared or RateLimit(requests_per_second=float(rate or 1))
        limit = dataclasses.replace(
            base,
            requests_per_second=float(rate) if rate else base.requests_per_second,
            burst=int(burst) if burst else base.burst,
        )
        if base.window_seconds > 0 and rate and not burst:
            # A window (RateLimit.per) counts calls per window, its burst: the rate scales them
            # (else the operator's rate was dropped without a word: a review found it).
            # (Rounded down, past a float's error: 1.15 x 100 s is 115, not 114.)
            limit = dataclasses.replace(limit, burst=math.floor(float(rate) * base.window_seconds + 1e-9))
    except (ValueError, OverflowError):
        raise ConfigurationError("requests_per_second and burst settings must be numbers") from None
    # Zero divides the pace by nothing; below it, no request would ever be sent.
    if not (math.isfinite(limit.requests_per_second) and limit.requests_per_second > 0) or limit.burst < 1:
        raise ConfigurationError("requests_per_second must be a number above 0, and burst a whole number from 1 "
                                 "(for a limit of calls per window, requests_per_second times the window)")
    return limit


def credential_hint(secrets: dict[str, Any]) -> str | None:
    for key in SECRET_HINT_KEYS:
        if secrets.get(key):
            return mask(str(secrets[key]))
    return None


def next_sync(connection: Connection, now: datetime | None = None) -> datetime | None:
    if not connection.sync_enabled:
        return None
    return (now or datetime.now(timezone.utc)) + timedelta(minutes=connection.sync_frequency_minutes)


def rescheduled(next_at: datetime | None, old_minutes: int | None, new_minutes: int | None,
                last_at: datetime | None = None, now: datetime | None = None) -> datetime | None:
    """When a schedule whose period changed from ``old_minutes`` to
    ``new_minutes`` (None: off) runs next: a new period after its last
    scheduled time (``next_at`` less the old period), or, were it off, after
    ``last_at`` (the last sync); a new period from now when neither is known.
    A time already past is kept as it is: due at once (the scheduler's next
    tick), and the schedule's phase, which a second change counts from,
    stays. Only called on a change: re-sending the same settings must leave
    the schedule as it is."""
    if not new_minutes:
        return None
    now = now or datetime.now(timezone.utc)
    base = next_at - timedelta(minutes=old_minutes) if next_at is not None and old_minutes else last_at
    if base is None:
        return now + timedelta(minutes=new_minutes)
    return base + timedelta(minutes=new_minutes)
