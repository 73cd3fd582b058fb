"""what a custom resolution of a sync conflict decided

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, as 0011: conflicts resolved before keep no data of their resolution.
    op.add_column("sync_conflicts", sa.Column("resolution_data", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE sync_conflicts DROP COLUMN resolution_data")
