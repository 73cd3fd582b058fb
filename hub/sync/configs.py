"""Sync configs: which entities of a connection sync, in which direction,
with which conflict policy and field mappings. Everything is checked when a
config is saved, never at sync time."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from hub.models import Connection, DroppedSyncEntity, SyncConfig, SyncConflict, SyncRecord, SyncState, utcnow
from hub.plugins import Provider
from hub.runtime import Hub, rescheduled
from hub.sync.mapping import FieldMapping, names_account_field, validate_mappings
from hub.sync.store import entity_key, write_transaction
from hub.types import EntitySchema, HubError, NotFound, ReadOnly, ValidationFailed

Direction = Literal["pull", "push", "both"]
Policy = Literal["provider_wins", "hub_wins", "review"]
DIRECTIONS = ("pull", "push", "both")
POLICIES = ("provider_wins", "hub_wins", "review")


class ConfigExists(HubError):
    code = "sync_config_exists"
    status = 409


def check(provider: Provider, entity: str, direction: str, policy: str,
          mappings: list[dict[str, Any]] | list[FieldMapping] | None,
          account_fields: Collection[str] | None = None) -> tuple[EntitySchema, list[dict[str, Any]]]:
    """Validate a config's settings against the provider's declarations
    (``mappings`` None: the config's own, unchanged, are not checked again).

    :returns: the entity's schema and the normalised mappings ([] for None).
    :raises NotFound: unknown entity.
    :raises ReadOnly: push or both on an entity the provider does not let the hub write.
    :raises ValidationFailed: a bad direction, policy or mapping.
    """
    schema = provider.schema(entity)
    if direction not in DIRECTIONS:
        raise ValidationFailed(f"direction must be one of {', '.join(DIRECTIONS)}", code="invalid_direction")
    if policy not in POLICIES:
        raise ValidationFailed(f"conflict_policy must be one of {', '.join(POLICIES)}", code="invalid_policy")
    if direction != "pull" and not (schema.supports_create or schema.supports_update or schema.supports_delete):
        raise ReadOnly(f"{provider.name} {entity} is read-only: it can only be pulled")
    if mappings is None:
        return schema, []
    parsed = validate_mappings(schema, mappings, provider.info.minor_units, account_fields)
    return schema, [m.model_dump() for m in parsed]


def get_config(session: Session, connection_id: str, config_id: str) -> SyncConfig:
    config = session.get(SyncConfig, config_id)
    if config is None or config.connection_id != connection_id:
        raise NotFound("no such sync config", code="sync_config_not_found")
    return config


def list_configs(hub: Hub, connection_id: str) -> list[SyncConfig]:
    with hub.session() as session:
        return list(session.exec(select(SyncConfig).where(SyncConfig.connection_id == connection_id)
                                 .order_by(SyncConfig.entity)))


def create_config(hub: Hub, connection: Connection, *, entity: str, direction: str = "pull", enabled: bool = True,
                  schedule_minutes: int | None = None, conflict_policy: str = "provider_wins",
                  mappings: list[dict[str, Any]] | None = None,
                  account_fields: Collection[str] | None = None) -> SyncConfig:
    """``account_fields``: see :func:`account_fields_of`."""
    provider = hub.provider(connection.provider)
    _schema, normalised = check(provider, entity, direction, conflict_policy, mappings or [], account_fields)
    config = SyncConfig(organization_id=connection.organization_id, connection_id=connection.id, entity=entity,
                        direction=direction, enabled=enabled, schedule_minutes=schedule_minutes,
                        conflict_policy=conflict_policy, mappings=normalised,
                        next_sync_at=_next(schedule_minutes))
    with hub.session() as session:
        # (Its webhook events count again: see delete_config. Undone with the config if it exists already.)
        session.execute(sa.delete(DroppedSyncEntity).where(DroppedSyncEntity.connection_id == connection.id,
                                                           DroppedSyncEntity.entity == entity))
        session.add(config)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if session.get(Connection, connection.id) is None:  # (deleted meanwhile: its foreign key refused)
                raise NotFound("no such connection", code="connection_not_found") from None
            raise ConfigExists(f"connection already has a sync config for {entity}") from None
        session.refresh(config)
        return config


def update_config(hub: Hub, connection: Connection, config_id: str, changes: dict[str, Any],
                  account_fields: Collection[str] | None = None) -> SyncConfig:
    """``account_fields``: see :func:`account_fields_of`."""
    provider = hub.provider(connection.provider)
    with hub.session() as session:
        entity = get_config(session, connection.id, config_id).entity
    # Under the entity's lock: a pass commits its pages and its end under it, and
    # finds out (by its start time) that its state was reset meanwhile.
    with write_transaction(hub, entity_key(connection.id, entity)) as session:
        config = get_config(session, connection.id, config_id)
        if changes.get("enabled") and not config.enabled:
            # Its webhook events were ignored while it was off (deletions too): the next
            # pass is a full one, unless the provider's own cursor reports deletions.
            # A pass left in progress, or running now, is dropped too: its sweep would
            # spare the records it listed before a deletion made while it was off.
            state = session.get(SyncState, config.id)
            if state is not None and (state.watermark is not None or state.pass_mode is not None):
                state.watermark, state.pass_mode, state.cursor, state.pass_since = None, None, None, None
                state.pass_started_at = None
                session.add(state)
        for key in ("direction", "enabled", "conflict_policy"):
            if key in changes and changes[key] is not None:
                setattr(config, key, changes[key])
        if "schedule_minutes" in changes and changes["schedule_minutes"] != config.schedule_minutes:
            # (The same sent again keeps the schedule: each PUT would put it off a period.)
            config.next_sync_at = rescheduled(config.next_sync_at, config.schedule_minutes,
                                              changes["schedule_minutes"])
            config.schedule_minutes = changes["schedule_minutes"]
        # Mappings are checked when they change: ones saved under an older, laxer check must not
        # stop the tenant from pausing the config, say.
        mappings = changes.get("mappings")
        _schema, checked = check(provider, config.entity, config.direction, config.conflict_policy, mappings,
                                 account_fields)
        if mappings is not None:
            config.mappings = checked
        config.updated_at = utcnow()
        session.add(config)
        session.flush()
        session.refresh(config)
        return config


def replace_mappings(hub: Hub, connection: Connection, config_id: str, mappings: list[dict[str, Any]],
                     account_fields: Collection[str] | None = None) -> SyncConfig:
    return update_config(hub, connection, config_id, {"mappings": mappings}, account_fields)


async def account_fields_of(hub: Hub, connection: Connection, entity: str,
                            mappings: list[dict[str, Any]] | None) -> frozenset[str] | None:
    """The fields the connection's account adds to ``entity`` (the
    ``account_fields`` hook), when ``mappings`` name a path the entity's
    ``custom_fields`` matches; None when they name none, or the plugin does
    not tell (any such path is then taken).

    :raises HubError: the provider could not be asked (the mappings are not
        saved unchecked).
    """
    provider = hub.provider(connection.provider)
    if not mappings or not provider.implements("account_fields"):
        return None
    schema = provider.schema(entity)
    named: list[str] = []
    for raw in mappings:
        try:
            mapping = FieldMapping.model_validate(raw)
        except ValueError:
            continue  # (refused by the check that follows, with its reason)
        named += [*mapping.sources(), *([mapping.currency_field] if mapping.currency_field else [])]
    if not any(names_account_field(schema, path) for path in named):
        return None
    fields = await hub.call(provider, "account_fields", hub.context(provider, connection), entity=entity)
    return frozenset(str(field) for field in fields) if fields is not None else None


def delete_config(hub: Hub, connection_id: str, config_id: str) -> None:
    """Delete a config with its sync state and the records stored for its entity.

    Under the entity's write lock: a run pulling the entity meanwhile stops at
    its next transaction (its config is gone) instead of storing records no
    config owns. The entity is noted dropped (:class:`DroppedSyncEntity`): its
    webhook events are ignored, rather than stored without a config or made a
    pull that makes the config again, until the tenant makes one."""
    with hub.session() as session:
        entity = get_config(session, connection_id, config_id).entity
    with write_transaction(hub, entity_key(connection_id, entity)) as session:
        config = get_config(session, connection_id, config_id)
        session.execute(sa.delete(SyncConflict).where(SyncConflict.connection_id == connection_id,
                                                      SyncConflict.entity == config.entity))
        session.execute(sa.delete(SyncRecord).where(SyncRecord.connection_id == connection_id,
                                                    SyncRecord.entity == config.entity))
        session.delete(config)
        if session.get(DroppedSyncEntity, (connection_id, config.entity)) is None:
            session.add(DroppedSyncEntity(connection_id=connection_id, entity=config.entity))


def missing_configs(hub: Hub, connection: Connection, entity: str | None) -> tuple[list[SyncConfig], list[str]]:
    """The connection's configs, and the entities a run (of ``entity``, or
    of everything) would get a default pull config for: the named entity
    when it has none, every entity when the connection has none.

    :raises NotFound: unknown entity.
    """
    provider = hub.provider(connection.provider)
    existing = list_configs(hub, connection.id)
    if entity is not None:
        provider.schema(entity)
        return existing, [] if any(c.entity == entity for c in existing) else [entity]
    return existing, [] if existing else sorted(provider.schemas)


def ensure_configs(hub: Hub, connection: Connection, entity: str | None) -> list[SyncConfig]:
    """The configs a run without explicit configs uses, the
    :func:`missing_configs` created (pull, enabled)."""
    existing, wanted = missing_configs(hub, connection, entity)
    for name in wanted:
        try:
            create_config(hub, connection, entity=name)
        except ConfigExists:
            pass
    return list_configs(hub, connection.id) if wanted else existing


def _next(minutes: int | None) -> datetime | None:
    return utcnow() + timedelta(minutes=minutes) if minutes else None
