"""SQLModel tables and the public shapes the API returns.

Tables hold secrets only in ``*_encrypted`` columns; the ``*Public`` models
have no field that could carry a secret.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import JSON, Column, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", index=True, max_length=64)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class Connection(SQLModel, table=True):
    __tablename__ = "connections"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", index=True, max_length=64)
    provider: str = Field(index=True, max_length=64)
    category: str = Field(max_length=64)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    status: str = Field(default="connected", max_length=16)
    last_error: str | None = Field(default=None, max_length=2000)
    sync_enabled: bool = False
    sync_frequency_minutes: int = 60
    last_sync_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    next_sync_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    credentials_encrypted: str | None = Field(default=None, sa_type=sa.Text)
    credentials_hint: str | None = Field(default=None, max_length=64)
    credentials_version: int = 0
    token_expires_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    webhook_key: str | None = Field(default=None, index=True, max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))


class OAuthState(SQLModel, table=True):
    __tablename__ = "oauth_states"

    state_hash: str = Field(primary_key=True, max_length=64)
    organization_id: str = Field(foreign_key="organizations.id", index=True, max_length=64)
    provider: str = Field(max_length=64)
    redirect_uri: str = Field(max_length=2000)
    return_to: str | None = Field(default=None, max_length=2000)
    code_verifier_encrypted: str | None = Field(default=None, sa_type=sa.Text)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    used_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))


class WebhookEvent(SQLModel, table=True):
    __tablename__ = "webhook_events"
    __table_args__ = (sa.UniqueConstraint("provider", "dedup_key", name="uq_webhook_events_dedup"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    provider: str = Field(max_length=64)
    dedup_key: str = Field(max_length=255)
    connection_id: str | None = Field(default=None, index=True, max_length=32)
    organization_id: str | None = Field(default=None, index=True, max_length=64)
    type: str = Field(max_length=128)
    entity: str | None = Field(default=None, max_length=64)
    action: str = Field(default="changed", max_length=16)
    record_id: str | None = Field(default=None, max_length=255)
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    status: str = Field(default="pending", index=True, max_length=16)
    attempts: int = 0
    error: str | None = Field(default=None, max_length=2000)
    received_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    processed_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


# ---------------------------------------------------------------- API shapes


class ConnectionPublic(BaseModel):
    id: str
    provider: str
    category: str
    name: str
    description: str | None
    status: str
    last_error: str | None
    sync_enabled: bool
    sync_frequency_minutes: int
    last_sync_at: datetime | None
    next_sync_at: datetime | None
    config: dict[str, Any]
    credentials_hint: str | None
    token_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, connection: Connection) -> ConnectionPublic:
        return cls.model_validate(connection, from_attributes=True)
