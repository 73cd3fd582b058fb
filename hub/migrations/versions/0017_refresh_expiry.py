"""When a connection's grant (its refresh token) expires, for the grant upkeep to refresh it before then

Revision ID: 0017
Revises: 0016
"""
import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Unknown for the connections made before (null): their next refresh tells it, where the provider says.
    op.add_column("connections", sa.Column("refresh_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE connections DROP COLUMN refresh_expires_at")
