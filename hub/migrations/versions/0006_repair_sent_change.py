"""repair databases upgraded by an unreleased 0005 (it added create_sent)

Revision 0005 first added ``sync_records.create_sent`` and was then changed
to add ``sent_change``: a database upgraded by the first version counts as
being at 0005 without the column. Add it where it is missing.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("sync_records")}
    if "sent_change" not in columns:
        with op.batch_alter_table("sync_records") as batch_op:
            batch_op.add_column(sa.Column("sent_change", sa.JSON(), nullable=True))
        if "create_sent" in columns:
            # The same {key, data} of a create whose outcome is unknown: it must be re-sent as it was.
            op.execute("UPDATE sync_records SET sent_change = create_sent WHERE create_sent IS NOT NULL")


def downgrade() -> None:
    pass  # the column belongs to 0005
