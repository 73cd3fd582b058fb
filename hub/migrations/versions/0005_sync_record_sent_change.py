"""remember a change sent to a provider until its outcome is known

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_records") as batch_op:
        batch_op.add_column(sa.Column("sent_change", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Not a batch (table copy) on SQLite: dropping the old copy of sync_records
    # would delete its conflicts (ON DELETE CASCADE). SQLite drops a column
    # in place since 3.35.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE sync_records DROP COLUMN sent_change")
    else:
        op.drop_column("sync_records", "sent_change")
