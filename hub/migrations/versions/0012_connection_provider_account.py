"""the provider-side account a connection's credentials reach

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, as 0011. Existing connections learn their account when next tested, or
    # from their current credentials when new ones are sent (hub.services.connections).
    op.add_column("connections",
                  sa.Column("provider_account", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE connections DROP COLUMN provider_account")
