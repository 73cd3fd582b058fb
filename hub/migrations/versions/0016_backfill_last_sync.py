"""how a connection's last sync run ended, filled in from its runs where 0011 left it empty

A database upgraded across 0011 had ``last_sync_at`` but no ``last_sync_status``
(``last_sync_error``, ``last_sync_run_id``) until the connection's next run:
an integrations page showed "last synced" without whether it worked.

Revision ID: 0016
Revises: 0015
"""
import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Correlated subqueries: the same statement on SQLite and PostgreSQL.
    op.execute(sa.text(
        "UPDATE connections SET last_sync_run_id = ("
        " SELECT r.id FROM sync_runs r WHERE r.connection_id = connections.id"
        " AND r.status IN ('succeeded', 'failed') AND r.finished_at IS NOT NULL"
        " ORDER BY r.finished_at DESC, r.id DESC LIMIT 1)"
        " WHERE last_sync_status IS NULL AND last_sync_run_id IS NULL"))
    op.execute(sa.text(
        "UPDATE connections SET"
        " last_sync_status = (SELECT r.status FROM sync_runs r WHERE r.id = connections.last_sync_run_id),"
        " last_sync_error = (SELECT CASE WHEN r.status = 'failed' THEN SUBSTR(r.error, 1, 2000) END"
        "  FROM sync_runs r WHERE r.id = connections.last_sync_run_id),"
        " last_sync_at = COALESCE(last_sync_at,"
        "  (SELECT r.finished_at FROM sync_runs r WHERE r.id = connections.last_sync_run_id))"
        " WHERE last_sync_status IS NULL AND last_sync_run_id IS NOT NULL"))


def downgrade() -> None:
    """Nothing to undo: the values are what the next run would have written."""
