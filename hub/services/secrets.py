"""Stored secrets and the hub's secret key: ``hub reencrypt`` and the check at startup."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from hub.crypto import DecryptionError
from hub.models import SEALED_COLUMNS, Connection, EventEndpoint, SecretKeyCheck
from hub.runtime import SECRET_KEY_CHECK, Hub

_BATCH = 500


@dataclass
class Reencrypted:
    rewritten: int = 0
    current: int = 0
    #: (table, row key) of secrets no key of this hub decrypts.
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    #: The database's key check was sealed with no key of this hub, and is now sealed with the current one.
    check_adopted: bool = False


def reencrypt(hub: Hub) -> Reencrypted:
    """Rewrite every stored secret that a previous key (``HUB_PREVIOUS_SECRET_KEY``)
    encrypted with the current one, so that the previous key can be dropped.

    Each row is swapped only if it still holds what was read: a secret
    written meanwhile (a token refresh) is already under the current key.
    """
    outcome = Reencrypted()
    for model, key_name, column_name in SEALED_COLUMNS:
        table = model.__table__
        key, column = table.c[key_name], table.c[column_name]
        after: Any = None
        while True:
            with hub.session() as session:
                query = sa.select(key, column).where(column.is_not(None)).order_by(key).limit(_BATCH)
                if after is not None:
                    query = query.where(key > after)
                rows = session.execute(query).all()
                for row_key, token in rows:
                    try:
                        fresh = hub.cipher.reencrypt(token)
                    except DecryptionError:
                        outcome.unreadable.append((table.name, row_key))
                        continue
                    if fresh is None:
                        outcome.current += 1
                        continue
                    swapped = session.execute(sa.update(table).where(key == row_key, column == token)
                                              .values({column_name: fresh}))
                    outcome.rewritten += swapped.rowcount
                session.commit()
            if len(rows) < _BATCH:
                break
            after = rows[-1][0]
    outcome.check_adopted = _reseal_key_check(hub)
    return outcome


def _reseal_key_check(hub: Hub) -> bool:
    """Seal the database's key check (:meth:`Hub.check_secret_key`) with the
    current key: running ``hub reencrypt`` names it the key of every process
    on this database. Whether the check was sealed with no key of this hub
    (a lost key replaced)."""
    with hub.session() as session:
        check = session.get(SecretKeyCheck, 1)
        if check is None:
            session.add(SecretKeyCheck(id=1, sealed=hub.cipher.encrypt(SECRET_KEY_CHECK)))
            session.commit()
            return False
        try:
            fresh = hub.cipher.reencrypt(check.sealed)
            adopted = False
        except DecryptionError:
            fresh, adopted = hub.cipher.encrypt(SECRET_KEY_CHECK), True
        if fresh is not None:
            check.sealed = fresh
            session.add(check)
            session.commit()
        return adopted


def unreadable_connections(hub: Hub, limit: int = 1000) -> int:
    """How many of the ``limit`` most recently updated connections have
    credentials that no key of this hub decrypts (the key changed)."""
    return _unreadable(hub, Connection.credentials_encrypted, Connection.updated_at, limit)


def unreadable_endpoints(hub: Hub, limit: int = 1000) -> int:
    """How many of the ``limit`` most recently updated event endpoints have a
    signing secret that no key of this hub decrypts (their events fail)."""
    return _unreadable(hub, EventEndpoint.secret_encrypted, EventEndpoint.updated_at, limit)


def _unreadable(hub: Hub, column: Any, newest: Any, limit: int) -> int:
    with hub.session() as session:
        tokens = session.execute(sa.select(column).where(column.is_not(None))
                                 .order_by(newest.desc()).limit(limit)).scalars()
        count = 0
        for token in tokens:
            try:
                hub.cipher.decrypt(token)
            except DecryptionError:
                count += 1
        return count
