"""deduplicate webhook events per connection, not per provider

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _replace_unique("uq_webhook_events_dedup", "uq_webhook_events_connection_dedup", ["connection_id", "dedup_key"])


def downgrade() -> None:
    """Fails while two connections hold an event with the same ``dedup_key``."""
    _replace_unique("uq_webhook_events_connection_dedup", "uq_webhook_events_dedup", ["provider", "dedup_key"])


def _replace_unique(old: str, new: str, columns: list[str]) -> None:
    # SQLite copies the table to change a constraint, and dropping the old copy
    # deletes the events' processing states (ON DELETE CASCADE with foreign
    # keys on, which cannot be turned off inside the migration's transaction):
    # they are kept aside and put back.
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("CREATE TEMPORARY TABLE webhook_event_states_kept AS SELECT * FROM webhook_event_states")
    with op.batch_alter_table("webhook_events") as batch_op:
        batch_op.drop_constraint(old, type_="unique")
        batch_op.create_unique_constraint(new, columns)
    if sqlite:
        op.execute("INSERT INTO webhook_event_states SELECT * FROM webhook_event_states_kept "
                   "WHERE event_id NOT IN (SELECT event_id FROM webhook_event_states)")
        op.execute("DROP TABLE webhook_event_states_kept")
