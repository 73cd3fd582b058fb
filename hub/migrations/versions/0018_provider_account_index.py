"""An index on the connections' provider_account: webhook deliveries are routed by it

Revision ID: 0018
Revises: 0017
"""
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (A delivery is unauthenticated until verified: finding its connections must not scan them all.)
    op.create_index("ix_connections_provider_account", "connections", ["provider_account"])


def downgrade() -> None:
    op.drop_index("ix_connections_provider_account", table_name="connections")
