"""pending revocations: deleted connections' grants to give back again

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_revocations",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("connection_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("organization_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("webhook_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("credentials_encrypted", sa.Text(), nullable=False),
        sa.Column("token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("pending_revocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pending_revocations_next_attempt_at"), ["next_attempt_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pending_revocations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_revocations_next_attempt_at"))
    op.drop_table("pending_revocations")
