"""indexes for the records and webhook-event listings

The records API lists an entity's records by id, and the webhook events of a
connection newest first: without an index in that order every page sorted all
of them (SQLite) or filtered its way through the whole table (PostgreSQL).
The composite webhook index starts with the connection, so it replaces the
connection's own index.

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sync_records_list", "sync_records", ["connection_id", "entity", "id"])
    op.create_index("ix_webhook_events_connection_received", "webhook_events", ["connection_id", "received_at", "id"])
    op.drop_index("ix_webhook_events_connection_id", table_name="webhook_events")


def downgrade() -> None:
    op.create_index("ix_webhook_events_connection_id", "webhook_events", ["connection_id"])
    op.drop_index("ix_webhook_events_connection_received", table_name="webhook_events")
    op.drop_index("ix_sync_records_list", table_name="sync_records")
