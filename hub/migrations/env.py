"""Alembic environment: runs on the engine the hub hands over."""

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import hub.models  # noqa: F401  (registers the tables)

target_metadata = SQLModel.metadata
engine = context.config.attributes.get("engine")

if engine is None:
    from hub.config import get_settings
    from hub.db import make_engine

    engine = make_engine(get_settings().resolved_database_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Processes starting together each upgrade at start: one at a time (the
            # others then find the schema current), else they collide creating it.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7261100310)"))
        context.run_migrations()
    connection.commit()
