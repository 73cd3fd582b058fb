"""The tenant's side of the record store: reading stored records (raw or
mapped), writing changes to push, and resolving conflicts."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import select

from hub.models import Connection, SyncConfig, SyncConflict, SyncLease, SyncRecord, SyncRun, SyncState, utcnow
from hub.runtime import Hub
from hub.sync.leases import db_now, owner_alive
from hub.sync.mapping import Mapper
from hub.sync.store import (
    LOCAL_CHANGE,
    PENDING,
    SENDING,
    entity_key,
    find_record,
    index_problem_at,
    local_create,
    local_delete,
    local_update,
    merged_view,
    with_change,
    write_transaction,
)
from hub.types import EntitySchema, HubError, NotFound, ReadOnly, ValidationFailed

MAX_LIMIT = 500


class InvalidCursor(HubError):
    """A cursor this API did not hand out (422, as every list refuses one)."""

    code = "invalid_cursor"
    status = 422


class PendingDelete(HubError):
    code = "record_pending_delete"
    status = 409


class PendingCreate(HubError):
    code = "record_being_created"
    status = 409


class ConflictResolved(HubError):
    code = "conflict_resolved"
    status = 409


class PushUnderWay(HubError):
    code = "record_being_pushed"
    status = 409


def encode_cursor(value: dict[str, Any], of: str | None = None) -> str:
    """A cursor holding ``value``, bound to the listing ``of`` (its kind and
    owner: ``records:<config id>``), which :func:`decode_cursor` checks."""
    if of is not None:
        value = {**value, "of": of}
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


#: Longest cursor this API hands out is far shorter; a longer one is not ours.
MAX_CURSOR = 4096


def decode_cursor(cursor: str | None, of: str | None = None) -> dict[str, Any] | None:
    """The value a cursor of this API holds; with ``of``, only a cursor of
    that listing: another's position (another organization's connection,
    another kind of listing) would skip or repeat items, so it is refused.

    :raises InvalidCursor: not a cursor this API handed out for the listing.
    """
    if not cursor:
        return None
    if len(cursor) > MAX_CURSOR:
        raise InvalidCursor("the cursor is not one this API returned")
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, RecursionError):  # "[[[[..." nested past the parser's depth
        raise InvalidCursor("the cursor is not one this API returned") from None
    if not isinstance(value, dict):
        raise InvalidCursor("the cursor is not one this API returned")
    try:
        # A lone surrogate ("\ud800") is JSON, but no text a database takes; nor is NUL PostgreSQL's
        # (SQLite would answer an empty page, PostgreSQL refuse the query).
        json.dumps(value, ensure_ascii=False).encode()
        nul = _holds_nul(value)
    except (UnicodeEncodeError, RecursionError):
        raise InvalidCursor("the cursor is not one this API returned") from None
    if nul:
        raise InvalidCursor("the cursor is not one this API returned")
    if of is not None and value.get("of") != of:
        raise InvalidCursor("the cursor is one of another listing: pass the next_cursor this listing returned")
    return value


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def after_newest_first(time_column: Any, moment: Any, id_column: Any, last_id: str,
                       ids_ascending: bool = False) -> Any:
    """The rows after a page's last one (``moment``, ``last_id``) in a listing
    newest first by ``time_column``, then by id (descending, or
    ``ids_ascending``). The bound on time alone, beside the OR, lets an index
    start at the cursor: with the OR only, each page read from the newest row."""
    next_id = id_column > last_id if ids_ascending else id_column < last_id
    return sa.and_(time_column <= moment,
                   sa.or_(time_column < moment, sa.and_(time_column == moment, next_id)))


def page_newest_first(session: Any, query: Any, time_column: Any, id_column: Any, cursor: str | None, limit: int,
                      time_key: str, position_of: Any = None, of: str | None = None) -> tuple[list[Any], str | None]:
    """One page of ``query``, newest first by ``time_column`` then ``id_column``
    (descending), after ``cursor``; and the cursor of the next page (None: the
    last). The cursor holds the page's last time under ``time_key`` and its
    id; ``position_of(row)`` reads them from a row (default: the columns' attributes),
    and is bound to the listing ``of`` (see :func:`decode_cursor`).

    :raises InvalidCursor: a cursor this did not hand out.
    """
    position = decode_cursor(cursor, of)
    if position:
        try:
            moment, last_id = cursor_time(position[time_key]), str(position["id"])
        except KeyError:
            raise InvalidCursor("the cursor is not one this API returned") from None
        query = query.where(after_newest_first(time_column, moment, id_column, last_id))
    rows = list(session.exec(query.order_by(time_column.desc(), id_column.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    moment, last_id = (position_of or (lambda row: (getattr(row, time_column.key), getattr(row, id_column.key))))(
        rows[-1])
    return rows, encode_cursor({time_key: moment.isoformat(), "id": last_id}, of)


def cursor_time(value: Any) -> datetime:
    """A time a cursor of this API holds, in UTC.

    :raises InvalidCursor: not such a time (a crafted one: unparseable, or
        beyond the years a UTC time can hold, year 9999 at ``-12:00``).
    """
    try:
        moment = datetime.fromisoformat(str(value))
        return moment.astimezone(timezone.utc) if moment.tzinfo else moment
    except (ValueError, OverflowError):
        raise InvalidCursor("the cursor is not one this API returned") from None


def mapper_for(hub: Hub, connection: Connection, config: SyncConfig) -> Mapper:
    provider = hub.provider(connection.provider)
    return Mapper(provider.schema(config.entity), config.mappings, provider.info.minor_units)


def record_out(row: SyncRecord, mapper: Mapper | None) -> dict[str, Any]:
    """A stored record as the API shows it: raw, or mapped with the values
    that could not be converted listed in ``mapping_errors`` (the raw record
    keeps them)."""
    data = merged_view(row)
    problems: list[dict[str, Any]] | None = None if mapper is None else []
    # (Kept after the error is cleared: shown only with it.)
    failure = (row.push_failure or {}) if row.push_error else {}
    refused = failure.get("fields")  # the provider's field paths, where it named them
    return {
        "id": row.id, "remote_id": row.remote_id, "entity": row.entity,
        "data": mapper.to_tenant(data, problems) if mapper is not None else data, "mapping_errors": problems,
        "deleted": row.deleted, "deleted_at": row.deleted_at,
        "pending": row.push_status in LOCAL_CHANGE, "pending_op": row.local_op,
        "push_status": row.push_status,
        "push_error": row.push_error, "remote_updated_at": row.remote_updated_at,
        "push_error_code": failure.get("code"), "push_error_details": failure.get("details"),
        "push_error_fields": (mapper.tenant_fields(refused) if mapper is not None else refused) if refused else None,
        "first_seen_at": row.first_seen_at, "last_seen_at": row.last_seen_at,
        "updated_at": row.updated_at,
    }


def conflicts_out(hub: Hub, conflicts: list[SyncConflict], mapper: Mapper | None) -> list[dict[str, Any]]:
    """Conflicts as the API shows them: raw (the hub's change and the
    provider's version in provider fields), or mapped: both sides as whole
    records in the tenant's fields, the hub's being the provider's version
    with the hub's change made to it (what resolving for the hub pushes) or,
    where the provider deleted the record, the last version it had; a custom
    resolution's ``resolution_data`` likewise."""
    if mapper is None:
        return [conflict.model_dump() for conflict in conflicts]
    gone = [c.record_id for c in conflicts if c.remote_data is None]
    last: dict[str, dict[str, Any]] = {}
    if gone:
        with hub.session() as session:
            last = {row.id: row.data or {} for row in session.exec(select(SyncRecord).where(SyncRecord.id.in_(gone)))}
    out = []
    for conflict in conflicts:
        shown = conflict.model_dump()
        remote = conflict.remote_data
        local = dict(conflict.local_data or {})
        if isinstance(local.get("data"), dict):
            base = remote if remote is not None else last.get(conflict.record_id)
            local["data"] = mapper.to_tenant(with_change(base, local["data"]))
        shown["local_data"] = local
        shown["remote_data"] = mapper.to_tenant(remote) if remote is not None else None
        if conflict.resolution_data is not None:
            base = remote if remote is not None else last.get(conflict.record_id)
            shown["resolution_data"] = mapper.to_tenant(with_change(base, conflict.resolution_data))
        out.append(shown)
    return out


def state_out(state: SyncState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "in_progress": state.pass_mode is not None, "pass_mode": state.pass_mode, "pass_pages": state.pass_pages,
        "watermark": state.watermark, "has_provider_position": bool(state.start_cursor),
        "last_pass_at": state.last_pass_at, "last_full_pass_at": state.last_full_pass_at,
    }


def run_out(run: SyncRun) -> dict[str, Any]:
    """A run as the sync logs (and the app's sync events) show it: not who
    executes it (a host and process) or its heartbeat."""
    started, finished = run.started_at, run.finished_at
    data = run.model_dump(exclude={"owner", "heartbeat_at", "organization_id"})
    data.update(queued_at=run.queued_at, started_at=started, finished_at=finished,
                duration_seconds=(finished - started).total_seconds() if started and finished else None)
    return data


def list_records(hub: Hub, connection: Connection, config: SyncConfig, *, mapped: bool, cursor: str | None,
                 limit: int, include_deleted: bool, pending_only: bool = False) -> tuple[list[dict[str, Any]], str | None]:
    listing = f"records:{config.id}"
    after = (decode_cursor(cursor, listing) or {}).get("after")
    if after is not None and not isinstance(after, str):
        raise InvalidCursor("the cursor is not one this API returned")
    mapper = mapper_for(hub, connection, config) if mapped else None
    with hub.session() as session:
        if session.get_bind().dialect.name == "postgresql":
            # As "= ANY(array)" PostgreSQL cannot take the connection for a constant and so
            # the order by (connection, entity, id) for the primary key's: for a tenant with
            # most of the table it walked the key, filtering out every other tenant's records.
            tenant = SyncRecord.connection_id == sa.any_(sa.bindparam("tenant", [connection.id], type_=ARRAY(sa.String)))
        else:
            tenant = SyncRecord.connection_id == connection.id
        query = select(SyncRecord).where(tenant, SyncRecord.entity == config.entity)
        if not include_deleted:
            query = query.where(SyncRecord.deleted.is_(False))
        if pending_only:
            query = query.where(SyncRecord.push_status.is_not(None))
        if after:
            query = query.where(SyncRecord.id > str(after))
        # (By the listing index's whole key: PostgreSQL would otherwise walk the primary
        # key through every other tenant's records, filtering, as a LIMIT tempts it to.)
        rows = list(session.exec(query.order_by(SyncRecord.connection_id, SyncRecord.entity, SyncRecord.id)
                                 .limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return [record_out(r, mapper) for r in rows], encode_cursor({"after": rows[-1].id}, listing) if more and rows else None


def get_record(hub: Hub, connection: Connection, config: SyncConfig, record_id: str, *, mapped: bool) -> dict[str, Any]:
    with hub.session() as session:
        row = find_record(session, connection.id, config.entity, record_id)
    if row is None:
        raise NotFound(f"no stored {config.entity} record {record_id}", code="record_not_found")
    return record_out(row, mapper_for(hub, connection, config) if mapped else None)


def _writable(config: SyncConfig, schema: EntitySchema) -> None:
    if not (schema.supports_create or schema.supports_update or schema.supports_delete):
        raise ReadOnly(f"{config.entity} is read-only at the provider: records can only be pulled")
    if config.direction == "pull":
        raise ReadOnly(f"the {config.entity} sync config only pulls; set its direction to push or both "
                       f"to write records through the hub")


def _to_provider(hub: Hub, connection: Connection, config: SyncConfig, data: dict[str, Any], mapped: bool,
                 current: dict[str, Any] | None) -> dict[str, Any]:
    mapper = mapper_for(hub, connection, config)
    if not mapped:
        mapper = Mapper(mapper.schema, [], mapper.minor_units)
    view = mapper.to_tenant(current) if current is not None else None
    if view is not None and mapped and not mapper.identity:
        # A client writing back the whole record: values it did not change are not converted back,
        # since some conversions lose detail (a name re-split, a time of day under a date).
        data = {key: value for key, value in data.items() if key not in view or view[key] != value}
        if not data:
            return {}
    changes = mapper.to_provider(data, current=view, raw=current)
    if not changes:
        raise ValidationFailed("the change sets no writable provider field", code="empty_change")
    return changes


def _recreated(hub: Hub, connection: Connection, config: SyncConfig, row: SyncRecord) -> dict[str, Any]:
    """What creates again a record the provider deleted and the tenant keeps:
    the fields the tenant works with (its mapped fields, when the config maps),
    writable and set. The rest of the old record (a Stripe customer's
    ``default_source``, its ``tax`` details) is the provider's to fill in, and
    a create refuses much of it."""
    mapper = mapper_for(hub, connection, config)
    view = merged_view(row)
    if not mapper.identity:
        # The raw values of the mapped fields: through the mapping and back, defaults would
        # replace what did not convert and joined names would be split anew.
        sources = {source.split(".")[0] for m in mapper.mappings for source in m.sources()}
        view = {k: v for k, v in view.items() if k in sources}
    writable = {f.name for f in mapper.schema.fields if not f.readonly} or None
    return {k: v for k, v in view.items() if v is not None and (writable is None or k in writable)}


def create_only_fields(schema: Any, changes: dict[str, Any]) -> list[str]:
    """The fields of ``changes`` the provider takes only when a record is created."""
    return sorted(f.name for f in schema.fields if f.create_only and f.name in changes)


def settle_create_only(schema: Any, changes: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """An update's changes without the create-only fields it writes back as
    ``current`` has them (a record read, then written whole).

    :raises ValidationFailed: ``read_only_field``, a create-only field changed
        (any, with no ``current`` to compare with).
    """
    unchanged = {name for name in create_only_fields(schema, changes)
                 if current is not None and changes[name] == current.get(name)}
    changes = {k: v for k, v in changes.items() if k not in unchanged}
    fixed = create_only_fields(schema, changes)
    if fixed:
        raise ValidationFailed(f"{', '.join(fixed)} of a {schema.name} record can only be set when it is "
                               f"created", code="read_only_field", details={"fields": fixed},
                               fields=fixed)
    return changes


def _check_indexes(current: dict[str, Any], changes: dict[str, Any], schema: Any) -> None:
    """Refuse a change through an array index the provider's version cannot take (see :func:`index_problem_at`)."""
    problem = index_problem_at(current, changes, schema)
    if problem:
        path, why = problem
        raise ValidationFailed(f"cannot write it: {why}", code="invalid_value", fields=[path])


def _still_configured(session: Any, config: SyncConfig) -> None:
    """Under the entity's write lock: the config read before it is still
    there (deleting a config, or its connection, takes the same lock; a
    write going on with the config it read would store a record no config
    owns, which the entity's next config would push)."""
    if session.get(SyncConfig, config.id) is None:
        raise NotFound("no such sync config", code="sync_config_not_found")


def write_record(hub: Hub, connection: Connection, config: SyncConfig, record_id: str | None,
                 data: dict[str, Any], *, mapped: bool) -> SyncRecord:
    """Create (``record_id`` None) or update a stored record; the change is
    pushed by the next push of the config."""
    schema = hub.provider(connection.provider).schema(config.entity)
    _writable(config, schema)
    now = utcnow()
    with write_transaction(hub, entity_key(connection.id, config.entity)) as session:
        _still_configured(session, config)
        if record_id is None:
            if not schema.supports_create:
                raise ReadOnly(f"{connection.provider} does not allow creating {config.entity}")
            created = _to_provider(hub, connection, config, data, mapped, None)
            _check_indexes({}, created, schema)
            row = local_create(session, connection.id, config.entity, created, now)
        else:
            row = find_record(session, connection.id, config.entity, record_id)
            if row is None or row.deleted:
                raise NotFound(f"no stored {config.entity} record {record_id}", code="record_not_found")
            if row.local_op == "delete":
                raise PendingDelete(f"the {config.entity} record {record_id} has a delete waiting to be pushed; "
                                    f"it cannot be changed")
            if row.remote_id is not None and not schema.supports_update:
                raise ReadOnly(f"{connection.provider} does not allow updating {config.entity}")
            current = merged_view(row)
            changes = _to_provider(hub, connection, config, data, mapped, current)
            if row.remote_id is not None or row.push_status == SENDING or row.sent_change:
                # Created (or being created: what changes now follows as an update). A value
                # written back as it is (a whole record read, then written) is no change.
                changes = settle_create_only(schema, changes, current)
            _check_indexes(current, changes, schema)
            if changes:  # else the same values as now: nothing to push
                local_update(session, row, changes, now)
        session.flush()
        session.refresh(row)
    return row


def delete_record(hub: Hub, connection: Connection, config: SyncConfig, record_id: str) -> SyncRecord | None:
    """Mark a record deleted by the tenant: returns the record whose delete is
    to be pushed, or None when nothing is (a record never created at the
    provider, which goes; one deleted already, so that a DELETE sent again,
    its first answer lost, succeeds as the first did)."""
    schema = hub.provider(connection.provider).schema(config.entity)
    _writable(config, schema)
    with write_transaction(hub, entity_key(connection.id, config.entity)) as session:
        _still_configured(session, config)
        row = find_record(session, connection.id, config.entity, record_id)
        if row is None:
            raise NotFound(f"no stored {config.entity} record {record_id}", code="record_not_found")
        if row.deleted:
            if row.local_op is not None and row.push_status != SENDING:
                # Deleted at the provider while the tenant's change waited (in review, say): the
                # tenant deleting it too settles it, for the provider's side, which has it gone.
                _drop_change(session, row, utcnow())
            return None
        if row.remote_id is not None and not schema.supports_delete:
            raise ReadOnly(f"{connection.provider} does not allow deleting {config.entity}")
        if row.remote_id is None and (row.push_status == SENDING or row.sent_change):
            # Sent, and whether it was made is not known yet.
            raise PendingCreate(f"the {config.entity} record {record_id} is being created at {connection.provider}; "
                                f"delete it once it has its provider id")
        result = local_delete(session, row, utcnow())
        if result is not None:
            session.flush()
            session.refresh(result)
    return result


def _resolve_for_provider(session: Any, row: SyncRecord, now: datetime) -> None:
    for conflict in session.exec(select(SyncConflict).where(SyncConflict.record_id == row.id,
                                                            SyncConflict.status == "open")):
        conflict.status, conflict.resolution, conflict.resolved_at = "resolved", "provider", now
        session.add(conflict)


def _drop_change(session: Any, row: SyncRecord, now: datetime) -> None:
    """Forget the tenant's change to a record the provider has, resolving its open conflict for the provider."""
    _resolve_for_provider(session, row, now)
    row.local_data, row.local_op, row.push_status, row.push_error = None, None, None, None
    row.push_attempts, row.local_version, row.updated_at = 0, row.local_version + 1, now
    row.sent_change = None
    session.add(row)


def discard_change(hub: Hub, connection: Connection, config: SyncConfig, record_id: str) -> SyncRecord | None:
    """Drop the tenant's change not pushed yet (one the provider refused, say):
    the record is the provider's version again, and a record never created
    there goes. Its open conflict is resolved for the provider.

    :raises PendingCreate: a create was sent and its outcome is not known.
    :raises ValidationFailed: no change to discard (``no_pending_change``).

    Allowed whatever the config's direction: a config switched to ``pull``
    keeps the changes made before, which no push will send.
    """
    now = utcnow()
    with write_transaction(hub, entity_key(connection.id, config.entity)) as session:
        row = find_record(session, connection.id, config.entity, record_id)
        if row is None:
            raise NotFound(f"no stored {config.entity} record {record_id}", code="record_not_found")
        if row.local_op is None:
            raise ValidationFailed(f"the {config.entity} record {record_id} has no change waiting to be pushed",
                                   code="no_pending_change")
        under_way = row.push_status == SENDING and running(session, connection.id)
        if row.remote_id is None and (row.push_status == SENDING or row.sent_change) and (
                under_way or config.direction != "pull"):
            # (The next push settles it: sends it again with its key, or marks it failed. A pull
            # config never pushes: discarding is the only way out, and a record made after all
            # comes with the next pull.)
            raise PendingCreate(f"the {config.entity} record {record_id} is being created at {connection.provider}; "
                                f"its outcome is not known yet")
        if under_way:
            # (No run under way: a hub stopped in the middle of the push left it so.)
            raise PushUnderWay(f"the change of the {config.entity} record {record_id} is being pushed to "
                               f"{connection.provider} right now; try again in a moment")
        if row.remote_id is None:
            _resolve_for_provider(session, row, now)
            session.delete(row)
            return None
        _drop_change(session, row, now)
        session.flush()
        session.refresh(row)
    return row


def running(session: Any, connection_id: str) -> bool:
    """Whether a sync run of the connection is under way: one shows ``running``
    and its process still holds the connection's lease. (A killed hub's run
    shows ``running`` until a worker or a restart takes it up again.)"""
    owners = set(session.exec(select(SyncRun.owner).where(SyncRun.connection_id == connection_id,
                                                          SyncRun.status == "running")).all())
    if not owners:
        return False
    lease = session.get(SyncLease, connection_id)
    return (lease is not None and lease.owner in owners and lease.expires_at > db_now(session)
            and owner_alive(lease.owner))


def list_conflicts(hub: Hub, connection: Connection, config: SyncConfig, status: str | None,
                   cursor: str | None = None, limit: int = 100) -> tuple[list[SyncConflict], str | None]:
    """Newest first, a page at a time; the cursor carries the last one's (time, id)."""
    listing = f"conflicts:{config.id}"
    position = (decode_cursor(cursor, listing) or {}).get("before")
    with hub.session() as session:
        query = select(SyncConflict).where(SyncConflict.connection_id == connection.id,
                                           SyncConflict.entity == config.entity)
        if status:
            query = query.where(SyncConflict.status == status)
        if position is not None:
            try:
                created, conflict_id = cursor_time(position[0]), str(position[1])
            except (TypeError, ValueError, IndexError, KeyError):
                raise InvalidCursor("the cursor is not one this API returned") from None
            query = query.where(after_newest_first(SyncConflict.created_at, created, SyncConflict.id, conflict_id,
                                                   ids_ascending=True))
        rows = list(session.exec(query.order_by(SyncConflict.created_at.desc(), SyncConflict.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more and rows else None
    return rows, encode_cursor({"before": [last.created_at.isoformat(), last.id]}, listing) if last else None


def resolve_conflict(hub: Hub, connection: Connection, config: SyncConfig, conflict_id: str, resolution: str,
                     data: dict[str, Any] | None, mapped: bool) -> SyncConflict:
    """Settle an open conflict: keep the provider's version, push the hub's
    change, or push ``data`` instead."""
    now = utcnow()
    with write_transaction(hub, entity_key(connection.id, config.entity)) as session:
        conflict = session.get(SyncConflict, conflict_id)
        if conflict is None or conflict.connection_id != connection.id or conflict.entity != config.entity:
            raise NotFound("no such conflict", code="conflict_not_found")
        if conflict.status != "open":
            raise ConflictResolved("the conflict is already resolved")
        row = session.get(SyncRecord, conflict.record_id)
        assert row is not None
        changes = None
        if resolution == "custom":
            if not data:
                raise ValidationFailed("a custom resolution needs data", code="missing_fields", fields=["data"])
            # Against the provider's version: what the custom data changes there is what to push.
            changes = _to_provider(hub, connection, config, data, mapped, merged_view(row) if row.deleted else row.data)
            if not row.deleted:  # (a deleted record's resolution creates it again: everything goes)
                changes = settle_create_only(hub.provider(connection.provider).schema(config.entity), changes,
                                             row.data)
        if resolution == "provider" or changes == {} or (changes is None and row.local_op is None):
            # (A hub side already settled, by a deletion it asked for: nothing of the hub's to push.)
            row.local_data, row.local_op, row.push_status, row.push_error = None, None, None, None
        else:
            if changes is not None:
                row.local_data, row.local_op = changes, "update"
            if row.deleted and row.local_op == "update":
                if row.remote_id is not None:
                    # The deleted record's id stays known as deleted: a late delivery of an old
                    # version of it must not bring it back beside the record created again.
                    session.add(SyncRecord(connection_id=row.connection_id, entity=row.entity,
                                           remote_id=row.remote_id, data={}, content_hash=row.content_hash,
                                           remote_updated_at=row.remote_updated_at, deleted=True,
                                           deleted_at=row.deleted_at or now, updated_at=now))
                row.local_op, row.local_data, row.remote_id = "create", _recreated(hub, connection, config, row), None
                row.deleted, row.deleted_at, row.data = False, None, {}
            row.push_status, row.push_error, row.push_attempts = PENDING, None, 0
            row.local_version += 1
            row.local_changed_at = now
        row.updated_at = now
        conflict.status, conflict.resolution, conflict.resolved_at = "resolved", resolution, now
        if resolution == "custom":
            conflict.resolution_data = changes
        session.add(row)
        session.add(conflict)
        session.flush()
        session.refresh(conflict)
    return conflict

