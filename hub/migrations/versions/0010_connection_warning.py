"""a connection's warning (it works, but will stop unless its user acts)

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place (ALTER TABLE ADD COLUMN) on both databases: a batch copy of connections
    # would cascade to everything that belongs to them.
    op.add_column("connections", sa.Column("warning", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE connections DROP COLUMN warning")
