"""The sync engine: runs pull and push for a connection's sync configs through
the provider's CRUD hooks, for any installed provider.

Pull pages through ``list_records`` from the stored cursor (or the
modified-since watermark) and upserts each page into the record store as it
arrives; the cursor after a page commits in the same transaction as the page
(with the run's counters and the lease renewal; a transaction holds the pages
of at most :data:`COMMIT_SECONDS`). Whatever kills the process, the next run
resumes at the last committed page: nothing is lost, and the upsert absorbs
the pages fetched twice. Only one page (and the one fetched ahead) is ever in
memory.

The watermark of an incremental pass (the largest ``updated_field`` seen,
kept no later than the pass's start minus :data:`CLOCK_SKEW`, so that records
changed behind the cursor during the pass are fetched next time) and the
provider's own position (``Page.watermark``) are stored only when a pass
completes. A complete full pass also marks records the provider no longer
lists as deleted.

Push sends the tenant's pending changes with ``create_record`` /
``update_record`` / ``delete_record`` and stores what the provider returned
(so the next pull sees no change: no echo).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from hub.crypto import DecryptionError
from hub.events import emit
from hub.models import Connection, SyncConfig, SyncConflict, SyncRecord, SyncRun, SyncState, utcnow
from hub.plugins import Provider
from hub.runtime import Hub
from hub.sync import configs as config_service
from hub.sync.leases import Lease, LeaseLost, end_lease, holder_gone, new_owner, owner_alive
from hub.sync.store import (
    CONFLICT,
    FAILED,
    MAX_RECORD_ID,
    PENDING,
    SENDING,
    UNVERIFIED,
    Changes,
    Counts,
    apply_deletions,
    apply_records,
    entity_key,
    key_forgotten,
    kept_record,
    listening,
    may_have_applied,
    local_delete,
    local_update,
    lock,
    merged_view,
    own_write,
    record_hash,
    settle_conflict,
    seen_at,
    sent_attempts,
    sweep_unseen,
    tell_changes,
    update_payload,
    writable_payload,
    version_of,
    write_transaction,
)
from hub.sync.stored import run_out
from hub.types import (
    AuthFailed,
    EntitySchema,
    HubError,
    NotFound,
    NotSupported,
    Page,
    PartialRecord,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    ReadOnly,
    StaleVersion,
    ValidationFailed,
)

log = logging.getLogger("hub.sync")

PAGE_SIZE = 100
#: How far the hub's clock may be ahead of the provider's.
CLOCK_SKEW = timedelta(seconds=60)
#: How far the clocks of the hub's machines may be apart: a push takes the
#: changes stamped up to this much after it began.
PUSH_CLOCK_MARGIN = timedelta(seconds=60)
LEASE_TTL = 60.0
#: How long a run waits for another run of the same connection to finish.
LEASE_WAIT = 900.0
PUSH_BATCH = 100
#: Longest a pull keeps a transaction open before committing its pages, and
#: how long it keeps it open waiting for the next page.
#: Records of an entity without a modification time, pulled or answered to a
#: push, are stored as the time they were asked for less this (the provider's
#: clock may lag the hub's): webhook events older than that, retried late, do
#: not overwrite them.
PULLED_AS_OF_MARGIN = timedelta(seconds=60)
#: ... and they are compared with the stored version as the time they were
#: asked for less this: a webhook event's time is whole seconds on the
#: provider's clock (Stripe's ``created``), so a page asked for in the second
#: of a change may not hold it. Within this of an event, the event's version
#: stays until a later pull.
ASKED_AT_MARGIN = timedelta(seconds=2)
#: Times a pull starts its pass over in one run when the provider refuses a
#: position it handed out (a record deleted under the pass). Once: an error
#: that is not about the position fails the run after one more try, and the
#: next run starts from scratch anyway if the saved position is refused.
MAX_PASS_RESTARTS = 1
COMMIT_SECONDS = 0.25
IDLE_COMMIT_SECONDS = 0.005

TERMINAL = ("succeeded", "failed")
#: Update tries of one change remembered until an answer is stored (each may have been made).
MAX_ATTEMPTS_KEPT = 5
Progress = Callable[[str, str, int], None]

_runs = SyncRun.__table__
_records = SyncRecord.__table__
_states = SyncState.__table__


class Busy(HubError):
    code = "sync_busy"
    status = 409


# ---------------------------------------------------------------- runs


def create_run(hub: Hub, connection: Connection, *, entity: str | None = None, full_refresh: bool = False,
               direction: str | None = None, trigger: str = "manual", coalesce: bool = False,
               owner: str | None = None) -> tuple[SyncRun, bool]:
    """Record a queued run (creating default pull configs where needed).

    With ``coalesce`` an already queued run that does at least as much (same
    connection and entity, same direction or both) is returned instead of a
    new one (never a run claimed by its ``owner``).

    ``owner`` claims the run for the process that will execute it (``hub
    sync``, with :meth:`SyncEngine.execute`'s ``owner``): executors leave it
    alone while that process is alive and waits for it (:func:`waited_for`).

    :returns: the run and whether it is new.
    :raises NotFound: unknown entity. :raises ValidationFailed: bad direction, a
        direction no selected config has, or (no entity named) no enabled config.
    """
    if direction is not None and direction not in config_service.DIRECTIONS:
        raise ValidationFailed(f"direction must be one of {', '.join(config_service.DIRECTIONS)}",
                               code="invalid_direction")
    # Checked before the default configs are made: a refused request changes nothing.
    existing, missing = config_service.missing_configs(hub, connection, entity)
    ways = [c.direction for c in existing if (c.entity == entity if entity else c.enabled)] + ["pull"] * len(missing)
    if direction is not None and ways and not any(_ways(direction) & _ways(way) for way in ways):
        verbs = {"pull": "pulls", "push": "pushes"}
        if entity:
            message = (f"the {entity} sync config only {verbs[ways[0]]}; "
                       f"set its direction to {direction} or both to {direction} it")
        else:
            message = (f"no enabled sync config of this connection {verbs[direction]}; "
                       f"set one's direction to {direction} or both first")
        raise ValidationFailed(message, code="direction_not_configured")
    if not entity and not ways:
        raise ValidationFailed("every sync config of this connection is disabled: enable one, or name the entity "
                               "to sync", code="no_enabled_sync_config")
    configs = config_service.ensure_configs(hub, connection, entity) if missing else existing
    selected = [c for c in configs if (c.entity == entity if entity else c.enabled)]
    if direction is None:
        kinds = {c.direction for c in selected}
        direction = kinds.pop() if len(kinds) == 1 else "both"
    with hub.session() as session:
        if coalesce:
            # One request at a time looks and adds: two clicks at once must not both find none.
            lock(session, f"enqueue:{connection.id}")
            queued = session.exec(select(SyncRun).where(
                SyncRun.connection_id == connection.id, SyncRun.status == "queued",
                SyncRun.entity == entity if entity else SyncRun.entity.is_(None),
                SyncRun.direction.in_((direction, "both")),
                SyncRun.full_refresh.is_(True) if full_refresh else sa.true(),
                SyncRun.owner.is_(None))).first()
            if queued is not None:
                return queued, False
        run = SyncRun(organization_id=connection.organization_id, connection_id=connection.id, entity=entity,
                      direction=direction, full_refresh=full_refresh, trigger=trigger, owner=owner,
                      heartbeat_at=utcnow() if owner else None)
        session.add(run)
        session.commit()
        session.refresh(run)
        return run, True


class _PositionRefused(Exception):
    """The provider refused a cursor it handed out (earlier in the pass, or saved by the run it resumes)."""

    def __init__(self, error: HubError):
        super().__init__(error.message)
        self.error = error


def _carry_over(session: Any, echo: SyncRecord, row: SyncRecord, now: datetime) -> None:
    """The tenant's change to the pulled copy of a record the hub created
    becomes the created record's change (waiting in review if it was)."""
    if echo.local_op == "delete":
        local_delete(session, row, now)
    else:
        local_update(session, row, dict(echo.local_data or {}), now)
    if echo.push_status in (CONFLICT, FAILED):
        row.push_status, row.push_error, row.push_failure = echo.push_status, echo.push_error, echo.push_failure


def _overtaken(row: SyncRecord, seen: Any, answered: datetime | None) -> bool:
    """Whether the provider's version stored while a push was on its way (a
    webhook, a pull) is newer than the push's answer, which must not replace it:
    a deletion, a later version, or one whose age is unknown (the next pull
    settles it)."""
    if seen is None or (row.content_hash == seen.content_hash and row.deleted == seen.deleted):
        return False
    if row.deleted:
        return True
    stored = row.remote_updated_at
    return stored is None or answered is None or stored > answered


def _answer_versions(schema: EntitySchema, data: dict[str, Any],
                     asked_at: datetime | None) -> tuple[datetime | None, datetime | None]:
    """The version to store of a provider's answer, and the one to compare
    with what is stored: its own modification time, or for an entity without
    one, when it was asked for (less :data:`PULLED_AS_OF_MARGIN` stored, less
    :data:`ASKED_AT_MARGIN` compared)."""
    own = version_of(schema, data)
    if own is not None or schema.updated_field or asked_at is None:
        return own, own
    return asked_at - PULLED_AS_OF_MARGIN, asked_at - ASKED_AT_MARGIN


def _create_key(row: SyncRecord) -> str:
    """The idempotency key of a record's create, new for each version of the
    record sent: after a refusal, the changed record is a new request."""
    return f"hub-{row.id}" if row.local_version <= 1 else f"hub-{row.id}-{row.local_version}"


def _not_yet_sent(sent: dict[str, Any] | None) -> dict[str, Any] | None:
    """A create's ``sent_change`` after a call that certainly did not reach
    the provider: its key's memory there has not begun."""
    if not sent or "first_sent" not in sent:
        return sent
    return {key: value for key, value in sent.items() if key != "first_sent"}


def _uncertain_create(provider: str) -> str:
    return (f"the hub got no answer (or stopped) while creating this record at {provider}: it may exist there, "
            f"so it was not sent again. If the next pull brings it, delete this copy; if not, change this record "
            f"with sync to push it again")


def _ways(direction: str) -> set[str]:
    return {"pull", "push"} if direction == "both" else {direction}


def interrupted_runs(hub: Hub, connection_id: str | None = None) -> list[SyncRun]:
    """Runs marked running whose process is gone (killed, crashed)."""
    with hub.session() as session:
        query = select(SyncRun).where(SyncRun.status == "running")
        if connection_id:
            query = query.where(SyncRun.connection_id == connection_id)
        running = list(session.exec(query))
    return [r for r in running if holder_gone(hub, r.connection_id, r.owner)]


def requeue(hub: Hub, run_id: str, owner: str | None, reason: str, claimant: str | None = None) -> bool:
    """Put an interrupted run back in the queue (it resumes where it stopped),
    ending its holder's lease: a holder taken for gone that is still working
    stops at its next page instead of running beside the run's next execution.
    ``claimant`` claims it for the process that resumes it, as
    :func:`create_run`'s ``owner`` does."""
    with hub.session() as session:
        result = session.execute(
            sa.update(_runs).where(_runs.c.id == run_id, _runs.c.status == "running",
                                   _runs.c.owner == owner if owner else _runs.c.owner.is_(None))
            .values(status="queued", owner=claimant, error=reason[:2000],
                    heartbeat_at=utcnow() if claimant else _runs.c.heartbeat_at)
        )
        if result.rowcount == 1 and owner:
            connection_id = session.execute(sa.select(_runs.c.connection_id).where(_runs.c.id == run_id)).scalar()
            if connection_id:
                end_lease(session, connection_id, owner)
        session.commit()
    return result.rowcount == 1


#: A queued run claimed by a process (``hub sync``) is left to it while the
#: process is alive and has noted within this that it still waits for it.
CLAIM_TTL = timedelta(seconds=2 * LEASE_TTL)


def waited_for(run: SyncRun, now: datetime | None = None) -> bool:
    """Whether a queued run is claimed by a process that will execute it
    itself (``hub sync``): alive (checked on this machine) and noting every
    ``LEASE_TTL / 3`` that it still waits for the connection's lease (on
    other machines, where its process cannot be checked). Executors do not
    take such a run up: its process shows its progress and its options."""
    if run.status != "queued" or not run.owner or run.heartbeat_at is None:
        return False
    return run.heartbeat_at > (now or utcnow()) - CLAIM_TTL and owner_alive(run.owner)


def _bump(session: Any, run_id: str, counts: Counts, pages: int = 0) -> None:
    values = {name: getattr(_runs.c, name) + value for name, value in counts.as_dict().items() if value}
    if pages:
        values["pages"] = _runs.c.pages + pages
    values["heartbeat_at"] = utcnow()
    session.execute(sa.update(_runs).where(_runs.c.id == run_id).values(**values))


def _tell_push_changes(session: Any, config: SyncConfig, run_id: str, changes: Changes) -> None:
    """A push met the provider's version of a record (changed there, or
    deleted): the app hears of it as from a pull that found it."""
    if changes:
        connection = session.get(Connection, config.connection_id)
        tell_changes(session, None, organization_id=config.organization_id, connection_id=config.connection_id,
                     provider=connection.provider if connection else "", entity=config.entity,
                     sync_config_id=config.id, changes=changes, source="sync", run_id=run_id)


# ---------------------------------------------------------------- engine


@dataclass
class _Pass:
    """The pass in progress; its position is stored with every commit."""

    config_id: str
    mode: str
    cursor: str | None
    since: datetime | None
    started_at: datetime
    max_updated: datetime | None = None
    watermark: str | None = None
    pages: int = 0
    #: Whether a full pass must look for stored records the provider no longer lists.
    sweep: bool = True
    #: Begun by an earlier attempt (a run interrupted, or one that failed).
    resumed: bool = False


class _CursorCycle:
    """Notices a pass's cursors going round in a cycle (a provider or plugin
    bug that would otherwise page forever), in constant memory: Brent's
    algorithm keeps one earlier cursor, moved ahead at powers of two, and
    finds a cycle of any length within about twice its length."""

    def __init__(self, first: str | None):
        self.kept = first
        self.power = self.distance = 1

    def repeats(self, cursor: str) -> bool:
        if cursor == self.kept:
            return True
        if self.distance == self.power:
            self.kept, self.power, self.distance = cursor, self.power * 2, 0
        self.distance += 1
        return False


class _PageWriter:
    """Stores pages, each with the position after it, in transactions of at
    most :data:`COMMIT_SECONDS`: the pages of one transaction and the cursor
    after the last of them commit together, so a crash anywhere loses no
    record and the next run fetches the uncommitted pages again. Records are
    written as each page arrives, never held.

    Grouping pages saves a commit, the lock, the lease renewal and the run's
    counters per page; the transaction stays short so that webhooks and
    pushes waiting for the same records are not held up.
    """

    def __init__(self, engine: SyncEngine, run_id: str, config: SyncConfig, schema: EntitySchema, plan: _Pass,
                 lease: Lease, provider: str = ""):
        self.engine = engine
        self.provider = provider
        #: The app's endpoints taking ``records.changed``, read as each transaction opens.
        self.listeners: list[Any] = []
        self.run_id = run_id
        self.config = config
        self.schema = schema
        self.plan = plan
        self.lease = lease
        self.session: Any = None
        self.opened = 0.0
        self.pending = Counts()
        self.pending_pages = 0
        self.broken = False
        #: The last page was all new records (a first pull): insert the next one first.
        self.all_new = False
        self.last_write = 0.0
        # Writes, commits and the idle watch take turns on the session.
        self.turn = threading.Condition()
        self.closed = False
        self.watch = threading.Thread(target=self._commit_when_idle, name="sync-idle-commit", daemon=True)
        self.watch.start()

    def write(self, page: Page, next_cursor: str | None, as_of: datetime | None = None) -> Counts:
        """Store one page; commit when the transaction is old enough or the pass ends.

        ``as_of``, when the page was asked for, versions the records of an
        entity without an ``updated_field`` (Stripe's): a webhook event older
        than that (less :data:`PULLED_AS_OF_MARGIN`) is not applied over them,
        and they are not applied over one of the same moment (:data:`ASKED_AT_MARGIN`).
        """
        with self.turn:
            try:
                return self._write(page, next_cursor, as_of)
            except BaseException:
                self.broken = True
                # Rolled back here and now: the session may hold SQLite's write lock, and
                # close() waits for a thread of the pool that writers blocked on it may fill.
                if self.session is not None:
                    self.session.close()
                    self.session = None
                raise
            finally:
                self.last_write = time.monotonic()
                self.turn.notify()

    def _commit_when_idle(self) -> None:
        """Commit once no page has come for :data:`IDLE_COMMIT_SECONDS`.

        This thread, not the event loop, ends an idle transaction: whatever
        blocks the loop (a handler waiting for the same write lock, on SQLite
        any write) cannot keep the lock held, so it waits one page at most.
        """
        with self.turn:
            while not self.closed:
                if self.session is None or self.broken:
                    self.turn.wait()
                    continue
                idle = time.monotonic() - self.last_write
                if idle < IDLE_COMMIT_SECONDS:
                    self.turn.wait(IDLE_COMMIT_SECONDS - idle)
                    continue
                try:
                    self.commit()
                except Exception:
                    # The next write or close() meets the same failure and reports it.
                    log.warning("committing sync pages failed", exc_info=True)
                    self.broken = True

    def _write(self, page: Page, next_cursor: str | None, as_of: datetime | None) -> Counts:
        now = utcnow()
        if self.session is None:
            self.session = self.engine.hub.session()
            lock(self.session, entity_key(self.config.connection_id, self.config.entity))
            if self.session.get(SyncConfig, self.config.id) is None:
                raise NotFound(f"the {self.config.entity} sync config was deleted during the run",
                               code="sync_config_not_found")
            self.lease.renew_in(self.session)
            self.listeners = listening(self.session, self.config.organization_id)
            self.opened = time.monotonic()
        session = self.session
        # (Gathered only for an app that listens: a pull without endpoints does no more.)
        changes = Changes() if self.listeners else None
        if page.restarted and self.plan.since is None:
            # (A pass by ``since`` lists what changed since, again: nothing to sweep by it.)
            self._restart_as_full(session, as_of or now)
        # (Only without an updated_field: with one, a fallback would push the watermark ahead.)
        without_versions = as_of is not None and not self.schema.updated_field
        counts = apply_records(session, connection_id=self.config.connection_id, schema=self.schema,
                               policy=self.config.conflict_policy, records=page.records, now=now,
                               expect_new=self.all_new,
                               fallback_version=as_of - PULLED_AS_OF_MARGIN if without_versions else None,
                               fallback_asked_at=as_of - ASKED_AT_MARGIN if without_versions else None,
                               changes=changes)
        self.all_new = counts.created > 0 and counts.created == counts.fetched
        if page.deleted_ids:
            counts.add(apply_deletions(session, connection_id=self.config.connection_id, entity=self.schema.name,
                                       policy=self.config.conflict_policy, remote_ids=page.deleted_ids, now=now,
                                       changes=changes))
        plan = self.plan
        if counts.newest is not None and (plan.max_updated is None or counts.newest > plan.max_updated):
            plan.max_updated = counts.newest
        plan.watermark = page.watermark or plan.watermark
        plan.cursor = next_cursor
        plan.pages += 1
        self.pending.add(counts)
        self.pending_pages += 1
        if next_cursor is None:
            state = session.get(SyncState, self.config.id)
            assert state is not None
            if self._still_current(state):
                state.cursor, state.pass_pages, state.updated_at = None, plan.pages, now
                state.pass_max_updated, state.pass_watermark = plan.max_updated, plan.watermark
                self.pending.add(self.engine._end_pass(session, state, self.schema, plan, now,
                                                       self.config.conflict_policy, changes))
                session.add(state)
        if changes:
            tell_changes(session, self.listeners, organization_id=self.config.organization_id,
                         connection_id=self.config.connection_id, provider=self.provider, entity=self.schema.name,
                         sync_config_id=self.config.id, changes=changes, source="sync", run_id=self.run_id)
        if next_cursor is None:
            self.commit()
        elif time.monotonic() - self.opened >= COMMIT_SECONDS:
            self.commit()
        return counts

    def _restart_as_full(self, session: Any, at: datetime) -> None:
        """The provider started its listing over (``Page.restarted``): from
        here the pass is a full one begun ``at``, so that its end marks
        deleted what the new listing no longer gives, though earlier pages
        of the pass (or an incremental pass's start) had it."""
        plan = self.plan
        session.execute(sa.update(_states).where(*self._this_pass()).values(pass_mode="full", pass_started_at=at,
                                                                          pass_since=None))
        plan.mode, plan.started_at, plan.since, plan.sweep = "full", at, None, True

    def _this_pass(self) -> tuple[Any, ...]:
        """The state row, while its pass is this one (:meth:`_still_current`, in SQL)."""
        return (_states.c.sync_config_id == self.config.id, _states.c.pass_mode.is_not(None),
                _states.c.pass_started_at == self.plan.started_at)

    def _still_current(self, state: SyncState) -> bool:
        """Whether the stored pass is still this one: re-enabling the config
        resets it (the next pass must be a full one), and this pass must then
        store neither its position nor its end."""
        return state.pass_mode is not None and state.pass_started_at == self.plan.started_at

    def commit(self) -> None:
        """Commit the pages written so far with the position after them
        (unless the stored pass is no longer this one: see :meth:`_still_current`)."""
        if self.session is None:
            return
        if self.plan.cursor is not None:
            self.session.execute(sa.update(_states).where(*self._this_pass()).values(
                cursor=self.plan.cursor, pass_pages=self.plan.pages, pass_max_updated=self.plan.max_updated,
                pass_watermark=self.plan.watermark, updated_at=utcnow()))
        _bump(self.session, self.run_id, self.pending, pages=self.pending_pages)
        self.session.commit()
        self.session.close()
        self.session = None
        self.pending, self.pending_pages = Counts(), 0

    def close(self) -> None:
        """Commit the pages written so far (a fetch failed or the run stops),
        unless writing itself failed: then nothing uncommitted is kept."""
        with self.turn:
            self.closed = True
            self.turn.notify()
            if self.session is None:
                return
            try:
                if not self.broken:
                    self.commit()
            finally:
                if self.session is not None:
                    self.session.close()
                    self.session = None


class SyncEngine:
    """Executes sync runs. One instance may execute many runs, one at a time
    or concurrently for different connections."""

    def __init__(self, hub: Hub, *, page_size: int = PAGE_SIZE, lease_ttl: float = LEASE_TTL,
                 lease_wait: float = LEASE_WAIT, clock_skew: timedelta = CLOCK_SKEW,
                 progress: Progress | None = None):
        self.hub = hub
        self.page_size = page_size
        self.lease_ttl = lease_ttl
        self.lease_wait = lease_wait
        self.clock_skew = clock_skew
        self.progress = progress

    async def execute(self, run_id: str, owner: str | None = None,
                      slot: asyncio.Semaphore | None = None) -> SyncRun | None:
        """Execute (or resume) a run and return it finished.

        ``slot`` (the embedded executor's bound on runs at once) is taken
        before the connection's lease, which is then tried without waiting:
        while another process's run of the connection holds the lease, the
        run waits for it holding neither a slot (runs of other connections go
        on) nor, waiting for a slot, the lease (that process's next run of the
        connection is not kept out).

        Returns ``None`` when the run no longer exists. A run that is already
        finished is returned as it is; one executed by another process
        meanwhile, as it is then (``running``, or ``queued``).

        ``owner``: the owner the run was claimed with (:func:`create_run`):
        while waiting for the lease, this execution notes that it still waits
        for that owner's queued runs, so that executors leave them to it.
        """
        run = self._load(run_id)
        if run is None or run.status in TERMINAL:
            return run
        lease = Lease(self.hub, run.connection_id, owner or new_owner(), run.id, self.lease_ttl)
        waiting = asyncio.create_task(self._note_waiting(lease.owner)) if owner else None
        try:
            acquired = await (lease.acquire(self.lease_wait) if slot is None else self._acquire_in_slot(lease, slot))
        finally:
            if waiting is not None:
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
        if not acquired:
            # Failed only if still queued: the run itself may be what is running elsewhere (a job of
            # the queue and `hub sync` both executing it).
            await asyncio.to_thread(self._finish, run.id, None, "failed",
                                    Busy("another sync of this connection is still running"), "queued")
            return self._load(run_id)
        heartbeat = asyncio.create_task(self._heartbeat(lease, claimed=owner is not None))
        try:
            if not await asyncio.to_thread(self._claim, run.id, lease.owner):
                return self._load(run_id)
            error, note = await self._execute(run, lease)
            if error is None:  # before the run shows as finished: who waits for it sees the connection as it is
                await self._recover_connection(run.connection_id)
            await asyncio.to_thread(self._finish, run.id, lease.owner, "failed" if error else "succeeded", error,
                                    note=note)
        except LeaseLost:
            if self._load(run_id) is None:
                log.info("run %s stopped: its connection was deleted", run.id)
            else:
                log.warning("run %s lost its lease; another process resumes it", run.id)
        except asyncio.CancelledError:
            requeue(self.hub, run.id, lease.owner, "interrupted: the hub stopped; resumes on restart")
            raise
        except Exception as exc:
            log.exception("sync run %s crashed", run.id)
            await asyncio.to_thread(self._finish, run.id, lease.owner, "failed",
                                    HubError(f"internal error: {type(exc).__name__}", code="internal_error"))
        finally:
            heartbeat.cancel()
            try:
                await asyncio.to_thread(lease.release)
            finally:  # (a release that fails must not keep the slot from the runs to come)
                if slot is not None:
                    slot.release()
        return self._load(run_id)

    async def _acquire_in_slot(self, lease: Lease, slot: asyncio.Semaphore, poll: float = 0.5) -> bool:
        """A slot, then the lease without waiting; True holding both. While
        another process holds the lease, the slot is given back and the lease
        waited for (up to :attr:`lease_wait`) outside it."""
        deadline = None  # counted from the first slot: the wait for a slot is not the lease's
        while True:
            await slot.acquire()
            deadline = deadline or time.monotonic() + self.lease_wait
            try:
                taken = await asyncio.to_thread(lease.try_acquire)
            except BaseException:
                slot.release()
                raise
            if taken:
                return True
            slot.release()
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def _load(self, run_id: str) -> SyncRun | None:
        with self.hub.session() as session:
            return session.get(SyncRun, run_id)

    def _claim(self, run_id: str, owner: str) -> bool:
        now = utcnow()
        with self.hub.session() as session:
            claimed = session.execute(
                sa.update(_runs).where(_runs.c.id == run_id, _runs.c.status.in_(("queued", "running")))
                .values(status="running", owner=owner, started_at=sa.func.coalesce(_runs.c.started_at, now),
                        heartbeat_at=now, error=None, error_code=None)
            )
            session.commit()
        return claimed.rowcount == 1

    def _finish(self, run_id: str, owner: str | None, status: str, error: HubError | None,
                only_if: str | None = None, note: str | None = None) -> None:
        """Record the run's outcome; ``note`` is the ``error`` text of a run
        that succeeded (what it skipped, how many changes it did not push),
        with no ``error_code``."""
        now = utcnow()
        with self.hub.session() as session:
            if status == "succeeded":
                failed = session.execute(sa.select(_runs.c.failed).where(_runs.c.id == run_id)).scalar()
                if failed:  # (a client reading only the status took the run for the change being sent)
                    unsent = (f"{failed} change{'s were' if failed > 1 else ' was'} not pushed: the records' "
                              f"push_status and push_error say why (?pending=true lists them)")
                    note = f"{unsent}; {note}" if note else unsent
            query = sa.update(_runs).where(_runs.c.id == run_id)
            if owner:
                query = query.where(_runs.c.owner == owner)
            if only_if:
                query = query.where(_runs.c.status == only_if)
            finished = session.execute(query.values(
                status=status, finished_at=now, heartbeat_at=now,
                error=error.message[:2000] if error else (note[:2000] if note else None),
                error_code=error.code if error else None))
            if finished.rowcount != 1:
                # Put back in the queue meanwhile (its holder taken for gone), or finished elsewhere:
                # this execution's outcome is not the run's.
                if owner:
                    log.warning("run %s was no longer %s's to finish (%s not recorded)", run_id, owner, status)
                return
            connection_id = self._connection_of(session, run_id)  # None: the connection (and run) was deleted
            connection = session.get(Connection, connection_id) if connection_id else None
            if connection is not None:
                connection.last_sync_at, connection.last_sync_status, connection.last_sync_run_id = now, status, run_id
                connection.last_sync_error = (error.message[:2000] if error else None) if status == "failed" else None
                session.add(connection)
                if status == "failed" and isinstance(error, RateLimited) and error.retry_after:
                    self._resume_when_limit_frees(session, connection, run_id, now, error.retry_after)
                # (In the outcome's transaction: the app hears of the run if and only if it ended.)
                run = session.get(SyncRun, run_id)
                if run is not None:
                    emit(session, connection.organization_id, f"sync.{status}",
                         {"connection_id": connection.id, "provider": connection.provider, "run": run_out(run)})
            session.commit()

    @staticmethod
    def _resume_when_limit_frees(session: Any, connection: Connection, run_id: str, now: datetime,
                                 retry_after: float) -> None:
        """A scheduled run stopped by the provider's rate limit: its schedule (the
        connection's, or the config's it ran) runs next when the limit frees, if that is
        later than its next period (a five-minute sync after a daily quota, whose runs would
        only fail until then). Never sooner: each run would meet the limit again."""
        if not (math.isfinite(retry_after) and retry_after > 0):
            return
        resume = now + timedelta(seconds=min(retry_after, 7 * 86400) + 1)
        entity, trigger = session.execute(sa.select(_runs.c.entity, _runs.c.trigger)
                                          .where(_runs.c.id == run_id)).one()
        if trigger != "schedule":
            return
        if entity is None:
            if connection.next_sync_at is None or connection.next_sync_at < resume:
                connection.next_sync_at = resume
            return
        config = session.exec(select(SyncConfig).where(SyncConfig.connection_id == connection.id,
                                                       SyncConfig.entity == entity)).first()
        if config is not None and config.schedule_minutes is not None and (
                config.next_sync_at is None or config.next_sync_at < resume):
            config.next_sync_at = resume
            session.add(config)

    async def _recover_connection(self, connection_id: str) -> None:
        """After a run that succeeded, a connection in ``error`` is ``connected``
        again once its credentials pass the provider's test: the run may not
        have used them (Plaid's institutions, a push with nothing to send)."""
        connection = await self.hub.db(self.hub._stored_connection, connection_id)
        if connection is None or connection.status != "error":
            return
        try:
            provider = self.hub.provider(connection.provider)
            await self.hub.call(provider, "test_connection", self.hub.context(provider, connection))
        except NotSupported:
            pass  # nothing better to go by than the run
        except HubError:
            return
        await asyncio.to_thread(self.hub.mark, connection_id, "connected", None)

    def _run_targets(self, run: SyncRun) -> tuple[Connection | None, list[SyncConfig]]:
        """The run's connection and the sync configs it runs."""
        with self.hub.session() as session:
            connection = session.get(Connection, run.connection_id)
            query = select(SyncConfig).where(SyncConfig.connection_id == run.connection_id)
            if run.entity:
                query = query.where(SyncConfig.entity == run.entity)
            else:
                query = query.where(SyncConfig.enabled)
                if run.trigger == "schedule":
                    query = query.where(SyncConfig.schedule_minutes.is_(None))
            return connection, list(session.exec(query.order_by(SyncConfig.entity)))

    @staticmethod
    def _connection_of(session: Any, run_id: str) -> str | None:
        return session.execute(sa.select(_runs.c.connection_id).where(_runs.c.id == run_id)).scalar()

    async def _heartbeat(self, lease: Lease, claimed: bool = False) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                if claimed:  # the owner's other runs (hub sync's next ones) still wait for it
                    await asyncio.to_thread(self._touch_claimed, lease.owner)
                await asyncio.to_thread(lease.renew)
            except LeaseLost:
                return
            except Exception:
                log.warning("could not renew the sync lease of %s", lease.connection_id, exc_info=True)

    async def _note_waiting(self, owner: str) -> None:
        """While waiting for the lease: the runs claimed by ``owner`` are still waited for."""
        while True:
            try:
                await asyncio.to_thread(self._touch_claimed, owner)
            except Exception:
                log.warning("could not note that %s still waits for its runs", owner, exc_info=True)
            await asyncio.sleep(self.lease_ttl / 3)

    def _touch_claimed(self, owner: str) -> None:
        with self.hub.session() as session:
            session.execute(sa.update(_runs).where(_runs.c.owner == owner, _runs.c.status == "queued")
                            .values(heartbeat_at=utcnow()))
            session.commit()

    async def _execute(self, run: SyncRun, lease: Lease) -> tuple[HubError | None, str | None]:
        """Run the run's configs, each in turn; returns the run's error (None
        when it succeeded) and a note for a run that succeeded.

        A config deleted after the run began (the tenant removed it while the
        run was busy with another entity, or with this one) is skipped: the
        run goes on with the others and succeeds if they do, its note naming
        what was skipped. Only a run whose every config was deleted fails
        (``sync_config_not_found``): it synced nothing."""
        connection, configs = await self.hub.db(self._run_targets, run)
        if connection is None:
            return NotFound("the connection was deleted", code="connection_not_found"), None
        try:
            provider = self.hub.provider(connection.provider)
        except NotFound as exc:
            return exc, None
        if not configs:
            return NotFound(f"no sync config for {run.entity or 'this connection'}",
                            code="sync_config_not_found"), None
        try:
            ctx = self.hub.context(provider, connection)
        except DecryptionError as exc:  # the hub's secret key changed: the connection says so too
            await asyncio.to_thread(self.hub.mark, connection.id, "error", exc.message)
            return exc, None
        errors: list[HubError] = []
        skipped: list[str] = []
        for config in configs:
            try:
                schema = provider.schema(config.entity)
                if config.direction in ("pull", "both") and run.direction in ("pull", "both"):
                    await self._pull(run, config, provider, schema, ctx, lease)
                if config.direction in ("push", "both") and run.direction in ("push", "both"):
                    await self._push(run, config, provider, schema, ctx, lease)
            except AuthFailed as exc:
                errors.append(exc)
                break
            except HubError as exc:
                if exc.code == "sync_config_not_found" and await self.hub.db(self._config_gone, config.id):
                    log.info("sync of %s %s skipped: its config was deleted during the run", connection.id,
                             config.entity)
                    skipped.append(config.entity)
                    continue
                log.warning("sync of %s %s failed: %s", connection.id, config.entity, exc.message)
                errors.append(exc)
        note = None
        if skipped:
            which = f"the {', '.join(skipped)} sync config{'s were' if len(skipped) > 1 else ' was'}"
            if len(skipped) == len(configs):
                return NotFound(f"{which} deleted during the run", code="sync_config_not_found"), None
            note = f"skipped: {which} deleted during the run"
        if not errors:
            return None, note
        first = errors[0]
        message = "; ".join(e.message for e in errors)
        if len(configs) > 1:
            message = f"{len(errors)} of {len(configs)} entities failed: {message}"
        if note:
            message = f"{message} ({note})"
        if all(isinstance(e, RateLimited) for e in errors):
            # Kept: a scheduled connection resumes the run once the limit frees (_finish).
            waits = [e.retry_after for e in errors if isinstance(e, RateLimited) and e.retry_after]
            return RateLimited(message, code=first.code, retry_after=max(waits) if waits else None), None
        return type(first)(message, code=first.code), None

    def _config_gone(self, config_id: str) -> bool:
        with self.hub.session() as session:
            return session.get(SyncConfig, config_id) is None

    # -- pull

    async def _pull(self, run: SyncRun, config: SyncConfig, provider: Provider, schema: EntitySchema,
                    ctx: Any, lease: Lease) -> None:
        plan = await asyncio.to_thread(self._begin_pass, config, schema, run.full_refresh, lease, run.queued_at)
        # A saved position refused on resuming (Stripe's starting_after names a customer deleted
        # since), or the one the last pass ended at (Plaid's cursor), would fail every run:
        # starting over for it does not count against the restarts.
        restarts = MAX_PASS_RESTARTS + (1 if plan.cursor is not None else 0)
        while True:
            try:
                return await self._pass(run, config, provider, schema, ctx, lease, plan)
            except _PositionRefused as refused:
                if not restarts:
                    raise refused.error from None
                restarts -= 1
                # The provider no longer takes a position it handed out (the record Stripe's
                # starting_after names was deleted meanwhile): the pages stored stay, and the
                # pass starts over (its repeats are absorbed by the upsert).
                log.warning("the %s position of %s was refused (%s): starting the pass over",
                            schema.name, config.connection_id, refused.error.message)
                plan = await asyncio.to_thread(self._begin_pass, config, schema, run.full_refresh, lease,
                                               run.queued_at, True)

    async def _pass(self, run: SyncRun, config: SyncConfig, provider: Provider, schema: EntitySchema, ctx: Any,
                    lease: Lease, plan: _Pass) -> None:
        """Page through the provider from the plan's position to the end of the pass.

        :raises _PositionRefused: the provider refused a cursor it handed out
            (earlier in this pass, or in the resumed one's run).
        """
        writer = _PageWriter(self, run.id, config, schema, plan, lease, provider.name)
        cursor = plan.cursor
        cycle = _CursorCycle(cursor)
        fetch = asyncio.create_task(self._fetch(provider, ctx, schema, cursor, plan.since))
        # A resumed pass, or one from where the last ended (``start_cursor``), starts from a
        # position the provider handed out; a new one from its own.
        fetched = 1 if cursor is not None else 0
        try:
            while True:
                try:
                    page, as_of = await fetch
                except (ValidationFailed, NotFound) as exc:
                    if not fetched:  # the pass's own starting point: not a position handed out
                        raise
                    raise _PositionRefused(exc) from exc
                fetched += 1
                next_cursor = page.next_cursor or None
                if page.restarted:  # a listing from the start again hands out its cursors again
                    cycle = _CursorCycle(None)
                if next_cursor is not None and cycle.repeats(next_cursor):
                    raise ProviderError(f"provider {provider.name} returned the {schema.name} cursor {next_cursor!r} "
                                        "again in one pass: its pages go round in a cycle")
                if next_cursor is not None:
                    fetch = asyncio.create_task(self._fetch(provider, ctx, schema, next_cursor, plan.since))
                counts = await asyncio.to_thread(writer.write, page, next_cursor, as_of)
                if self.progress:
                    self.progress("page", schema.name, counts.fetched)
                if next_cursor is None:
                    return
                cursor = next_cursor
        finally:
            if not fetch.done():
                fetch.cancel()
            await asyncio.to_thread(writer.close)

    async def _fetch(self, provider: Provider, ctx: Any, schema: EntitySchema, cursor: str | None,
                     since: datetime | None) -> tuple[Page, datetime]:
        """A page, and when it was asked for (its records are at least that new)."""
        as_of = utcnow()
        # Hub.call checks the result is a Page (HOOK_RESULTS).
        page = await self.hub.call(provider, "list_records", ctx, entity=schema.name, cursor=cursor,
                                   page_size=self.page_size, filters={}, since=since)
        return page, as_of

    def _begin_pass(self, config: SyncConfig, schema: EntitySchema, full_refresh: bool, lease: Lease,
                    queued_at: datetime, start_over: bool = False) -> _Pass:
        """Resume the pass in progress, or plan and store a new one.

        A full refresh resumes only a full pass begun after it was queued (by
        this run, before an interruption); ``start_over`` drops the pass in
        progress."""
        now = utcnow()
        with write_transaction(self.hub, entity_key(config.connection_id, config.entity)) as session:
            lease.renew_in(session)
            # Loaded when the run began: deleted since (under this lock), it has no state to store.
            if session.get(SyncConfig, config.id) is None:
                raise NotFound(f"the {config.entity} sync config was deleted during the run",
                               code="sync_config_not_found")
            state = session.get(SyncState, config.id)
            if state is None:
                state = SyncState(sync_config_id=config.id, connection_id=config.connection_id, entity=config.entity)
            earlier = state.pass_started_at is None or state.pass_started_at < queued_at
            if start_over and state.pass_mode == "incremental" and state.start_cursor:
                # The position the last pass ended at may be the one refused: a full pass (which also
                # finds what was deleted since), not the same refusal again and again.
                state.start_cursor = None
            resumable = state.pass_mode is not None and not start_over and not (
                full_refresh and (state.pass_mode != "full" or earlier))
            if not resumable:
                incremental_since = (schema.supports_since and schema.updated_field and not schema.since_on_creation
                                     and state.watermark)
                # (An entity whose increments miss some changes is listed whole now and then.)
                full_due = schema.full_pass_hours is not None and (
                    state.last_full_pass_at is None
                    or now - state.last_full_pass_at >= timedelta(hours=schema.full_pass_hours))
                if full_refresh or full_due or state.last_pass_at is None or not (
                        state.start_cursor or incremental_since):
                    mode, cursor, since = "full", None, None
                elif state.start_cursor:
                    mode, cursor, since = "incremental", state.start_cursor, None
                else:
                    mode, cursor, since = "incremental", None, state.watermark
                state.pass_mode, state.pass_started_at, state.cursor, state.pass_since = mode, now, cursor, since
                state.pass_max_updated, state.pass_watermark, state.pass_pages = None, None, 0
                state.updated_at = now
                session.add(state)
            elif state.pass_started_at is None:  # (a pass stored without its start: it is this pass's)
                state.pass_started_at = now
                session.add(state)
            # A full pass over an entity with nothing stored has nothing to mark deleted at its end
            # (what webhooks store meanwhile is seen after the pass started); a resumed pass cannot tell.
            sweep = resumable or state.pass_mode != "full" or session.execute(
                sa.select(_records.c.id).where(_records.c.connection_id == config.connection_id,
                                               _records.c.entity == config.entity,
                                               _records.c.deleted.is_(False)).limit(1)).first() is not None
            return _Pass(config.id, state.pass_mode, state.cursor, state.pass_since,
                         state.pass_started_at, state.pass_max_updated, state.pass_watermark,
                         state.pass_pages, sweep=sweep, resumed=resumable)

    def _end_pass(self, session: Any, state: SyncState, schema: EntitySchema, plan: _Pass, now: datetime,
                  policy: str, changes: Changes | None = None) -> Counts:
        swept = Counts()
        if plan.mode == "full":
            if plan.sweep:
                swept = sweep_unseen(session, connection_id=state.connection_id, entity=schema.name,
                                     seen_since=plan.started_at, now=now, policy=policy, schema=schema,
                                     changes=changes)
            state.last_full_pass_at = now
        newest = state.pass_max_updated
        if schema.supports_since and schema.updated_field and not schema.since_on_creation and newest is not None:
            candidate = min(newest, plan.started_at - self.clock_skew)
            previous = state.watermark
            state.watermark = candidate if previous is None else max(previous, candidate)
        if state.pass_watermark:
            state.start_cursor = state.pass_watermark
        elif plan.mode == "full":
            state.start_cursor = None
        state.pass_mode, state.cursor, state.pass_since = None, None, None
        state.pass_max_updated, state.pass_watermark = None, None
        state.last_pass_at = now
        return swept

    # -- push

    async def _push(self, run: SyncRun, config: SyncConfig, provider: Provider, schema: EntitySchema,
                    ctx: Any, lease: Lease) -> None:
        attempted: set[str] = set()
        followed: set[str] = set()
        # The changes made before it began: one made meanwhile queued a push run of its own, and
        # a run that took every new change too would not end while the tenant keeps writing
        # (holding up the connection's other runs). Give or take the clocks of other machines:
        # a change made just before, by a clock ahead of this one, joined this run as it was queued.
        began = utcnow() + PUSH_CLOCK_MARGIN
        while True:
            batch = await asyncio.to_thread(self._pending, config, attempted, began, followed)
            if not batch:
                return
            for row in batch:
                attempted.add(row.id)
                if await self._push_one(run.id, config, provider, schema, ctx, lease, row) and row.id not in followed:
                    # Made, with a change still to send (made while on its way, or a create sent
                    # again as first sent): once more in this run.
                    followed.add(row.id)
                    attempted.discard(row.id)
                if self.progress:
                    self.progress("push", schema.name, 1)

    def _pending(self, config: SyncConfig, attempted: set[str], changed_by: datetime,
                 followed: set[str]) -> list[SyncRecord]:
        """Changes to send: made by ``changed_by``, or of records already sent in this run (``followed``)."""
        with self.hub.session() as session:
            query = (select(SyncRecord)
                     .where(SyncRecord.connection_id == config.connection_id, SyncRecord.entity == config.entity,
                            SyncRecord.push_status.in_((PENDING, SENDING)),
                            sa.or_(SyncRecord.local_changed_at <= changed_by, SyncRecord.local_changed_at.is_(None),
                                   SyncRecord.id.in_(followed) if followed else sa.false()))
                     # Records that failed more often go after the others: one the provider keeps
                     # failing on does not hold back every later change.
                     .order_by(SyncRecord.push_attempts, SyncRecord.local_changed_at, SyncRecord.id)
                     .limit(PUSH_BATCH + len(attempted)))
            return [r for r in session.exec(query) if r.id not in attempted][:PUSH_BATCH]

    async def _push_one(self, run_id: str, config: SyncConfig, provider: Provider, schema: EntitySchema,
                        ctx: Any, lease: Lease, row: SyncRecord) -> bool:
        """Send one record's change; True when it was made and a later change is still to send."""
        try:
            op, payload = row.local_op, update_payload(row, schema)
        except ValidationFailed as exc:  # it can no longer be sent as it is: left to the tenant
            await asyncio.to_thread(self._store_push, run_id, config, schema, lease, row, None, exc, True)
            return False
        result: Any = None
        failure: HubError | None = None
        permanent = False
        creating = op == "create"
        # Without idempotent creates, a create whose outcome is unknown must not be sent twice.
        guarded = creating and not provider.info.idempotent_creates
        if creating and not guarded and key_forgotten((row.sent_change or {}).get("first_sent"),
                                                       provider.info.idempotency_key_seconds, utcnow()):
            # Its key is past the provider's memory: sent again, it would make a second record.
            failure = ProviderUnavailable(_uncertain_create(provider.name))
            await asyncio.to_thread(self._store_push, run_id, config, schema, lease, row, None, failure, True)
            return False
        if guarded and row.push_status == SENDING:
            # Left so by a hub that stopped mid-call: the provider may have it already.
            failure, permanent = ProviderUnavailable(_uncertain_create(provider.name)), True
            await asyncio.to_thread(self._store_push, run_id, config, schema, lease, row, None, failure, True)
            return False
        create, clock_started = None, False
        if creating:
            # A create sent before whose outcome is unknown goes again as it was: the provider
            # replays its key only with the same data. Changes made since follow as an update.
            create = (row.sent_change if row.sent_change and not guarded
                      else {"key": _create_key(row), "data": payload})
            # (When the provider first got its key: a create refused unsent has not been sent yet.)
            clock_started = not create.get("first_sent")
            create = {**create, "first_sent": create.get("first_sent") or utcnow().isoformat()}
            payload = dict(create["data"])
        # The batch was read a while ago: the record must still have this change, and its config exist.
        seen = await asyncio.to_thread(self._mark_sending, lease, row, None if guarded else create, payload)
        if seen is None:
            return False  # changed, discarded or gone meanwhile: the next push takes what is there
        asked_at = utcnow()
        base = row.data if op in ("update", "delete") else None  # the provider's version the change was made on
        try:
            if op in ("update", "delete") and config.conflict_policy != "hub_wins" and "get_record" in provider.hooks:
                # Changed at the provider since the last pull? Then a conflict under the policy, not
                # an overwrite: a push queued by a write does not pull first.
                try:
                    current = await self.hub.call(provider, "get_record", ctx, entity=schema.name,
                                                  record_id=row.remote_id)
                except NotFound:
                    current = None  # deleted there: the update below meets the same 404
                if current is not None:
                    seen = await asyncio.to_thread(self._before_sending, run_id, config, schema, lease, row,
                                                   current, payload, asked_at)
                    if seen is None:
                        return False
                    base = current
            try:
                result = await self._send(provider, ctx, schema, op, row, payload, create, base)
            except StaleVersion:
                # Changed there after the version it went on: read it again, and the change meets it
                # as a conflict under the policy (or, under hub_wins, goes once more on it).
                if op == "create" or "get_record" not in provider.hooks:
                    raise
                asked_at = utcnow()
                try:
                    current = await self.hub.call(provider, "get_record", ctx, entity=schema.name,
                                                  record_id=row.remote_id)
                except NotFound:
                    if op == "update":
                        raise  # deleted there: a conflict, as for an update meeting a 404
                    current = None  # a delete: gone, as wanted
                if current is not None:  # (None: a delete whose record is gone there, as wanted)
                    if config.conflict_policy != "hub_wins":
                        seen = await asyncio.to_thread(self._before_sending, run_id, config, schema, lease, row,
                                                       current, payload, asked_at)
                        if seen is None:
                            return False
                    result = await self._send(provider, ctx, schema, op, row, payload, create, current)
        except AuthFailed:
            await asyncio.to_thread(self._store_push, run_id, config, schema, lease, row, None, None, False, True,
                                    clock_started=clock_started)
            raise
        except StaleVersion as exc:
            # Changed there again as it was sent once more, or the plugin cannot read it again: the
            # tenant decides (a pull brings the provider's version; then change it again).
            failure, permanent = exc, True
        except (ValidationFailed, ReadOnly, NotSupported, NotFound) as exc:
            failure, permanent = exc, True
        except HubError as exc:
            failure = exc
            if guarded and may_have_applied(exc):  # (the record may exist: not sent again)
                failure, permanent = ProviderUnavailable(_uncertain_create(provider.name)), True
        more = await asyncio.to_thread(self._store_push, run_id, config, schema, lease, row, result, failure,
                                       permanent, sent_data=payload if creating else None, seen=seen,
                                       asked_at=asked_at, clock_started=clock_started)
        if failure is not None and not permanent:
            raise failure
        return more

    async def _send(self, provider: Provider, ctx: Any, schema: EntitySchema, op: str, row: SyncRecord,
                    payload: dict[str, Any], create: dict[str, Any] | None, base: dict[str, Any] | None) -> Any:
        """Make the change at the provider: what its create, update or delete answered."""
        if op == "create":
            if not schema.supports_create:
                raise ReadOnly(f"{provider.name} does not allow creating {schema.name}")
            return await self.hub.call(provider, "create_record", ctx, entity=schema.name,
                                       data=writable_payload(payload, schema), idempotency_key=create["key"])
        if op == "update":
            if not schema.supports_update:
                raise ReadOnly(f"{provider.name} does not allow updating {schema.name}")
            return await self.hub.call(provider, "update_record", ctx, entity=schema.name, record_id=row.remote_id,
                                       data=writable_payload(payload, schema), base=base)
        if not schema.supports_delete:
            raise ReadOnly(f"{provider.name} does not allow deleting {schema.name}")
        try:
            return await self.hub.call(provider, "delete_record", ctx, entity=schema.name, record_id=row.remote_id,
                                       base=base)
        except NotFound:
            return None  # gone already: what the delete wanted

    def _before_sending(self, run_id: str, config: SyncConfig, schema: EntitySchema, lease: Lease,
                        row: SyncRecord, current: dict[str, Any], payload: dict[str, Any],
                        asked_at: datetime | None = None) -> Any:
        """Whether to send the change, given the provider's current version:
        yes when it is the version stored, or differs from it only by the
        hub's own write (sent before, its answer lost), which is then stored;
        no (None) when a webhook settled the record meanwhile, or the provider
        changed it: then the change meets that version as a conflict under the
        policy. Returns the version stored, as :meth:`_mark_sending` does."""
        now = utcnow()
        with write_transaction(self.hub, entity_key(config.connection_id, config.entity)) as session:
            lease.renew_in(session)
            stored = session.get(SyncRecord, row.id)
            if stored is None or stored.push_status != SENDING:
                return None
            if stored.local_version != row.local_version:  # changed while being read: the next push sends it
                stored.push_status = PENDING
                session.add(stored)
                return None
            digest = record_hash(current)
            if digest != stored.content_hash:
                # (Stored from a partial answer to the hub's own write: this is the record it made.)
                if stored.content_hash != UNVERIFIED and not own_write(stored, current, schema.fields):
                    stored.push_status = PENDING  # no longer on its way: the conflict settles it
                    session.add(stored)
                    session.flush()
                    changes = Changes()
                    settled = settle_conflict(session, stored.id, config.conflict_policy, current, digest,
                                              _answer_versions(schema, current, asked_at)[0], now, schema, changes)
                    _tell_push_changes(session, config, run_id, changes)
                    if settled:
                        _bump(session, run_id, Counts(conflicts=1))
                        return None
                    # No conflict: the provider's version holds the change already (made at both ends,
                    # or sent before and its answer lost), now stored. An update is then done: sent
                    # on, its payload (made from the version before) would undo the provider's other
                    # changes since.
                    if stored.local_op == "update":
                        stored.local_data, stored.local_op, stored.push_status = None, None, None
                        stored.push_error, stored.push_failure, stored.push_attempts = None, None, 0
                        stored.sent_change, stored.pushed_at = None, now
                        session.add(stored)
                        return None
                    stored.push_status = SENDING
                    session.add(stored)
                # An update sent before was made (its answer was lost): the provider's version holds it.
                stored.data, stored.content_hash = current, digest
                stored.remote_updated_at = _answer_versions(schema, current, asked_at)[0]
                stored.last_seen_at, stored.updated_at = seen_at(stored, now), now
                session.add(stored)
            return types.SimpleNamespace(content_hash=stored.content_hash, deleted=stored.deleted,
                                         remote_updated_at=stored.remote_updated_at)

    def _mark_sending(self, lease: Lease, row: SyncRecord, create: dict[str, Any] | None,
                      payload: dict[str, Any]) -> Any:
        """Note that the record's change is on its way (a create with its key and
        data, an update with ``payload``, the data sent), committed before the call, if the record still has the change
        read with the batch. Returns the provider's version as stored now
        (``content_hash``, ``deleted``, ``remote_updated_at``), or None.

        :raises LeaseLost: the run is no longer this execution's (taken for
            gone, and run by another): nothing is sent, or both would send it.
        """
        values: dict[str, Any] = {"push_status": SENDING}
        if row.local_op == "create":
            values["sent_change"] = create
        elif row.local_op == "update":
            # Each try is kept until an answer is stored: any of them may have been made.
            values["sent_change"] = {"attempts": [*sent_attempts(row), payload][-MAX_ATTEMPTS_KEPT:]}
        with write_transaction(self.hub, entity_key(row.connection_id, row.entity)) as session:
            lease.renew_in(session)
            marked = session.execute(sa.update(_records).where(
                _records.c.id == row.id, _records.c.push_status.in_((PENDING, SENDING)),
                _records.c.local_version == row.local_version).values(**values))
            if marked.rowcount != 1:
                return None
            return session.execute(sa.select(_records.c.content_hash, _records.c.deleted,
                                             _records.c.remote_updated_at).where(_records.c.id == row.id)).one()

    def _store_push(self, run_id: str, config: SyncConfig, schema: EntitySchema, lease: Lease, sent: SyncRecord,
                    result: Any, failure: HubError | None, permanent: bool, unsent: bool = False,
                    sent_data: dict[str, Any] | None = None, seen: Any = None,
                    asked_at: datetime | None = None, clock_started: bool = False) -> bool:
        """Store a push's outcome; True when it was made and the record has a later change to send.

        ``seen`` is the provider's version stored when the change was sent: a
        newer one stored meanwhile (a webhook, a pull) is kept, not overwritten
        by the push's answer."""
        now = utcnow()
        counts = Counts()
        with write_transaction(self.hub, entity_key(config.connection_id, config.entity)) as session:
            lease.renew_in(session)
            row = session.get(SyncRecord, sent.id)
            if row is None:
                return False
            if unsent:  # the call never happened (credentials refused): back to waiting
                row.push_status = PENDING if row.push_status == SENDING else row.push_status
                if clock_started:  # (an earlier try may have reached the provider: its clock runs on)
                    row.sent_change = _not_yet_sent(row.sent_change)
                session.add(row)
                return False
            if isinstance(failure, NotFound) and sent.local_op == "update" and row.remote_id is not None:
                # The provider deleted the record the tenant changed: a conflict, as a pull would find it.
                row.push_status = PENDING if row.push_status == SENDING else row.push_status
                session.add(row)
                session.flush()
                changes = Changes()
                counts.add(apply_deletions(session, connection_id=config.connection_id, entity=config.entity,
                                           policy=config.conflict_policy, remote_ids=[row.remote_id], now=now,
                                           changes=changes))
                _tell_push_changes(session, config, run_id, changes)
                _bump(session, run_id, counts)
                return False
            echo: SyncRecord | None = None
            if failure is not None:
                # Unless a conflict settled the change while it was on its way: that stands, and is
                # no failure (the run's note would call it not pushed).
                if not (row.push_status == CONFLICT or row.local_op is None):
                    counts.failed += 1
                    if (permanent and row.local_version != sent.local_version
                            and not isinstance(failure, ProviderUnavailable)):
                        # Refused, but the tenant changed the record since it was sent (fixed the
                        # value, deleted it): that change has not been tried yet. (An uncertain create
                        # stays failed whatever changed: sending it again could make it twice.)
                        row.push_status = PENDING if row.push_status in (SENDING, FAILED) else row.push_status
                        row.push_error = f"an earlier version was refused: {failure.message}"[:2000]
                        row.push_failure = _failure_info(failure)
                    else:
                        row.push_status = FAILED if permanent else PENDING
                        row.push_error = failure.message[:2000]
                        row.push_failure = _failure_info(failure)
                        row.push_attempts += 1
                if permanent:
                    row.sent_change = None  # refused (or left to the tenant): a later create may send other data
                elif isinstance(failure, RateLimited) and clock_started:  # (refused unsent: not a 5xx)
                    row.sent_change = _not_yet_sent(row.sent_change)
            else:
                counts.pushed += 1
                if sent.local_op == "delete" and kept_record(result) is None:
                    # A deletion as of now, as a provider's delete event is (no hash: it wins a tie):
                    # the late echo of an older version (the webhook of the hub's own update, sent
                    # before) does not bring it back.
                    row.deleted, row.deleted_at, row.content_hash = True, now, None
                    row.remote_updated_at = max(filter(None, (row.remote_updated_at, now)))
                else:  # (a record the provider keeps after its deletion, canceled: its new version)
                    data = result if isinstance(result, dict) and result else merged_view(sent)
                    partial = isinstance(result, PartialRecord)
                    if partial:
                        # Made, but the record could not be read after: what the hub knows of it (the
                        # answer holds part only), until the provider's next version is read.
                        data = {**merged_view(sent), schema.id_field: result.get(schema.id_field)} \
                            if sent.local_op == "create" else merged_view(sent)
                    if sent.local_op == "create":
                        remote_id = data.get(schema.id_field)
                        if remote_id in (None, "") or len(str(remote_id)) > MAX_RECORD_ID:
                            # Made, but the hub cannot tell (or store) which record it is: left to the tenant.
                            row.push_status, row.push_attempts = FAILED, row.push_attempts + 1
                            row.push_error = (f"the provider created the {schema.name} record but its answer has "
                                              f"no {schema.id_field} the hub can store: find it there, then "
                                              "discard this copy")[:2000]
                            row.push_failure = {"code": "created_without_id", "details": None}
                            row.sent_change = None
                            counts.pushed, counts.failed = 0, 1
                            session.add(row)
                            _bump(session, run_id, counts)
                            return False
                        echo = self._adopt(session, row, str(remote_id))
                    stored_version, answered = _answer_versions(schema, data, asked_at)
                    if not _overtaken(row, seen, answered):
                        row.data, row.content_hash = data, UNVERIFIED if partial else record_hash(data)
                        row.remote_updated_at = stored_version
                        row.deleted, row.deleted_at = False, None
                    row.first_seen_at = row.first_seen_at or now
                row.last_seen_at = seen_at(row, now)
                row.pushed_at = now
                row.sent_change = None
                if row.push_status == CONFLICT:
                    pass  # the provider changed it while the push was on its way: both sides wait in review
                elif row.local_version == sent.local_version and (sent_data is None or
                                                                  sent_data == update_payload(sent, schema)):
                    row.local_data, row.local_op, row.push_status = None, None, None
                    row.push_error, row.push_attempts = None, 0
                else:  # changed again while on its way (or sent as first sent): an update sends the rest
                    row.local_op = "update" if row.local_op == "create" else row.local_op
                    row.push_status = PENDING if row.push_status == SENDING else row.push_status
                if echo is not None:
                    # Stored after the create was made: at least as new as its (maybe replayed) answer.
                    if echo.deleted:  # deleted there since (the copy is the deletion's tombstone)
                        row.deleted, row.deleted_at = True, now
                        row.remote_updated_at = max(filter(None, (row.remote_updated_at, echo.remote_updated_at)),
                                                    default=None)
                        row.local_data, row.local_op, row.push_status = None, None, None
                    else:
                        row.data, row.content_hash, row.remote_updated_at = (echo.data, echo.content_hash,
                                                                             echo.remote_updated_at)
                        if echo.local_op is not None:
                            _carry_over(session, echo, row, now)
            row.updated_at = now
            session.add(row)
            _bump(session, run_id, counts)
            return failure is None and row.push_status == PENDING

    @staticmethod
    def _adopt(session: Any, row: SyncRecord, remote_id: str) -> SyncRecord | None:
        """Give a pushed record its provider id. A pull that ran between the
        create and this commit may have stored the same record already: that
        copy is the echo of this create and goes; returned (detached): its data
        is newer than a replayed answer, and a change the tenant made to it
        carries over (:func:`_carry_over`)."""
        echo = session.exec(select(SyncRecord).where(
            SyncRecord.connection_id == row.connection_id, SyncRecord.entity == row.entity,
            SyncRecord.remote_id == remote_id, SyncRecord.id != row.id)).first()
        if echo is not None:
            # Its conflicts keep the tenant's change: they now belong to the pushed record.
            session.execute(sa.update(SyncConflict.__table__).where(SyncConflict.record_id == echo.id)
                            .values(record_id=row.id))
            session.delete(echo)
            session.flush()
        row.remote_id = remote_id
        return echo


#: Longest ``details`` of a refusal kept with a record (as JSON text); longer ones are left out.
MAX_FAILURE_DETAILS = 4000


def _failure_info(failure: Exception) -> dict[str, Any]:
    """What the API shows of a refused push besides its message: the stable
    code (``validation_error``, ``rate_limited``...), the provider's details
    (Shopify's ``{"fields": ...}``, Stripe's ``{"param": ...}``) and the
    provider fields it names (:attr:`HubError.fields`)."""
    code = failure.code if isinstance(failure, HubError) else "internal_error"
    details = failure.details if isinstance(failure, HubError) else None
    fields = list(failure.fields) if isinstance(failure, HubError) else []
    text = None
    if isinstance(details, (dict, list)):
        try:
            text = json.dumps(details, default=str)  # (what JSON cannot hold, as text)
        except (TypeError, ValueError):
            text = None
    return {"code": code, "details": json.loads(text) if text and len(text) <= MAX_FAILURE_DETAILS else None,
            "fields": fields[:100]}
