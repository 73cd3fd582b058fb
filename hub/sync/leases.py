"""One sync per connection at a time, across processes and machines.

A lease is a row per connection naming its holder (``host/pid-namespace:pid:token``)
and when the lease expires, on the database's clock (PostgreSQL's ``now()``:
machines whose clocks disagree still agree on when a lease ends). The holder renews it while it works, in the same
transaction as each page it stores, so a holder that lost its lease cannot
store another page (fencing). Another process takes the lease over when it has
expired or when its holder's process is gone from this machine (a crashed or
killed ``hub sync``), so a restart resumes at once. A queue worker whose
heartbeat stopped ends the leases of its runs through :func:`end_dead_run_lease`
(its pid cannot be checked from another machine).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from hub.models import SyncLease, SyncRun, utcnow
from hub.runtime import Hub

def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


HOST = socket.gethostname()
#: Where this process's pid means something: containers sharing a host name (host networking)
#: each have their own pid 1.
PLACE = f"{HOST}/{_pid_namespace()}" if _pid_namespace() else HOST
#: Tokens of the leases this process holds (to tell them from a dead process's).
ACTIVE: set[str] = set()
_leases = SyncLease.__table__


class LeaseLost(Exception):
    """Another process took this connection's lease over."""


def new_owner() -> str:
    return f"{PLACE}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def db_now(session: Session | sa.Connection) -> datetime:
    """Now on the database's clock on PostgreSQL, which every process and
    machine shares; this machine's on SQLite (which is on one machine)."""
    connection = session.connection() if isinstance(session, Session) else session
    if connection.dialect.name == "postgresql":
        return connection.execute(sa.text("SELECT clock_timestamp()")).scalar_one()  # not the transaction's start
    return utcnow()


def owner_alive(owner: str | None) -> bool:
    """Whether the process holding ``owner`` may still be working.

    Only processes of this machine's pid namespace can be checked; others
    count as alive until their lease expires.
    """
    if not owner:
        return False
    place, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if place != PLACE or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return token in ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


class Lease:
    def __init__(self, hub: Hub, connection_id: str, owner: str, run_id: str | None, ttl: float):
        self.hub = hub
        self.connection_id = connection_id
        self.owner = owner
        self.run_id = run_id
        self.ttl = ttl
        self.held = False

    def try_acquire(self) -> bool:
        with self.hub.session() as session:
            now = db_now(session)
            expires = now + timedelta(seconds=self.ttl)
            session.add(SyncLease(connection_id=self.connection_id, owner=self.owner, run_id=self.run_id,
                                  acquired_at=now, expires_at=expires))
            try:
                session.commit()
                return self._took()
            except IntegrityError:
                session.rollback()
            current = session.get(SyncLease, self.connection_id)
            if current is None:
                return False
            if current.owner == self.owner:
                return self._took()
            if current.expires_at > now and owner_alive(current.owner):
                return False
            taken = session.execute(
                sa.update(SyncLease)
                .where(SyncLease.connection_id == self.connection_id, SyncLease.owner == current.owner)
                .values(owner=self.owner, run_id=self.run_id, acquired_at=now, expires_at=expires)
            )
            session.commit()
            return taken.rowcount == 1 and self._took()

    def _took(self) -> bool:
        self.held = True
        ACTIVE.add(self.owner.rsplit(":", 1)[-1])
        return True

    async def acquire(self, wait: float, poll: float = 0.5) -> bool:
        """Take the lease, waiting up to ``wait`` seconds for its holder.

        While it waits, this process counts as the owner's (:func:`owner_alive`)."""
        token = self.owner.rsplit(":", 1)[-1]
        ACTIVE.add(token)
        deadline = time.monotonic() + wait
        while True:
            if await asyncio.to_thread(self.try_acquire):
                return True
            if time.monotonic() >= deadline:
                if not self.held:
                    ACTIVE.discard(token)
                return False
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def renew_in(self, session: Session) -> None:
        """Extend the lease inside the caller's transaction.

        :raises LeaseLost: someone else holds it now.
        """
        # On the table, not the model: the ORM's UPDATE (which keeps loaded objects in step)
        # costs twice as much, and a pull renews at every commit.
        renewed = session.execute(
            sa.update(_leases)
            .where(_leases.c.connection_id == self.connection_id, _leases.c.owner == self.owner)
            .values(expires_at=db_now(session) + timedelta(seconds=self.ttl))
        )
        if renewed.rowcount != 1:
            raise LeaseLost(f"the sync lease of connection {self.connection_id} was taken over")

    def renew(self) -> None:
        with self.hub.session() as session:
            self.renew_in(session)
            session.commit()

    def release(self) -> None:
        ACTIVE.discard(self.owner.rsplit(":", 1)[-1])
        if not self.held:
            return
        self.held = False
        with self.hub.session() as session:
            session.execute(sa.delete(SyncLease).where(SyncLease.connection_id == self.connection_id,
                                                       SyncLease.owner == self.owner))
            session.commit()


def holder_gone(hub: Hub, connection_id: str, owner: str | None) -> bool:
    """Whether the run owned by ``owner`` has lost its lease for good."""
    with hub.session() as session:
        lease = session.get(SyncLease, connection_id)
        now = db_now(session)
    if lease is None or lease.owner != owner:
        return True
    return lease.expires_at <= now or not owner_alive(owner)


def end_dead_run_lease(connection: sa.Connection, run_id: str) -> int:
    """End, in the caller's transaction, the lease that ``run_id``'s recorded
    owner holds: its worker is known dead (its queue heartbeat stopped), so the
    run's next execution takes the lease over at once instead of when it
    expires, wherever the dead worker ran. Were that worker only stalled, the
    fencing of :meth:`Lease.renew_in` keeps it from storing another page.

    :returns: how many leases were ended (0 or 1).
    """
    runs = SyncRun.__table__
    owner = sa.select(runs.c.owner).where(runs.c.id == run_id).scalar_subquery()
    now = db_now(connection)
    ended = connection.execute(sa.update(_leases).where(_leases.c.run_id == run_id, _leases.c.owner == owner,
                                                        _leases.c.expires_at > now)
                               .values(expires_at=now))
    return ended.rowcount


def end_lease(session: Session, connection_id: str, owner: str) -> None:
    """End ``owner``'s lease of the connection in the caller's transaction:
    its run was put back in the queue, so should that holder still be
    working, its next page fails (``LeaseLost``) instead of running beside
    the run's next execution."""
    session.execute(sa.delete(_leases).where(_leases.c.connection_id == connection_id, _leases.c.owner == owner))
