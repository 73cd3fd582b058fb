"""the code and details of a provider's refusal of a pushed change

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_records") as batch_op:
        batch_op.add_column(sa.Column("push_failure", sa.JSON(), nullable=True))


def downgrade() -> None:
    # In place on SQLite (3.35+), as in 0005: a batch copy would drop the records' conflicts.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE sync_records DROP COLUMN push_failure")
    else:
        op.drop_column("sync_records", "push_failure")
