"""The hub's record store: each connection's provider records, kept current by
pulls, webhooks and pushes, with the tenant's pending changes beside them.

Every write goes through :func:`write_transaction`, which serialises writers
of one connection's entity (``BEGIN IMMEDIATE`` on SQLite, a transaction-level
advisory lock on PostgreSQL), so reading a record, deciding and writing is
atomic against a webhook or a push touching the same record.

A record's *version* is its ``updated_field`` value (or a webhook event's
time): an older version never overwrites a newer one, and a deletion is
remembered as a tombstone, so deliveries in any order converge.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, select

from hub.events import emit, endpoints_of
from hub.models import Connection, IdempotentCreate, SyncConfig, SyncConflict, SyncRecord, WebhookEvent
from hub.runtime import Hub
from hub.sync.mapping import ConversionError, parse_datetime
from hub.types import EntityField, EntitySchema, HubError, ProviderError, ProviderUnavailable, ValidationFailed

PENDING = "pending"
FAILED = "failed"
CONFLICT = "conflict"
#: A create on its way to a provider without idempotent creates: if the hub
#: stops before it knows the outcome, the record may exist there.
SENDING = "sending"
#: push_status values meaning the tenant changed the record and the provider does not have it yet.
LOCAL_CHANGE = (PENDING, FAILED, CONFLICT, SENDING)
#: The ``content_hash`` of a record stored from a push whose answer was part of it only
#: (:class:`~hub.types.PartialRecord`): the provider's next version is taken as it is, not as a
#: change made there meanwhile (a conflict with the tenant's next change).
UNVERIFIED = "unverified"

_records = SyncRecord.__table__
#: Longest provider record id the record store holds (its column's length).
MAX_RECORD_ID = _records.c.remote_id.type.length
_IN_CHUNK = 500


def canonical(data: dict[str, Any]) -> tuple[str, str]:
    """The record's canonical JSON text (sorted keys, no spaces) and its hash.

    orjson writes the same text as ``json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`` about five times faster: a
    full pull spends a large share of its CPU here.
    """
    try:
        raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except TypeError as exc:  # an integer beyond 64 bits (orjson's limit), which JSON allows
        if "Recursion limit" in str(exc):
            # Stored, it could never be shown: the API writes out no deeper JSON either.
            raise ProviderError("a record is nested more than 250 levels deep: the hub does not store it") from None
        raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return raw.decode(), hashlib.sha256(raw).hexdigest()


def record_hash(data: dict[str, Any]) -> str:
    return canonical(data)[1]


def version_of(schema: EntitySchema, data: dict[str, Any]) -> datetime | None:
    """The record's modification time from ``schema.updated_field``, if any."""
    if not schema.updated_field:
        return None
    value = schema.updated_value(data)
    if value in (None, ""):
        return None
    try:
        return parse_datetime(value)
    except ConversionError:
        return None


def _lock_key(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock(session: Session, *keys: str) -> None:
    """Serialise this transaction against other writers of the same keys.

    Must come first in the transaction. SQLite has one writer at a time:
    ``BEGIN IMMEDIATE`` takes the write lock now rather than at the first
    write, so what the transaction reads stays true until it commits.
    """
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        for key in sorted(set(keys)):
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(key)})


@contextmanager
def write_transaction(hub: Hub, *keys: str) -> Iterator[Session]:
    """A session whose transaction holds the write locks of ``keys``
    (``connection_id/entity``); committed when the block ends without error."""
    with hub.session() as session:
        lock(session, *keys)
        yield session
        session.commit()


def entity_key(connection_id: str, entity: str) -> str:
    return f"records/{connection_id}/{entity}"


COUNTERS = ("fetched", "created", "updated", "deleted", "conflicts", "pushed", "failed")


@dataclass
class Counts:
    """What a write did; ``newest`` is the latest record version it saw."""

    fetched: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    conflicts: int = 0
    pushed: int = 0
    failed: int = 0
    newest: datetime | None = None

    def add(self, other: Counts) -> Counts:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.newest is not None and (self.newest is None or other.newest > self.newest):
            self.newest = other.newest
        return self

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


@dataclass
class Changes:
    """The provider ids of the records a write created, changed or marked
    deleted (gathered only where asked for: the ``records.changed`` event)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def tell_changes(session: Session, endpoints: list[Any] | None, *, organization_id: str, connection_id: str,
                 provider: str, entity: str, sync_config_id: str | None, changes: Changes, source: str,
                 **about: Any) -> None:
    """Queue ``records.changed`` events of ``changes`` for ``endpoints`` (those
    taking it; None: the organization's), in the write's transaction, each
    naming at most :data:`IDS_PER_EVENT` records (a page's are one event; a
    full pass's sweep may mark thousands deleted); ``about`` adds to their
    data (the run, the webhook event)."""
    if not changes or endpoints == []:
        return
    about = {"connection_id": connection_id, "provider": provider, "entity": entity,
             "sync_config_id": sync_config_id, "source": source, **about}
    kinds = {"created": changes.created, "updated": changes.updated, "deleted": changes.deleted}
    batch: dict[str, list[str]] = {kind: [] for kind in kinds}
    room = IDS_PER_EVENT
    for kind, ids in kinds.items():
        while ids:
            batch[kind], ids = batch[kind] + ids[:room], ids[room:]
            room = IDS_PER_EVENT - sum(map(len, batch.values()))
            if not room:
                emit(session, organization_id, "records.changed", {**about, **batch}, endpoints=endpoints)
                batch, room = {kind: [] for kind in kinds}, IDS_PER_EVENT
    if any(batch.values()):
        emit(session, organization_id, "records.changed", {**about, **batch}, endpoints=endpoints)


#: Most records one ``records.changed`` event names.
IDS_PER_EVENT = 1000


def listening(session: Session, organization_id: str) -> list[Any]:
    """The organization's endpoints that take ``records.changed`` (none: no
    ids need gathering), held until the transaction ends (:func:`endpoints_of`)."""
    return endpoints_of(session, organization_id, "records.changed")


@functools.lru_cache(maxsize=32)
def _existing_query(size: int) -> sa.Select:
    """The stored state of ``size`` records by provider id. Plain bind
    parameters (not an expanding IN) let the compiled statement be reused
    from page to page."""
    return (sa.select(_records.c.id, _records.c.remote_id, _records.c.content_hash, _records.c.remote_updated_at,
                      _records.c.deleted, _records.c.push_status, _records.c.local_op)
            .where(_records.c.connection_id == sa.bindparam("c"), _records.c.entity == sa.bindparam("e"),
                   _records.c.remote_id.in_([sa.bindparam(f"r{i}") for i in range(size)])))


def _stale(row: Any, version: datetime | None) -> bool:
    """Whether ``version`` of a record is older than what the store knows.

    A deletion the provider reported as of a time (a webhook's delete event)
    clears the content hash, and wins a tie: an update of the same second
    delivered after it is not brought back to life. A record deleted for not
    being listed (a sweep) keeps its hash and comes back when listed again.
    """
    stored = row.remote_updated_at
    if version is None or stored is None:
        return False
    return version < stored or (version == stored and row.deleted and row.content_hash is None)


#: How far ahead of a writer's clock a stored ``last_seen_at`` is kept (see
#: :func:`seen_at`); beyond it, the clock that wrote it was wrong.
SEEN_AHEAD_LIMIT = timedelta(minutes=5)


def seen_at(row: Any, now: datetime) -> datetime:
    """``now`` as the record's ``last_seen_at``, never moving it back: a writer
    whose clock read came before a full pass began (or from a host whose clock
    lags) must not make a record the pass listed look unseen to its sweep. A
    stored time more than :data:`SEEN_AHEAD_LIMIT` ahead is replaced: kept, a
    clock that ran ahead once would spare the record from sweeps until then."""
    stored = row.last_seen_at
    return stored if stored is not None and now < stored <= now + SEEN_AHEAD_LIMIT else now


def _seen_column(now: Any) -> Any:
    """:func:`seen_at` in SQL, for bulk updates (``now`` a datetime or a bind parameter of one)."""
    if isinstance(now, sa.BindParameter):
        value, limit = now, sa.bindparam(now.key + "_ahead", type_=_records.c.last_seen_at.type)
    else:
        value = sa.literal(now, type_=_records.c.last_seen_at.type)
        limit = sa.literal(now + SEEN_AHEAD_LIMIT, type_=_records.c.last_seen_at.type)
    return sa.case((sa.and_(_records.c.last_seen_at > value, _records.c.last_seen_at <= limit),
                    _records.c.last_seen_at), else_=value)


def apply_records(session: Session, *, connection_id: str, schema: EntitySchema, policy: str,
                  records: Iterable[dict[str, Any]], now: datetime,
                  fallback_version: datetime | None = None, expect_new: bool = False,
                  only_new: bool = False, fallback_asked_at: datetime | None = None,
                  undecided: list[str] | None = None, changes: Changes | None = None) -> Counts:
    """Upsert provider records (a page, a webhook's record) in the open transaction.

    New records are inserted; changed ones updated; unchanged ones marked
    seen, as of the newer version if theirs is; versions older than the stored one ignored. A record the
    tenant changed meanwhile is a conflict settled by ``policy``, unless the
    provider's version holds the tenant's change (the echo of its push).
    ``fallback_version`` versions records that carry no ``updated_field``
    (a webhook event's time). A record without its ``id_field`` is a
    :class:`ProviderError` (nothing of the page is kept). ``expect_new`` (the previous page was all new,
    as in a first pull) inserts first and looks up only the records that
    turn out to be stored already: the same outcome, with one lookup less.
    ``only_new`` (a webhook's creation snapshot) stores records not stored
    yet and leaves stored ones alone: a record's first version is older than
    any other, though a late delivery may carry the same second as a later one.
    ``fallback_asked_at`` (a pull) is how new records without their own
    version count against the stored version (when they were asked for, less
    a margin for the provider's whole-second event times); they are stored as
    ``fallback_version`` (earlier, allowing for the provider's clock, so that
    only events older than that are refused after them).
    ``undecided`` (a webhook's record) collects the ids of records whose
    version equals the stored one while their content differs, and leaves
    them: two changes of the same second (versions are often whole seconds)
    delivered out of order cannot be told apart, so the provider's current
    version settles them.
    Without it (a pull, which lists what is there now) such a record is applied.
    ``changes`` gathers the ids of the records created, changed (by the
    provider: not the echo of the hub's own write) and deleted.
    """
    counts = Counts()
    incoming: dict[str, dict[str, Any]] = {}
    for record in records:
        counts.fetched += 1
        remote_id = record.get(schema.id_field) if isinstance(record, dict) else None
        if remote_id is None or remote_id == "":
            # Skipping it would be worse: a full pass would then mark the
            # stored record deleted as "no longer listed".
            raise ProviderError(f"a {schema.name} record came without its id field {schema.id_field!r}: "
                                f"{str(record)[:200]}")
        remote_id = str(remote_id)
        if len(remote_id) > MAX_RECORD_ID:
            # (Refused alike by every database: PostgreSQL would fail on it, SQLite not.)
            raise ProviderError(f"a {schema.name} record came with an id of {len(remote_id)} characters "
                                f"({remote_id[:40]}...): the hub stores ids of at most {MAX_RECORD_ID}")
        incoming[remote_id] = record
    if not incoming:
        return counts
    prepared: list[tuple[str, str, str, datetime | None]] = []
    asked: dict[str, datetime] = {}  # the version to compare with, where it is not the one stored
    for remote_id, record in incoming.items():
        text, digest = canonical(record)
        version = version_of(schema, record)
        if version is None:
            version = fallback_version
            if fallback_asked_at is not None:
                asked[remote_id] = fallback_asked_at
        if version is not None and (counts.newest is None or version > counts.newest):
            counts.newest = version
        prepared.append((remote_id, text, digest, version))
    just_inserted: set[str] = set()
    if expect_new and session.connection().dialect.name in _UPSERT_DIALECTS:
        ids, inserted = _insert_new(session, connection_id, schema.name, prepared, now, skip_stored=True)
        if inserted == len(prepared):
            counts.created += inserted
            if changes is not None:
                changes.created.extend(remote_id for remote_id, *_rest in prepared)
            return counts
        just_inserted = set(ids)
    existing: dict[str, Any] = {}
    remote_ids = list(incoming)
    for start in range(0, len(remote_ids), _IN_CHUNK):
        chunk = remote_ids[start:start + _IN_CHUNK]
        params = {f"r{i}": remote_id for i, remote_id in enumerate(chunk)}
        rows = session.execute(_existing_query(len(chunk)), {"c": connection_id, "e": schema.name, **params})
        existing.update({row.remote_id: row for row in rows})
    inserts: list[tuple[str, str, str, datetime | None]] = []
    touched: list[str] = []
    #: Unchanged records known as of a later version than the stored one, by that version.
    advanced: dict[datetime, list[str]] = {}
    updates: list[dict[str, Any]] = []
    for remote_id, text, digest, version in prepared:
        row = existing.get(remote_id)
        if row is None:
            inserts.append((remote_id, text, digest, version))
            counts.created += 1
            if changes is not None:
                changes.created.append(remote_id)
            continue
        if row.id in just_inserted:
            counts.created += 1
            if changes is not None:
                changes.created.append(remote_id)
            continue
        if only_new:
            continue
        if row.content_hash == digest and not row.deleted:
            if version is not None and (row.remote_updated_at is None or version > row.remote_updated_at):
                # The same content as of a later time (an event's, a pull's): kept at the stored
                # version, a version between the two delivered late would be applied over it.
                advanced.setdefault(version, []).append(row.id)
            else:
                touched.append(row.id)
            continue
        if _stale(row, asked.get(remote_id, version)):
            touched.append(row.id)
            continue
        if undecided is not None and version is not None and version == row.remote_updated_at \
                and not row.deleted:
            undecided.append(remote_id)
            continue
        record = incoming[remote_id]
        if row.push_status in LOCAL_CHANGE and row.local_op in ("update", "delete") and \
                row.content_hash != UNVERIFIED:
            if settle_conflict(session, row.id, policy, record, digest, version, now, schema, changes):
                counts.conflicts += 1
            else:
                counts.updated += 1
            continue
        updates.append({"b_id": row.id, "b_data": record, "b_hash": digest, "b_version": version, "b_now": now,
                        "b_now_ahead": now + SEEN_AHEAD_LIMIT})
        counts.updated += 1
        if changes is not None:  # (one deleted before, back again, is new to whoever was told of its deletion)
            (changes.created if row.deleted else changes.updated).append(remote_id)
    if inserts:
        _insert_new(session, connection_id, schema.name, inserts, now)
    for version, ids in [(None, touched), *advanced.items()]:
        versioned = {} if version is None else {"remote_updated_at": version}
        for start in range(0, len(ids), _IN_CHUNK):
            session.execute(sa.update(_records).where(_records.c.id.in_(ids[start:start + _IN_CHUNK]))
                            .values(last_seen_at=_seen_column(now), **versioned))
    if updates:
        session.execute(
            sa.update(_records).where(_records.c.id == sa.bindparam("b_id")).values(
                data=sa.bindparam("b_data", type_=_records.c.data.type), content_hash=sa.bindparam("b_hash"),
                remote_updated_at=sa.bindparam("b_version"),
                last_seen_at=_seen_column(sa.bindparam("b_now", type_=_records.c.last_seen_at.type)),
                updated_at=sa.bindparam("b_now"), deleted=False, deleted_at=None),
            updates,
        )
    return counts


def sequential_ids(count: int) -> list[str]:
    """32-hex-digit ids that sort by creation time: new rows land together at
    the end of the primary key index instead of all over it."""
    prefix = f"{time.time_ns() // 1000:014x}"
    randomness = secrets.token_hex(9 * count)
    return [prefix + randomness[i:i + 18] for i in range(0, 18 * count, 18)]


_INSERTED = ("id", "connection_id", "entity", "remote_id", "data", "content_hash", "remote_updated_at",
             "first_seen_at", "last_seen_at", "updated_at", "deleted", "local_version", "push_attempts")
_UPSERT_DIALECTS = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}
#: The unique key of a provider record.
_REMOTE_KEY = ("connection_id", "entity", "remote_id")
_insert_sql: dict[tuple[str, bool], tuple[str, Any]] = {}
#: Most rows of one multi-row SQLite INSERT (4 shared values and 5 per row;
#: fewer where SQLite was built with a lower limit on parameters).
_SQLITE_ROWS = 1000


def _insert_new(session: Session, connection_id: str, entity: str,
                rows: list[tuple[str, str, str, datetime | None]], now: datetime,
                skip_stored: bool = False) -> tuple[list[str], int]:
    """Insert new records (remote id, canonical JSON, hash, version) straight
    through the driver, values converted as the columns' types would, and the
    JSON text made for the hash reused. A full pull spends most of its time here.

    ``skip_stored`` leaves out records already stored (by provider id)
    instead of failing. Returns the new rows' ids and how many were inserted.
    """
    connection = session.connection()
    dialect = connection.dialect
    convert, boolean = _converters(dialect)
    seen, false = convert(now), boolean(False)
    # A page's records often share one version (the time it was asked for,
    # when the provider has no modification time): convert each value once.
    moments: dict[datetime | None, Any] = {None: None, now: seen}

    def moment(version: datetime | None) -> Any:
        converted = moments.get(version, moments)
        if converted is moments:
            converted = moments[version] = convert(version)
        return converted

    ids = sequential_ids(len(rows))
    if dialect.name == "sqlite":
        limit = connection.connection.dbapi_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        step = min(_SQLITE_ROWS, (limit - 4) // 5)
        inserted = 0
        for start in range(0, len(rows), step):
            values: list[Any] = [connection_id, entity, seen, false]
            for record_id, (remote_id, text, digest, version) in zip(ids[start:start + step],
                                                                     rows[start:start + step]):
                values += (record_id, remote_id, text, digest, moment(version))
            sql = _sqlite_insert(min(step, len(rows) - start), skip_stored)
            inserted += connection.exec_driver_sql(sql, tuple(values)).rowcount
        return ids, inserted
    prepared = _insert_sql.get((dialect.name, skip_stored))
    if prepared is None:
        columns = {c: sa.bindparam(c) for c in _INSERTED}
        statement: Any = sa.insert(_records).values(columns)
        if skip_stored:
            statement = _UPSERT_DIALECTS[dialect.name](_records).values(columns).on_conflict_do_nothing(
                index_elements=list(_REMOTE_KEY))
        compiled = statement.compile(dialect=dialect)
        arrange = (operator.itemgetter(*(_INSERTED.index(c) for c in compiled.positiontup)) if compiled.positional
                   else lambda row: dict(zip(_INSERTED, row)))
        prepared = _insert_sql[(dialect.name, skip_stored)] = (str(compiled), arrange)
    sql, arrange = prepared
    result = connection.exec_driver_sql(sql, [
        arrange((record_id, connection_id, entity, remote_id, text, digest, moment(version), seen, seen, seen, false,
                 0, 0))
        for record_id, (remote_id, text, digest, version) in zip(ids, rows)])
    return ids, result.rowcount


@functools.lru_cache(maxsize=16)
def _sqlite_insert(count: int, skip_stored: bool) -> str:
    """One INSERT of ``count`` rows, for SQLite. One statement (rather than
    ``executemany``, whose driver takes the GIL back between rows) lets SQLite
    store the whole page without the GIL, while the pull fetches the next one.
    Numbered parameters share what every row has (?1 connection, ?2 entity,
    ?3 now, ?4 false) and leave five per row (id, remote id, data, hash, version)."""
    row = "(?{},?1,?2,?{},?{},?{},?{},?3,?3,?3,?4,0,0)"
    values = ",".join(row.format(*range(5 + 5 * i, 10 + 5 * i)) for i in range(count))
    conflict = f" ON CONFLICT ({', '.join(_REMOTE_KEY)}) DO NOTHING" if skip_stored else ""
    return f"INSERT INTO {_records.name} ({', '.join(_INSERTED)}) VALUES {values}{conflict}"


@functools.lru_cache(maxsize=8)
def _converters(dialect: Any) -> tuple[Any, Any]:
    """How the dialect binds a datetime and a boolean of the record store,
    as SQLAlchemy does for the ORM's writes (so every row reads and compares alike)."""
    return _converter(_records.c.updated_at.type, dialect), _converter(_records.c.deleted.type, dialect)


def _converter(column_type: Any, dialect: Any) -> Any:
    processor = column_type.dialect_impl(dialect).bind_processor(dialect)
    if processor is None:
        return lambda value: value
    return lambda value: processor(value) if value is not None else None


def settle_conflict(session: Session, record_id: str, policy: str, remote: dict[str, Any] | None,
                    digest: str | None, version: datetime | None, now: datetime,
                    schema: EntitySchema | None = None, changes: Changes | None = None) -> bool:
    """The provider changed (or deleted) a record the tenant changed too.

    ``provider_wins`` takes the provider's version and drops the tenant's
    change; ``hub_wins`` keeps the tenant's change to push over it;
    ``review`` keeps both until someone resolves the conflict. Either way the
    losing side is kept in a :class:`SyncConflict`. A provider version that
    already holds the tenant's change, or the change last sent (the echo of
    the hub's own push, or the same change made at both ends), is no
    conflict: returns False.

    ``changes`` gathers the record's provider id when the provider's version
    is stored (a deletion's caller gathers its own): whenever a conflict
    was met, and without one when the tenant's view of the record changes
    (the provider changed other fields as well as holding the tenant's
    change; not its version, see :func:`_same_view`). A
    record deleted before is ``created``, as to whoever was told of its deletion.
    """
    row = session.get(SyncRecord, record_id)
    assert row is not None
    if remote is not None and row.push_status != CONFLICT and (
            (row.local_op == "update" and holds(remote, row.local_data or {}))
            or (row.local_op in ("update", "delete") and own_write(row, remote, schema.fields if schema else None))):
        seen_before = None if row.deleted else merged_view(row)
        # The change stays queued: its push may be on its way, and sending it again changes nothing.
        row.data, row.content_hash, row.remote_updated_at = remote, digest, version
        row.deleted, row.deleted_at, row.last_seen_at, row.updated_at = False, None, seen_at(row, now), now
        session.add(row)
        if changes is not None and seen_before is None:
            changes.created.append(row.remote_id)
        elif changes is not None and not _same_view(seen_before, merged_view(row), schema):
            changes.updated.append(row.remote_id)
        return False
    deleted, was_deleted = remote is None, row.deleted
    if deleted and policy == "hub_wins":
        policy = "review"  # an update cannot be pushed to a record the provider deleted
    open_conflict = session.exec(
        select(SyncConflict).where(SyncConflict.record_id == row.id, SyncConflict.status == "open")
    ).first()
    conflict = open_conflict or SyncConflict(connection_id=row.connection_id, entity=row.entity, record_id=row.id,
                                             remote_id=row.remote_id, policy=policy)
    conflict.local_data = {"op": row.local_op, "data": row.local_data}
    conflict.remote_data = remote
    if deleted:
        row.deleted, row.deleted_at = True, now
        row.remote_updated_at = max(filter(None, (row.remote_updated_at, version)), default=None)
        if version is not None:
            row.content_hash = None  # deleted as of ``version``: see _stale
    else:
        row.data, row.content_hash, row.remote_updated_at = remote, digest, version
        row.deleted, row.deleted_at = False, None
    row.last_seen_at = seen_at(row, now)
    row.updated_at = now
    row.sent_change = None  # what was sent before is now settled against this version
    if policy == "provider_wins":
        row.local_data, row.local_op, row.push_status, row.push_error = None, None, None, None
        conflict.status, conflict.resolution, conflict.resolved_at = "resolved", "provider", now
    elif policy == "hub_wins":
        # Pushed again over this version, also by a push that is on its way now.
        row.push_status, row.local_version = PENDING, row.local_version + 1
        conflict.status, conflict.resolution, conflict.resolved_at = "resolved", "hub", now
    else:
        row.push_status = CONFLICT
        conflict.status = "open"
        if open_conflict is None:
            connection = session.get(Connection, row.connection_id)
            if connection is not None:
                config_id = session.execute(sa.select(SyncConfig.id).where(
                    SyncConfig.connection_id == row.connection_id, SyncConfig.entity == row.entity)).scalar()
                emit(session, connection.organization_id, "conflict.opened",
                     {"connection_id": row.connection_id, "provider": connection.provider, "entity": row.entity,
                      "sync_config_id": config_id, "conflict_id": conflict.id, "record_id": row.id,
                      "remote_id": row.remote_id, "provider_deleted": deleted})
    session.add(row)
    session.add(conflict)
    if changes is not None and not deleted:  # (the provider's version is stored, whoever wins)
        (changes.created if was_deleted else changes.updated).append(row.remote_id)
    return True


def _same_view(before: dict[str, Any], after: dict[str, Any], schema: EntitySchema | None) -> bool:
    """Whether the tenant sees the record alike, apart from its version
    (``updated_field``) and the read-only sub-fields the schema declares,
    which the provider stamps on the hub's own write too (HubSpot's
    ``properties.hs_lastmodifieddate``). Other read-only fields count: an
    order paid meanwhile (``financial_status``) is a change to tell."""
    fields = schema.fields if schema else ()
    version = frozenset({schema.updated_field} if schema and schema.updated_field else ())
    return _alike(_comparable(before, fields), _comparable(after, fields), version, frozenset())


def _comparable(record: dict[str, Any], schema_fields: Any) -> dict[str, Any]:
    """``record`` without the sub-fields ``schema_fields`` declare read-only."""
    declared = {f.name: f for f in schema_fields or () if f.fields}
    return _without_read_only_parts(record, declared.get) if declared else record


def sent_attempts(row: SyncRecord) -> list[dict[str, Any]]:
    """The data of the updates sent for the record's change whose outcome is not stored, oldest first."""
    return list((row.sent_change or {}).get("attempts") or [])


def own_write(row: SyncRecord, remote: dict[str, Any], schema_fields: Any = None) -> bool:
    """Whether ``remote`` is the stored version changed only by updates the hub
    sent (some of them, in order: an answer may be lost after any), apart from
    fields the provider keeps itself (read-only ones, like ``updated_at``).
    A change made at the provider as well is not the hub's own write.

    Read-only names are ignored inside nested objects and lists too (a Shopify
    product's variants carry their own ``updated_at`` and ``id``, which the
    provider changes when the hub updates them), except names whose value the
    hub itself changed there (an order's read-only ``name`` is not its
    address's ``name``). Sub-fields declared read-only are left out on both
    sides (HubSpot stamps ``properties.hs_lastmodifieddate`` on each write)."""
    readonly = frozenset(f.name for f in schema_fields or () if f.readonly)
    remote = _comparable(remote, schema_fields)
    attempts = sent_attempts(row)
    changed: set[str] = set()
    for attempt in attempts:
        changed |= _changed_nested_keys(row.data or {}, attempt)
    nested = readonly - changed
    expected = dict(row.data or {})
    for attempt in [None, *attempts]:
        if attempt is not None:
            _deep_merge(expected, attempt)
        if _alike(remote, _comparable(expected, schema_fields), readonly, nested):
            return True
    return False


def _changed_nested_keys(before: Any, after: Any, depth: int = 0) -> set[str]:
    """The keys below the top level whose value ``after`` (an update sent)
    changes from ``before`` (the stored version)."""
    keys: set[str] = set()
    if isinstance(after, dict):
        base = before if isinstance(before, dict) else {}
        for key, value in after.items():
            if depth > 0 and base.get(key) != value:
                keys.add(str(key))
            keys |= _changed_nested_keys(base.get(key), value, depth + 1)
    elif isinstance(after, list):
        base = before if isinstance(before, list) else []
        for index, value in enumerate(after):
            keys |= _changed_nested_keys(base[index] if index < len(base) else None, value, depth)
    return keys


def _alike(first: Any, second: Any, ignored: frozenset[str], nested: frozenset[str] | None = None) -> bool:
    """Equal, apart from the ``ignored`` keys at the top level and the
    ``nested`` ones (default: the same) of every object below it."""
    nested = ignored if nested is None else nested
    if isinstance(first, dict) and isinstance(second, dict):
        return all(_alike(first.get(key), second.get(key), nested)
                   for key in first.keys() | second.keys() if key not in ignored)
    if isinstance(first, list) and isinstance(second, list):
        return len(first) == len(second) and all(_alike(a, b, nested) for a, b in zip(first, second))
    return bool(first == second)


def holds(remote: dict[str, Any], change: dict[str, Any]) -> bool:
    """Whether the provider's record already has every value of ``change``."""
    merged = dict(remote)
    _deep_merge(merged, change)
    return merged == remote


def apply_deletions(session: Session, *, connection_id: str, entity: str, policy: str,
                    remote_ids: Iterable[str], now: datetime, version: datetime | None = None,
                    changes: Changes | None = None) -> Counts:
    """Mark records the provider deleted. Unknown ids leave a tombstone, so a
    late delivery of an older version does not bring the record back. (An id
    longer than the store holds names no stored record, and never will.)
    ``changes`` gathers the ids of the stored records marked deleted."""
    counts = Counts()
    for remote_id in {str(r) for r in remote_ids if r not in (None, "") and len(str(r)) <= MAX_RECORD_ID}:
        row = session.exec(select(SyncRecord).where(
            SyncRecord.connection_id == connection_id, SyncRecord.entity == entity,
            SyncRecord.remote_id == remote_id)).first()
        if row is None:
            session.add(SyncRecord(connection_id=connection_id, entity=entity, remote_id=remote_id, data={},
                                   remote_updated_at=version, deleted=True, deleted_at=now, updated_at=now))
            continue
        # A record stored as deleted while its update was on its way meets the deletion once
        # its push failed (a 404).
        changed = row.local_op == "update" and row.push_status in (
            (PENDING, FAILED) if row.deleted else LOCAL_CHANGE)
        if (row.deleted and not changed) or _stale(row, version):
            if row.deleted and not changed and version is not None and not _stale(row, version):
                # Deleted already (a full pass no longer listed it): the deletion's time is kept all
                # the same, or a late event of an update made before it would bring it back.
                row.remote_updated_at = max(filter(None, (row.remote_updated_at, version)))
                row.content_hash = None  # deleted as of ``version``: see _stale
                session.add(row)
            continue
        counts.deleted += 0 if row.deleted else 1
        if changes is not None and not row.deleted:
            changes.deleted.append(remote_id)
        if changed:
            counts.conflicts += 1
            settle_conflict(session, row.id, policy, None, None, version, now)
            continue
        row.deleted, row.deleted_at, row.updated_at = True, now, now
        if version is not None:
            row.remote_updated_at = max(filter(None, (row.remote_updated_at, version)))
            row.content_hash = None  # deleted as of ``version``: see _stale
        if row.local_op == "delete":
            # Deleted as the tenant asked: its pending delete, and a conflict over it, are settled.
            row.local_data, row.local_op, row.push_status = None, None, None
            for conflict in session.exec(select(SyncConflict).where(SyncConflict.record_id == row.id,
                                                                    SyncConflict.status == "open")):
                conflict.status, conflict.resolution, conflict.resolved_at = "resolved", "provider", now
                session.add(conflict)
        session.add(row)
    return counts


def sweep_unseen(session: Session, *, connection_id: str, entity: str, seen_since: datetime, now: datetime,
                 policy: str, schema: EntitySchema | None = None, changes: Changes | None = None) -> Counts:
    """After a complete full pass: records the provider no longer lists are
    deleted there. One the tenant changed meanwhile is a conflict settled by
    ``policy`` (as a deletion event would be), not a change left to fail at
    the next push. Where ``schema`` says the provider lists only recent
    records (``listed_for_days``), older ones are not deleted, only aged out."""
    unseen = (_records.c.connection_id == connection_id, _records.c.entity == entity,
              _records.c.deleted.is_(False), _records.c.remote_id.is_not(None),
              sa.or_(_records.c.last_seen_at.is_(None), _records.c.last_seen_at < seen_since))
    if schema is not None and schema.listed_for_days and schema.created_field:
        created = _records.c.data[tuple(schema.created_field.split("."))].as_string()
        # Compared by date (ISO 8601 text in whatever offset, up to +14:00): two days' margin
        # cover the offsets and the rounding to a date.
        cutoff = (now - timedelta(days=schema.listed_for_days - 2)).date().isoformat()
        unseen += (sa.or_(created.is_(None), sa.func.substr(created, 1, 10) >= cutoff),)
    changed = [remote_id for (remote_id,) in session.execute(
        sa.select(_records.c.remote_id).where(*unseen, _records.c.push_status.in_(LOCAL_CHANGE)))]
    sweep = (sa.update(_records)
             .where(*unseen, sa.or_(_records.c.push_status.is_(None), _records.c.push_status.not_in(LOCAL_CHANGE)))
             .values(deleted=True, deleted_at=now, updated_at=now))
    if changes is None:
        counts = Counts(deleted=session.execute(sweep).rowcount or 0)
    else:
        swept = [remote_id for (remote_id,) in session.execute(sweep.returning(_records.c.remote_id))]
        changes.deleted.extend(swept)
        counts = Counts(deleted=len(swept))
    if changed:
        counts.add(apply_deletions(session, connection_id=connection_id, entity=entity, policy=policy,
                                   remote_ids=changed, now=now, changes=changes))
    return counts


#: The content hash of an erased record's mark: no data has it.
ERASED = "erased"


def erase(session: Session, *, connection_id: str, entity: str | None, remote_id: str | None, now: datetime,
          id_field: str = "id") -> int:
    """Delete the stored copy of one record (``entity`` and ``remote_id``), or
    of every record of the connection (``entity`` None), with its pending
    change, its conflicts, the bodies of the webhook events about it and the
    kept outcome of its create through the API: a provider relaying a
    privacy-law request. An erased record stays known as deleted as of
    ``now``, without data: an older version of it arriving late (a webhook
    retried for hours) must not bring it back. Returns the records erased."""
    records = [_records.c.connection_id == connection_id]
    events = [WebhookEvent.connection_id == connection_id]
    creates = [IdempotentCreate.connection_id == connection_id]
    if entity is not None:
        records += [_records.c.entity == entity, _records.c.remote_id == remote_id]
        events += [WebhookEvent.entity == entity, WebhookEvent.record_id == remote_id]
        creates += [IdempotentCreate.record[id_field].as_string() == remote_id]
    ids = sa.select(_records.c.id).where(*records).scalar_subquery()
    session.execute(sa.delete(SyncConflict).where(SyncConflict.record_id.in_(ids)))
    erased = session.execute(sa.delete(_records).where(*records)).rowcount or 0
    session.execute(sa.update(WebhookEvent).where(*events).values(raw=None, payload=None))
    session.execute(sa.delete(IdempotentCreate).where(*creates))
    if entity is not None and remote_id is not None:
        session.add(SyncRecord(connection_id=connection_id, entity=entity, remote_id=remote_id, data={},
                               content_hash=ERASED, deleted=True, deleted_at=now, remote_updated_at=now,
                               updated_at=now))
    return erased


def is_erased(session: Session, *, connection_id: str, entity: str, remote_id: str) -> bool:
    """Whether the record was erased for privacy (:func:`erase`)."""
    return session.execute(sa.select(_records.c.content_hash).where(
        _records.c.connection_id == connection_id, _records.c.entity == entity,
        _records.c.remote_id == remote_id)).scalar() == ERASED


def may_have_applied(exc: BaseException) -> bool:
    """Whether a write that failed so may still have been made at the
    provider: no answer came after it was sent (``maybe_applied``), the
    plugin failed once the call was under way (an answer it could not read,
    a result of the wrong type: a ``ProviderError`` of no provider status), or
    the call was cut short (cancelled, a bug) mid-way."""
    if isinstance(exc, ProviderUnavailable):
        return exc.maybe_applied
    if isinstance(exc, ProviderError):
        return exc.provider_status is None
    return not isinstance(exc, HubError)


def key_forgotten(first_sent: Any, lifetime: float | None, now: datetime) -> bool:
    """Whether a provider that keeps an idempotency key's answer ``lifetime``
    seconds (``ProviderInfo.idempotency_key_seconds``) has forgotten a key it
    first got at ``first_sent`` (ISO 8601 text; not known: not forgotten)."""
    if lifetime is None or not isinstance(first_sent, str):
        return False
    try:
        first = datetime.fromisoformat(first_sent)
    except ValueError:
        return False
    return (now - first).total_seconds() > lifetime


def kept_record(deleted: Any) -> dict[str, Any] | None:
    """The record ``delete_record`` answered where the provider keeps it (a
    canceled subscription), or None for one it removed: ``True``, or the
    provider's own deletion answer passed on (``{"id": ..., "deleted": true}``)."""
    if isinstance(deleted, dict) and deleted and deleted.get("deleted") is not True:
        return deleted
    return None


def purge_tombstones(session: Session, *, before: datetime) -> int:
    """Forget records deleted (at the provider or by the tenant, and pushed)
    before ``before``. Records with an unpushed change or an open conflict stay."""
    result = session.execute(
        sa.delete(_records).where(
            _records.c.deleted.is_(True), _records.c.deleted_at < before,
            sa.or_(_records.c.push_status.is_(None), _records.c.push_status.not_in(LOCAL_CHANGE)))
    )
    return result.rowcount or 0


# ---------------------------------------------------------------- the tenant's side


def merged_view(row: SyncRecord) -> dict[str, Any]:
    """The record as the tenant sees it: the provider's data with the
    tenant's pending change on top."""
    return with_change(row.data, row.local_data if row.local_op in ("create", "update") else None)


def with_change(data: dict[str, Any] | None, change: dict[str, Any] | None) -> dict[str, Any]:
    """A new record: ``data`` with ``change`` made to it (into nested objects,
    and into array items through index keys); ``data`` is left as it was."""
    merged = dict(data or {})
    if change:
        _deep_merge(merged, change)
    return merged


def update_payload(row: SyncRecord, schema: EntitySchema | None = None) -> dict[str, Any]:
    """What pushing the tenant's update sends: each top-level field it
    changed, whole, as the tenant sees it. Providers replace an object or
    array they are sent (an address, a product's variants): the changed part
    alone would lose the rest at the provider.

    A change made through an array index (``variants.0.price``) where the
    provider has no list yet is sent as a list; an object stays an object,
    digit keys and all (Stripe's ``metadata: {"0": ...}``): the provider's
    version, else the ``schema``'s declared fields, tell which is which."""
    merged = merged_view(row)
    base = row.data or {}
    problem = index_problem(base, row.local_data or {}, schema)
    if problem:
        # The provider's array changed under a pending change through an index.
        raise ValidationFailed(f"the change cannot be sent: {problem}; change the record again or discard it",
                               code="invalid_value")
    return {key: _as_lists(merged.get(key), base.get(key), schema.field(key) if schema is not None else None)
            if isinstance(value, dict) else value
            for key, value in (row.local_data or {}).items()}


def writable_payload(payload: dict[str, Any], schema: EntitySchema) -> dict[str, Any]:
    """What of a push's ``payload`` (:func:`update_payload`) goes to the
    provider: each object or array it sends whole without the sub-fields the
    schema declares read-only (see :func:`_writable_part`). The payload
    itself, kept as the change sent, stays whole: the provider's echo of it
    holds those sub-fields."""
    return _without_read_only_parts(payload, schema.field)


def _without_read_only_parts(record: dict[str, Any], field_of: Any) -> dict[str, Any]:
    """``record`` with each object or array in it (``field_of(name)`` its
    declared field) without its read-only sub-fields."""
    return {key: _writable_part(value, field_of(key)) if isinstance(value, (dict, list)) else value
            for key, value in record.items()}


def _writable_part(value: Any, declared: EntityField | None) -> Any:
    """``value`` (a whole object or array the push sends) without the
    sub-fields its declared field says are read-only: providers refuse them
    written (HubSpot's ``properties.hs_object_id``). An array item keeps its
    ``id``, which tells the provider which item it updates (Shopify's
    variants and addresses)."""
    if declared is None or not declared.fields:
        return value
    if declared.type == "array":
        if not isinstance(value, list):
            return value
        item = _item_field(declared)
        return [_writable_part(entry, item) if not isinstance(entry, dict) else
                {k: _writable_part(v, item.field(k)) for k, v in entry.items()
                 if k == "id" or not _read_only(item.field(k))} for entry in value]
    if not isinstance(value, dict):
        return value
    return {k: _writable_part(v, declared.field(k)) for k, v in value.items() if not _read_only(declared.field(k))}


def _read_only(field: EntityField | None) -> bool:
    return field is not None and field.readonly


def index_problem(base: Any, change: dict[str, Any], schema: EntitySchema | None = None) -> str | None:
    """Why ``change`` cannot be merged into ``base`` (the provider's version),
    or None (see :func:`index_problem_at`)."""
    problem = index_problem_at(base, change, schema)
    return problem[1] if problem else None


def index_problem_at(base: Any, change: dict[str, Any], schema: EntitySchema | None = None, path: str = "",
                     parent: EntityField | None = None) -> tuple[str, str] | None:
    """Where and why ``change`` cannot be merged into ``base`` (the
    provider's version): the dotted path at fault (``variants.3``) and the
    reason; or None. A change through an array index (``variants.3.price``)
    into a list must name an item the list has, and into a field the
    ``schema`` declares an array, without a list yet, build one from index 0
    on. Sent otherwise, it would replace the provider's array with an object.
    (Digit keys of an object, Stripe's ``metadata: {"1": ...}``, are keys: a
    field declared an object is never taken for a list.)"""
    for key, value in change.items():
        where = f"{path}.{key}" if path else str(key)
        if parent is not None:
            declared = parent.field(key)
        else:
            declared = schema.field(key) if schema is not None and not path else None
        current = base.get(key) if isinstance(base, dict) else None
        if _index_keys(current) and (declared is None or declared.type == "array"):
            current = _as_lists(current)  # a pending create's item change, not made a list yet
        array = declared is not None and declared.type == "array"
        if _index_keys(value) and (isinstance(current, list) or (current is None and array)):
            indexes = sorted(int(k) for k in value)
            if isinstance(current, list):
                if indexes[-1] >= len(current):
                    return (f"{where}.{indexes[-1]}", f"{where} has {len(current)} item(s) at the provider: "
                                                      f"there is no {where}.{indexes[-1]}")
                for index, item in value.items():
                    slot = current[int(index)]
                    if isinstance(item, dict) and isinstance(slot, dict):
                        problem = index_problem_at(slot, item, None, f"{where}.{index}", _item_field(declared))
                        if problem:
                            return problem
            elif indexes != list(range(len(indexes))):
                return where, f"{where} is not a list with item(s) {', '.join(map(str, indexes))} at the provider"
        elif isinstance(value, dict) and isinstance(current, dict):
            problem = index_problem_at(current, value, None, where, declared)
            if problem:
                return problem
    return None


#: Most digits of an array index in a change's path; longer digit keys are an object's keys
#: (and int() of thousands of digits is refused, or slow).
_INDEX_DIGITS = 9


def _index_keys(value: Any) -> bool:
    """A change made through a path with an array index (``variants.0.price``)."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and k.isascii() and k.isdigit() and len(k) <= _INDEX_DIGITS for k in value)


def _as_lists(value: Any, base: Any = None, declared: EntityField | None = None) -> Any:
    """``value`` with the objects made by changes through array indexes
    (``{"0": ..., "1": ...}``) as lists. ``base`` is the provider's version
    of the same place and ``declared`` its declared field, when known: an
    object there (or a field declared other than an array) keeps its digit
    keys; with neither known, index keys 0..n-1 make a list."""
    if isinstance(value, dict):
        array = declared.type == "array" if declared is not None else True
        if (array and not isinstance(base, dict) and _index_keys(value)
                and sorted(map(int, value)) == list(range(len(value)))):
            items = base if isinstance(base, list) else []
            item = _item_field(declared)
            return [_as_lists(value[str(i)], items[i] if i < len(items) else None, item) for i in range(len(value))]
        inner = base if isinstance(base, dict) else {}
        return {key: _as_lists(entry, inner.get(key), declared.field(key) if declared is not None else None)
                for key, entry in value.items()}
    if isinstance(value, list):
        items = base if isinstance(base, list) else []
        item = _item_field(declared)
        return [_as_lists(entry, items[i] if i < len(items) else None, item) for i, entry in enumerate(value)]
    return value


def _item_field(declared: EntityField | None) -> EntityField | None:
    """An item of a declared array, as a field: an object of the array's
    declared fields (unknown where it declares none)."""
    if declared is None or declared.type != "array" or not declared.fields:
        return None
    return EntityField(declared.name, type="object", fields=declared.fields)


def _deep_merge(base: dict[str, Any], change: dict[str, Any]) -> None:
    for key, value in change.items():
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            current = base[key] = dict(current)
            _deep_merge(current, value)
        elif _index_keys(value) and isinstance(current, list) and all(int(k) < len(current) for k in value):
            items = base[key] = list(current)
            for index, item in value.items():
                slot = items[int(index)]
                if isinstance(item, dict) and isinstance(slot, dict):
                    items[int(index)] = merged = dict(slot)
                    _deep_merge(merged, item)
                else:
                    items[int(index)] = item
        else:
            base[key] = value


def local_create(session: Session, connection_id: str, entity: str, data: dict[str, Any], now: datetime) -> SyncRecord:
    row = SyncRecord(connection_id=connection_id, entity=entity, data={}, local_data=data, local_op="create",
                     local_version=1, local_changed_at=now, push_status=PENDING, updated_at=now)
    session.add(row)
    return row


def local_update(session: Session, row: SyncRecord, changes: dict[str, Any], now: datetime) -> SyncRecord:
    local = dict(row.local_data or {})
    _deep_merge(local, changes)
    row.local_data = local
    row.local_op = row.local_op if row.local_op == "create" else "update"
    row.local_version += 1
    row.local_changed_at = now
    # A create on its way stays so: whether it arrived is still unknown.
    row.push_status = row.push_status if row.push_status in (CONFLICT, SENDING) else PENDING
    row.push_error, row.push_attempts = None, 0
    row.updated_at = now
    session.add(row)
    _show_in_open_conflict(session, row)
    return row


def _show_in_open_conflict(session: Session, row: SyncRecord) -> None:
    """A change made while the record's conflict waits in review is what a
    ``hub`` resolution pushes and a ``provider`` one drops: the conflict
    shows it, not the change it was opened with."""
    if row.push_status != CONFLICT:
        return
    conflict = session.exec(select(SyncConflict).where(SyncConflict.record_id == row.id,
                                                       SyncConflict.status == "open")).first()
    if conflict is not None:
        conflict.local_data = {"op": row.local_op, "data": row.local_data}
        session.add(conflict)


def local_delete(session: Session, row: SyncRecord, now: datetime) -> SyncRecord | None:
    """Queue the deletion at the provider; a record never pushed just goes."""
    if row.remote_id is None:
        session.delete(row)
        return None
    row.local_op, row.local_data = "delete", None
    row.local_version += 1
    row.local_changed_at = now
    row.push_status = CONFLICT if row.push_status == CONFLICT else PENDING
    row.push_error, row.push_attempts = None, 0
    row.updated_at = now
    session.add(row)
    _show_in_open_conflict(session, row)
    return row


def find_record(session: Session, connection_id: str, entity: str, record_id: str) -> SyncRecord | None:
    """By the hub's id, else by the provider's id."""
    row = session.get(SyncRecord, record_id)
    if row is not None and row.connection_id == connection_id and row.entity == entity:
        return row
    return session.exec(select(SyncRecord).where(
        SyncRecord.connection_id == connection_id, SyncRecord.entity == entity,
        SyncRecord.remote_id == record_id)).first()
