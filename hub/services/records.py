"""Record CRUD through a provider, with the schema's flags enforced."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timezone
from typing import Any

from hub.models import Connection
from hub.plugins import Provider
from hub.runtime import Hub
from hub.sync.store import kept_record
from hub.sync.stored import InvalidCursor, create_only_fields, decode_cursor, encode_cursor, settle_create_only
from hub.types import NotFound, Page, ReadOnly, ValidationFailed

MAX_PAGE_SIZE = 250
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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

        :raises ValidationFailed: ``invalid_cursor``, ``since_not_supported``.
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
        page = await self.hub.call(self.provider, "list_records", self.ctx, entity=entity,
                                   cursor=open_cursor(cursor, entity),
                                   page_size=max(1, min(page_size, MAX_PAGE_SIZE)),
                                   filters=filters or {}, since=since)
        return dataclasses.replace(page, next_cursor=seal_cursor(page.next_cursor, entity),
                                   watermark=seal_cursor(page.watermark, entity))

    @staticmethod
    def _record_id(entity: str, record_id: str) -> str:
        # "." and ".." are path steps, not ids: in a provider's URL they would name the
        # list (a PUT /customers/. became a create) or the API's root.
        if not record_id.strip("."):
            raise NotFound(f"no {entity} record {record_id!r}")
        return record_id

    async def get(self, entity: str, record_id: str) -> dict[str, Any]:
        self.provider.schema(entity)
        record_id = self._record_id(entity, record_id)
        return await self.hub.call(self.provider, "get_record", self.ctx, entity=entity, record_id=record_id)

    async def create(self, entity: str, data: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        self._writable(entity, "supports_create", "creating")
        return await self.hub.call(self.provider, "create_record", self.ctx, entity=entity, data=data,
                                   idempotency_key=idempotency_key or uuid.uuid4().hex)

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


def seal_cursor(cursor: str | None, entity: str) -> str | None:
    """A provider's position, bound to its entity, as the API hands it out."""
    return encode_cursor({"e": entity, "c": cursor}) if cursor else None


def open_cursor(cursor: str | None, entity: str) -> str | None:
    """The provider's position in a sealed cursor of ``entity``."""
    sealed = decode_cursor(cursor)
    if sealed is None:
        return None
    owner, position = sealed.get("e"), sealed.get("c")
    if owner != entity or not isinstance(position, str):
        raise InvalidCursor(f"the cursor belongs to {owner!r}, not {entity!r}" if isinstance(owner, str)
                            else "the cursor is not one this API returned")
    return position
