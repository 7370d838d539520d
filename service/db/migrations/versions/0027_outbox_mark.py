"""One fan-out mark per database, shared by every webhook dispatcher.

`outbox_mark` is one row (id 1): where fan-out looks from, every outbox event before it having its
dispatch row (on SQLite an outbox id, on PostgreSQL the transactions a read could not see and where a
full batch left off, as JSON: `service.workflow.fan_out`). A round holds the row while it reads and
claims and writes the mark back in the claim's transaction, so however many dispatchers run (a worker
process each, on every host) a backlog is read about once and each event claimed once. The row starts
empty: the first round after this migration looks at every event, as a dispatcher's first round did
when each kept its mark in memory, and claims those without their dispatch row.

Revision ID: 0027_outbox_mark
Revises: 0026_bounded_listings
"""

import sqlalchemy as sa
from alembic import op

revision = "0027_outbox_mark"
down_revision = "0026_bounded_listings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    mark = op.create_table(
        "outbox_mark",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("mark", sa.Text(), nullable=True),
    )
    op.bulk_insert(mark, [{"id": 1, "mark": None}])


def downgrade() -> None:
    op.drop_table("outbox_mark")
