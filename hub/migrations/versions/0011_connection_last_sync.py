"""how a connection's last sync run ended (status, error, run), beside its time

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_COLUMNS = (("last_sync_status", 16), ("last_sync_error", 2000), ("last_sync_run_id", 32))


def upgrade() -> None:
    # In place (ALTER TABLE ADD COLUMN) on both databases: a batch copy of connections
    # would cascade to everything that belongs to them.
    for name, length in _COLUMNS:
        op.add_column("connections", sa.Column(name, sqlmodel.sql.sqltypes.AutoString(length=length), nullable=True))


def downgrade() -> None:
    for name, _length in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE connections DROP COLUMN {name}")
