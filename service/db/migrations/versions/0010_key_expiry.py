"""API keys: an optional expiry.

Revision ID: 0010_key_expiry
Revises: 0009_workflow
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_key_expiry"
down_revision = "0009_workflow"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
