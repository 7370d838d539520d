"""Decisions: the inputs a decision read beyond its request and facts (an allocation's stock view).

Revision ID: 0017_decision_inputs
Revises: 0016_console_sessions
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_decision_inputs"
down_revision = "0016_console_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("decisions", sa.Column("inputs", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("inputs")
