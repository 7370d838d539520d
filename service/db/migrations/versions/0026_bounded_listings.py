"""Indexes that keep the listings people page through to the rows they answer, whatever the planner's
statistics say.

Each listing is newest (or oldest) first under an equality: with no index in that order, both planners
read every row that matches (or the whole table) and sorted it to answer a page. An index of the
equality's column and the listing's order answers a page by reading the page:

- the console's decisions page without a filter: the decisions by (created_at, id); on PostgreSQL the
  index is made on every day's partition (and the partitions made later get it);
- the exceptions by kind and by location, newest (highest id) first;
- the console's stock page: a SKU's stock events by time.

Revision ID: 0026_bounded_listings
Revises: 0025_decision_log_lz4
"""

from alembic import op

revision = "0026_bounded_listings"
down_revision = "0025_decision_log_lz4"
branch_labels = None
depends_on = None

# (index, table, columns)
INDEXES = (
    ("ix_decisions_created_at_id", "decisions", ["created_at", "id"]),
    ("ix_exception_records_kind_id", "exception_records", ["kind", "id"]),
    ("ix_exception_records_location_id", "exception_records", ["location", "id"]),
    ("ix_stock_events_sku_applied_at", "stock_events", ["sku", "applied_at_ms"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table)
