"""Alembic environment: runs on the engine the hub hands over."""

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
        context.run_migrations()
    connection.commit()
