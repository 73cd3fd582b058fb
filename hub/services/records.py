"""Record CRUD through a provider, with the schema's flags enforced."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from pydantic_core import to_jsonable_python
from sqlmodel import select

from hub.models import Connection, IdempotentCreate, utcnow
from hub.plugins import Provider
from hub.runtime import Hub
from hub.sync.leases import ACTIVE, new_owner, owner_alive
from hub.crypto import DecryptionError
from hub.sync.store import key_forgotten, kept_record, lock, may_have_applied, write_transaction
from hub.sync.stored import InvalidCursor, create_only_fields, settle_create_only
from hub.types import (AuthFailed, HubError, NotFound, Page, ProviderError, ProviderUnavailable, ReadOnly,
                       ValidationFailed)

log = logging.getLogger("hub.records")

MAX_PAGE_SIZE = 250
#: Provider pages handed out in slices kept at once (for ``slice_cache_seconds``), in each process.
SLICED_PAGES_KEPT = 64
#: ...and their records at most, together (pages whose records are many, or large, stay few).
SLICED_RECORDS_KEPT = 20_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: How long a create's idempotency key is kept (Stripe keeps its own as long).
IDEMPOTENCY_KEY_DAYS = 1
#: How long a key whose create got no answer (it may have been made) is kept.
UNSETTLED_KEY_DAYS = 30


def expired_keys(now: datetime) -> Any:
    """The ``IdempotentCreate`` rows past keeping: a settled create's (made,
    refused, or never sent) after its key's day; one that may have been made
    without an answer after :data:`UNSETTLED_KEY_DAYS` (purged sooner, a
    retry would go to the provider under a key it may have forgotten)."""
    return sa.or_(sa.and_(IdempotentCreate.status.in_(("done", "refused", "unsent")),
                          IdempotentCreate.created_at < now - timedelta(days=IDEMPOTENCY_KEY_DAYS)),
                  IdempotentCreate.created_at < now - timedelta(days=UNSETTLED_KEY_DAYS))
#: A create still marked under way after this is taken for abandoned, wherever its process ran.
SENDING_STALE = timedelta(minutes=15)


def _refused(exc: BaseException) -> bool:
    """Whether ``exc``'s create was refused, nothing made: the provider
    answered a 4xx (not one that says to wait or that its key is busy: 408,
    409, 425, 429), or the plugin raised such a refusal itself, before
    sending or from an answer it read (a QuickBooks Fault in a 200). Its key
    moves on, as a provider may keep a key's first outcome (Stripe keeps a
    refusal too)."""
    if not isinstance(exc, HubError) or isinstance(exc, AuthFailed):
        return False  # (refused credentials: the create itself was not reached, nor refused)
    status = exc.provider_status if exc.provider_status is not None else exc.status
    return 400 <= status < 500 and status not in (401, 408, 409, 425, 429)


class IdempotencyKeyInUse(HubError):
    """The first request with this key is still being sent."""

    code = "idempotency_key_in_use"
    status = 409
    retry_after = 1.0


class CreateOutcomeUnknown(HubError):
    """The first request with this key got no answer (or its hub stopped),
    and the provider cannot tell a create sent twice."""

    code = "create_outcome_unknown"
    status = 409


class RecordService:
    """CRUD on one connection's provider records."""

    def __init__(self, hub: Hub, connection: Connection):
        self.hub = hub
        self.connection = connection
        self.provider: Provider = hub.provider(connection.provider)
        self.ctx = hub.context(self.provider, connection)

    def _writable(self, entity: str, flag: str, verb: str) -> None:
        schema = self.provider.schema(entity)
        if not getattr(schema, flag):
            raise ReadOnly(f"{self.provider.name} does not allow {verb} {entity}")

    async def list(self, entity: str, cursor: str | None = None, page_size: int = 50,
                   filters: dict[str, str] | None = None, since: datetime | None = None) -> Page:
        """One page of ``entity``. ``cursor`` is a ``next_cursor`` or a
        ``watermark`` this method returned: the provider's position sealed with
        its entity, so that a cursor of another entity is refused instead of
        answered with a wrong page. A ``watermark`` (on a last page, where the
        provider has a resumable position: Plaid's) lists, later, what changed
        since that page, removals as ``deleted_ids``. ``since`` on an entity that cannot filter by it is refused
        rather than ignored (an unfiltered list would look filtered).

        :raises ValidationFailed: ``invalid_cursor``, ``since_not_supported``,
            ``unknown_filter`` (one the entity's schema does not declare),
            ``filters_not_supported`` (filters for a plugin whose
            ``list_records`` takes none).
        """
        schema = self.provider.schema(entity)
        if since is not None and not schema.supports_since:
            raise ValidationFailed(f"{self.provider.name} cannot list {entity} modified since a time",
                                   code="since_not_supported")
        if since is not None:
            since = since.replace(tzinfo=timezone.utc) if since.tzinfo is None else since
            try:
                since = since.astimezone(timezone.utc)
            except OverflowError:
                since = None
            if since is None or since < EPOCH:
                # Providers count time from 1970: a plugin's timestamp() of year 1 failed as a 502.
                raise ValidationFailed("since must be a time from 1970 on (a time without a zone is UTC)",
                                       code="invalid_value")
        size = max(1, min(page_size, MAX_PAGE_SIZE))
        filters = filters or {}
        unknown = sorted(set(filters) - set(schema.filters)) if filters and schema.filters is not None else []
        if unknown:
            # Passed on, a provider ignoring them (Shopify does) would answer an unfiltered list.
            takes = ", ".join(schema.filters or ()) or "none"
            raise ValidationFailed(f"{self.provider.name} lists {entity} without the filter(s) {', '.join(unknown)} "
                                   f"(it takes: {takes})", code="unknown_filter", fields=unknown)
        if filters and not self.provider.takes("list_records", "filters"):
            # Passed on, they would be dropped: an unfiltered list would look filtered.
            names = ", ".join(sorted(filters))
            raise ValidationFailed(f"{self.provider.name} lists {entity} without filters; this list was asked "
                                   f"with {names} (the list's own parameters are cursor, limit and since)",
                                   code="filters_not_supported", fields=sorted(filters))
        position = open_position(self.hub, self.connection.id, cursor, entity)
        asked, listing = size, _listing_digest(since, filters)
        if position.slice is not None:
            # The rest of a provider page larger than the client's limit: the same call again,
            # which the client makes with the same since and filters, as for any next page.
            if position.slice.get("h") != listing:
                raise InvalidCursor("this cursor continues a listing with other since or filters: send the same "
                                    "ones as for its first page")
            asked = position.slice["p"]
        page = self._kept_page((entity, position.cursor, asked, listing)) if position.slice is not None else None
        if page is None:
            page = await self.hub.call(self.provider, "list_records", self.ctx, entity=entity,
                                       cursor=position.cursor, page_size=asked, filters=filters, since=since)
        id_field = self.provider.schema(entity).id_field
        # A restarted page is the listing's first, whatever cursor asked for it.
        start, provider_cursor, restarts = 0, None if page.restarted else position.cursor, 0
        if position.slice is not None:
            # Continue after the last record handed out (its occurrence: ids may repeat), where
            # it is now: the page may have changed since (a record added or removed before it).
            cut = position.slice
            ids = _ids(page.records, id_field)
            start = _after(ids, cut["l"], cut["k"])
            if start is not None and ids.count(cut["l"]) > 1 and _digest(ids[:start]) != cut.get("d"):
                start = None  # (its id repeats, and what came before it changed: not the same place)
            restarts = cut.get("r", 0)
            if start is None or (page.restarted and position.cursor is not None):
                # Gone, or the provider could not follow: the listing starts over, from its very
                # first record, as a restarted page says. Twice in one page: it is not stable.
                if restarts:
                    raise ProviderError(f"provider {self.provider.name} answers the same {entity} page "
                                        f"differently on every call: it cannot be handed out in slices; ask "
                                        f"a limit of its page size")
                page = await self.hub.call(self.provider, "list_records", self.ctx, entity=entity, cursor=None,
                                           page_size=asked, filters=filters, since=since)
                page, start, provider_cursor, restarts = dataclasses.replace(page, restarted=True), 0, None, 1
            else:
                page = dataclasses.replace(page, restarted=False)  # (said with its first slice)
        records = page.records[start:]
        if len(records) > size:
            # A provider whose pages cannot be sized (Xero's 100, Salesforce's 200 at least):
            # handed out in slices of the client's limit, each continuing the same page. (Its
            # removals come with every slice: telling them twice is harmless, missing one not.)
            ids = _ids(page.records, id_field)  # (of the page handed out: the one asked again, or the restart)
            end = start + size
            last = ids[end - 1]
            if last is None:
                raise ProviderError(f"provider {self.provider.name} returned a {entity} record without its "
                                    f"{id_field!r}: its page cannot be handed out in slices")
            cut = {"p": asked, "h": listing, "l": last, "k": ids[:end].count(last), "r": restarts}
            if ids.count(last) > 1:
                cut["d"] = _digest(ids[:end])
            # Kept for the next slices (the same call again, else): one provider call for the
            # page, not one per slice, and the slices of one snapshot of it.
            self._keep_page((entity, provider_cursor, asked, listing), dataclasses.replace(page, restarted=False))
            return dataclasses.replace(page, records=records[:size], watermark=None,
                                       next_cursor=seal_cursor(self.hub, self.connection.id, provider_cursor,
                                                               entity, cut=cut))
        return dataclasses.replace(page, records=records, next_cursor=self._seal_cursor(page.next_cursor, entity),
                                   watermark=self._seal_cursor(page.watermark, entity))

    def _kept_page(self, key: tuple) -> Page | None:
        self._forget_pages()
        kept = self.hub.slice_pages.get((self.connection.id, *key))
        return kept[1] if kept else None

    def _keep_page(self, key: tuple, page: Page) -> None:
        seconds = self.hub.settings.slice_cache_seconds
        if seconds <= 0:
            return
        pages = self.hub.slice_pages
        pages[(self.connection.id, *key)] = (time.monotonic() + seconds, page)
        pages.move_to_end((self.connection.id, *key))
        self._forget_pages()

    def _forget_pages(self) -> None:
        """Drop kept pages past their time, and the oldest beyond the bounds."""
        pages, now = self.hub.slice_pages, time.monotonic()
        records = sum(len(page.records) for _, page in pages.values())
        # (In the order they were kept, which is the order their time ends in.)
        while pages and (len(pages) > SLICED_PAGES_KEPT or records > SLICED_RECORDS_KEPT
                         or next(iter(pages.values()))[0] < now):
            _, (_, page) = pages.popitem(last=False)
            records -= len(page.records)

    def _seal_cursor(self, cursor: str | None, entity: str) -> str | None:
        return seal_cursor(self.hub, self.connection.id, cursor, entity)

    @staticmethod
    def _record_id(entity: str, record_id: str) -> str:
        # "." and ".." are path steps, not ids: in a provider's URL they would name the
        # list (a PUT /customers/. became a create) or the API's root. Control characters are
        # no provider's ids, and no URL can carry them.
        if not record_id.strip(".") or any(ord(c) < 0x20 or ord(c) == 0x7f for c in record_id):
            raise NotFound(f"no {entity} record {record_id!r}")
        return record_id

    async def get(self, entity: str, record_id: str) -> dict[str, Any]:
        self.provider.schema(entity)
        record_id = self._record_id(entity, record_id)
        return await self.hub.call(self.provider, "get_record", self.ctx, entity=entity, record_id=record_id)

    async def create(self, entity: str, data: dict[str, Any]) -> dict[str, Any]:
        """Create without the client's key (:meth:`create_once` with one): a
        key of this request only, for the core's retries of it."""
        self._writable(entity, "supports_create", "creating")
        return await self.hub.call(self.provider, "create_record", self.ctx, entity=entity, data=data,
                                   idempotency_key=uuid.uuid4().hex)

    async def create_once(self, entity: str, data: dict[str, Any], key: str) -> tuple[dict[str, Any], bool]:
        """Create with the client's idempotency ``key``: the same key and data
        again answers the record made the first time, ``(record, True)``,
        for every provider (the plugin gets a key derived from it, for a
        provider that honours one: :meth:`_provider_key`). Other data with the key is ``idempotency_key_reused``;
        the first still under way, ``idempotency_key_in_use``. A first that
        got no answer is sent again where the provider dedupes creates
        (``idempotent_creates``); elsewhere it may exist:
        ``create_outcome_unknown``, never a second record."""
        self._writable(entity, "supports_create", "creating")
        fingerprint = hashlib.sha256(json.dumps([entity, data], sort_keys=True, default=str).encode()).hexdigest()
        owner = new_owner()
        token = owner.rsplit(":", 1)[-1]
        ACTIVE.add(token)  # (owner_alive: this process is still sending it)
        try:
            claim = asyncio.ensure_future(asyncio.to_thread(self._claim_key, key, fingerprint, owner))
            try:
                made = await asyncio.shield(claim)
            except asyncio.CancelledError:
                # Cancelled while the key was being taken: nothing was sent, so it is freed (left
                # "sending", its process gone, it would read as a create without an answer).
                [taken] = await asyncio.gather(claim, return_exceptions=True)
                if isinstance(taken, tuple) and taken[0] is None:
                    await asyncio.shield(asyncio.to_thread(self._settle_key, key, owner, None, False))
                raise
            made, refusals = made
            if made is not None:
                return made, True
            try:
                record = await self.hub.call(self.provider, "create_record", self.ctx, entity=entity, data=data,
                                             idempotency_key=self._provider_key(key, refusals))
            except BaseException as exc:
                unknown = may_have_applied(exc) and not self.provider.info.idempotent_creates
                # (A 5xx answer too may come after the create was made: a lost answer, a proxy's.)
                maybe_made = may_have_applied(exc) or isinstance(exc, ProviderUnavailable)
                await asyncio.shield(asyncio.to_thread(self._settle_key, key, owner, None, unknown, _refused(exc),
                                                       maybe_made))
                raise
            try:
                await asyncio.to_thread(self._settle_key, key, owner, to_jsonable_python(record, fallback=str), False)
            except Exception:
                # Made: the client gets it. Its key stays "sending" and, its process gone, reads as a
                # create without an answer (sent again where the provider dedupes, else unknown).
                log.exception("the outcome of a create with idempotency key %r could not be kept", key)
            return record, False
        finally:
            ACTIVE.discard(token)

    def _provider_key(self, key: str, refusals: int = 0) -> str:
        """The key the plugin sends for the client's ``key``: of this
        connection only (a provider scopes keys by account, which two
        organizations' connections may share), and unlike sync's own; and,
        once the provider refused a create with it, another (a provider that
        keeps answers by key, Xero's, QuickBooks', would answer the create
        sent again, its cause mended, with the refusal)."""
        again = f":{refusals}" if refusals else ""
        return "api-" + hashlib.sha256(f"{self.connection.id}:{key}{again}".encode()).hexdigest()

    def _claim_key(self, key: str, fingerprint: str, owner: str) -> tuple[dict[str, Any] | None, int]:
        """Take ``key`` for this request: ``(None, refusals)`` to send it (the
        times the provider refused it before), or the record a first request
        with it made."""
        connection_id = self.connection.id
        with write_transaction(self.hub, f"idempotency/{connection_id}/{key}") as session:
            now = utcnow()
            # (A key whose create may have been made, or is being sent, is kept longer: purged, a
            # retry would go to the provider under a key it may have forgotten.)
            session.execute(sa.delete(IdempotentCreate).where(IdempotentCreate.connection_id == connection_id,
                                                              expired_keys(now)))
            row = session.exec(select(IdempotentCreate).where(IdempotentCreate.connection_id == connection_id,
                                                              IdempotentCreate.key == key)).first()
            if row is None:
                session.add(IdempotentCreate(connection_id=connection_id, key=key, fingerprint=fingerprint,
                                             status="sending", owner=owner, created_at=now, updated_at=now))
                return None, 0
            refusals = int((row.record or {}).get("refusals", 0)) if row.status != "done" else 0
            if row.status == "refused":  # nothing was made: sent again, with this data or other
                row.fingerprint, row.status, row.owner = fingerprint, "sending", owner
                row.created_at = row.updated_at = now  # (a new try: its day starts now, not purged mid-send)
                session.add(row)
                return None, refusals
            if row.fingerprint != fingerprint and row.status == "unsent":
                row.fingerprint = fingerprint  # (nothing was made under it: the key takes this data)
            if row.fingerprint != fingerprint:
                raise ValidationFailed(
                    "this idempotency_key was used for another create (other entity or data) in the last "
                    f"{24 * IDEMPOTENCY_KEY_DAYS} hours: use a new key for a new record",
                    code="idempotency_key_reused", fields=["idempotency_key"])
            if row.status == "done":
                return row.record, 0
            if row.status in ("unsent", "unanswered"):  # (nothing made, or maybe under the provider's key)
                self._refuse_a_forgotten_key(row, now)
                row.status, row.owner, row.created_at, row.updated_at = "sending", owner, now, now
                session.add(row)
                return None, refusals
            if row.status == "sending" and owner_alive(row.owner) and now - row.updated_at < SENDING_STALE:
                raise IdempotencyKeyInUse("the first create with this idempotency_key is still being sent: "
                                          "ask again in a moment")
            if not self.provider.info.idempotent_creates:
                raise CreateOutcomeUnknown(
                    f"the first create with this idempotency_key got no answer from {self.provider.name} (or the "
                    f"hub stopped while sending it): the record may exist there. Look for it before creating it "
                    f"again, with a new key")
            # The provider tells a create sent again by its key: send it again.
            self._refuse_a_forgotten_key(row, now)
            row.status, row.owner, row.updated_at = "sending", owner, now
            session.add(row)
            return None, refusals

    def _refuse_a_forgotten_key(self, row: IdempotentCreate, now: datetime) -> None:
        """A create that may have been made under the provider's key is not
        sent again once the provider has forgotten the key
        (``ProviderInfo.idempotency_key_seconds``): it would make a second."""
        lifetime = self.provider.info.idempotency_key_seconds
        first_sent = (row.record or {}).get("first_sent")
        if first_sent is None and row.status not in ("unsent", "unanswered"):
            first_sent = row.created_at.isoformat()  # (sent, and no answer kept since)
        if key_forgotten(first_sent, lifetime, now):
            raise CreateOutcomeUnknown(
                f"the first create with this idempotency_key got no answer from {self.provider.name} longer ago "
                f"than {self.provider.name} keeps its key: sent again, it could make a second record. Look for it "
                f"there before creating it again, with a new key")

    def _settle_key(self, key: str, owner: str, record: dict[str, Any] | None, unknown: bool,
                    refused: bool = False, maybe_made: bool = False) -> None:
        """Keep what the create made (``record``), that its outcome is
        ``unknown``, or free the key: the provider ``refused`` it (it answered
        a refusal: counted, so that the create sent again, with this data or
        other, carries another key to the provider, which may keep the
        refusal under the first), or nothing was made or it was under a key
        the provider dedupes by (``unsent``: sent again with the same data,
        under the same key)."""
        with self.hub.session() as session:
            lock(session, f"idempotency/{self.connection.id}/{key}")
            query = select(IdempotentCreate).where(IdempotentCreate.connection_id == self.connection.id,
                                                   IdempotentCreate.key == key, IdempotentCreate.owner == owner)
            row = session.exec(query).first()
            if row is None:
                return  # (taken over meanwhile, after SENDING_STALE: that request settles it)
            refusals = int((row.record or {}).get("refusals", 0))
            if record is None and not unknown and refused:
                row.status, row.record, row.owner = "refused", {"refusals": refusals + 1}, None
            elif record is None and not unknown:
                kept: dict[str, Any] = {"refusals": refusals}
                first_sent = (row.record or {}).get("first_sent")
                if maybe_made or first_sent:
                    # Made, maybe, under the provider's key: when it first had it, which it forgets.
                    kept["first_sent"] = first_sent or row.created_at.isoformat()
                row.status, row.record, row.owner = "unanswered" if "first_sent" in kept else "unsent", kept, None
            elif record is not None:
                row.status, row.record = "done", record
            else:
                row.status = "uncertain"  # (its refusals kept: sent again, it is the same create)
            row.updated_at = utcnow()
            session.add(row)
            session.commit()

    async def update(self, entity: str, record_id: str, data: dict[str, Any]) -> dict[str, Any]:
        self._writable(entity, "supports_update", "updating")
        record_id = self._record_id(entity, record_id)
        schema = self.provider.schema(entity)
        current = None
        if create_only_fields(schema, data) and "get_record" in self.provider.hooks:
            # A record read and written back whole names its create-only fields unchanged:
            # those are left out; a change to one is refused.
            current = await self.get(entity, record_id)
        data = settle_create_only(schema, data, current)
        if not data and current is not None:
            return current  # nothing else to change
        return await self.hub.call(self.provider, "update_record", self.ctx, entity=entity,
                                   record_id=record_id, data=data, base=None)

    async def delete(self, entity: str, record_id: str) -> dict[str, Any] | None:
        """Delete the record; the record as the provider keeps it (canceled), if it does."""
        self._writable(entity, "supports_delete", "deleting")
        record_id = self._record_id(entity, record_id)
        kept = await self.hub.call(self.provider, "delete_record", self.ctx, entity=entity, record_id=record_id,
                                   base=None)
        return kept_record(kept)

    async def action(self, name: str, params: dict[str, Any]) -> Any:
        action = self.provider.action(name)
        missing = [p.name for p in action.params if p.required and params.get(p.name) in (None, "")]
        if missing:
            raise ValidationFailed(f"action {name} needs {', '.join(missing)}", code="missing_fields",
                                   details={"missing": missing}, fields=missing)
        return await self.hub.call(self.provider, "run_action", self.ctx, action=name, params=params)


# A provider's cursor is the plugin's own text, which it may put in a query (a SOQL WHERE, a
# page URL): handed out sealed (encrypted, authenticated), a client can neither read nor forge
# one, nor use one of another entity or connection.

@dataclasses.dataclass(frozen=True)
class Position:
    """Where a sealed cursor goes on: the provider's ``cursor``, and for the
    rest of a page larger than the client's limit, the ``slice``: the id of
    the last record handed out (``l``) and which occurrence of it in the page
    (``k``: ids may repeat; with ``d``, a digest of the ids up to it, when it
    repeats), the page size asked (``p``), a digest of the listing's since and
    filters (``h``) and whether the page restarted the listing once (``r``)."""

    cursor: str | None = None
    slice: dict[str, Any] | None = None


def _ids(records: list[Any], id_field: str) -> list[str | None]:
    return [str(r[id_field]) if isinstance(r, dict) and r.get(id_field) not in (None, "") else None
            for r in records]


def _after(ids: list[str | None], last: str, occurrence: int) -> int | None:
    """The index after the ``occurrence``-th ``last`` in ``ids``; None when it is not there."""
    seen = 0
    for index, record_id in enumerate(ids):
        if record_id == last:
            seen += 1
            if seen == occurrence:
                return index + 1
    return None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:32]


def _listing_digest(since: datetime | None, filters: dict[str, Any]) -> str:
    return _digest([since.isoformat() if since else None, sorted(filters.items())])


def seal_cursor(hub: Hub, connection_id: str, cursor: str | None, entity: str,
                cut: dict[str, Any] | None = None) -> str | None:
    """A provider's position, bound to its connection and entity, as the API
    hands it out; ``cut``: within its page, after a slice (:class:`Position`)."""
    if not cursor and not cut:
        return None
    sealed: dict[str, Any] = {"e": entity, "n": connection_id, "c": cursor}
    if cut:
        sealed["s"] = cut
    return hub.cipher.encrypt(json.dumps(sealed))


def open_cursor(hub: Hub, connection_id: str, cursor: str | None, entity: str) -> str | None:
    """The provider's position in a cursor :func:`seal_cursor` made.

    :raises InvalidCursor: not one it made (for this connection and entity).
    """
    return open_position(hub, connection_id, cursor, entity).cursor


def open_position(hub: Hub, connection_id: str, cursor: str | None, entity: str) -> Position:
    """:func:`open_cursor`, with the slice of a page it may continue."""
    if not cursor:
        return Position()
    try:
        sealed = json.loads(hub.cipher.decrypt(cursor))
    except (DecryptionError, ValueError, TypeError, RecursionError):
        raise InvalidCursor("the cursor is not one this API returned (or the hub's secret key changed since: "
                            "list from the first page again)") from None
    if not isinstance(sealed, dict):
        raise InvalidCursor("the cursor is not one this API returned")
    owner, position, cut = sealed.get("e"), sealed.get("c"), sealed.get("s")
    if cut is not None and not (isinstance(cut, dict) and isinstance(cut.get("l"), str)
                                and isinstance(cut.get("h"), str) and type(cut.get("p")) is int
                                and 1 <= cut["p"] <= MAX_PAGE_SIZE and type(cut.get("k")) is int and cut["k"] >= 1
                                and type(cut.get("r", 0)) is int and isinstance(cut.get("d", ""), str)):
        raise InvalidCursor("the cursor is not one this API returned")
    if sealed.get("n") != connection_id or not (isinstance(position, str) or (position is None and cut)):
        raise InvalidCursor("the cursor is not one this API returned for this connection")
    if owner != entity:
        raise InvalidCursor(f"the cursor belongs to {owner!r}, not {entity!r}")
    return Position(position, cut)
