"""Approval case roles: keyed in inbox order, on SQLite a table without rowids.

The inbox index of cases by role was a table keyed by (case_id, role) beside an index of (role, status,
created_at, case_id): a row written or deleted changed three b-trees on SQLite (the rowid table, the
key's index, the inbox index), one of the pages an approval dirties most. Keyed by (role, status,
created_at, case_id) the key is the inbox order itself, and on SQLite a `WITHOUT ROWID` table is that
key's one b-tree. A case's rows are found by their keys, read from the case row (its roles, `pending`
and its created_at).

On SQLite the key's created_at is matched as text: every row is written as SQLAlchemy's DATETIME writes
it (`YYYY-MM-DD HH:MM:SS.ffffff`); rows an earlier version wrote as the stdlib adapter does (with
`+00:00`, the fraction left out when zero) are copied in that form.

Revision ID: 0022_case_roles_in_inbox_order
Revises: 0021_case_indexes
"""

import sqlalchemy as sa
from alembic import op

revision = "0022_case_roles_in_inbox_order"
down_revision = "0021_case_indexes"
branch_labels = None
depends_on = None

TABLE = "approval_case_roles"
INBOX = "ix_approval_case_roles_inbox"
KEY = "pk_approval_case_roles"
INBOX_ORDER = ["role", "status", "created_at", "case_id"]
# `YYYY-MM-DD HH:MM:SS` then the fraction's six digits, zeros when there is none
SQLITE_TIME = (
    "substr(created_at, 1, 19) || "
    "CASE WHEN substr(created_at, 20, 1) = '.' THEN substr(created_at, 20, 7) ELSE '.000000' END"
)


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(KEY, TABLE, type_="primary")
        op.create_primary_key(KEY, TABLE, INBOX_ORDER)
        op.drop_index(INBOX, TABLE)
        return
    op.create_table(
        "approval_case_roles_keyed",
        *_columns(),
        sa.PrimaryKeyConstraint(*INBOX_ORDER, name=KEY),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO approval_case_roles_keyed (role, status, created_at, case_id, kind) "
        f"SELECT role, status, {SQLITE_TIME}, case_id, kind FROM {TABLE}"
    )
    op.drop_table(TABLE)
    op.rename_table("approval_case_roles_keyed", TABLE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.create_index(INBOX, TABLE, INBOX_ORDER)
        op.drop_constraint(KEY, TABLE, type_="primary")
        op.create_primary_key(KEY, TABLE, ["case_id", "role"])
        return
    op.create_table(
        "approval_case_roles_rowid", *_columns(), sa.PrimaryKeyConstraint("case_id", "role", name=KEY)
    )
    op.execute(f"INSERT INTO approval_case_roles_rowid SELECT * FROM {TABLE}")
    op.drop_table(TABLE)
    op.rename_table("approval_case_roles_rowid", TABLE)
    op.create_index(INBOX, TABLE, INBOX_ORDER)
