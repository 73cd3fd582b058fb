"""OAuth flows bound to the browser that started them: the binding's hash and the grant awaiting confirmation

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, as 0011: states made before are flows without a binding (connected at the callback).
    op.add_column("oauth_states", sa.Column("binding_hash", sqlmodel.sql.sqltypes.AutoString(length=64),
                                            nullable=True))
    op.add_column("oauth_states", sa.Column("grant_encrypted", sa.Text(), nullable=True))
    op.add_column("oauth_states", sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("oauth_states", sa.Column("flow_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.create_index("ix_oauth_states_flow_hash", "oauth_states", ["flow_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_oauth_states_flow_hash", table_name="oauth_states")
    for name in ("flow_hash", "confirmed_at", "grant_encrypted", "binding_hash"):
        op.execute(f"ALTER TABLE oauth_states DROP COLUMN {name}")
