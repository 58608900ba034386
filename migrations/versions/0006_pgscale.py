"""PostgreSQL as a first-class backend, and the indexes a large run needs.

On PostgreSQL: every timestamp becomes `timestamptz` (the stored values were
naive UTC), and papers get `search_vector`, a weighted `tsvector` of the
analysed terms (the columns 0005_relevance added, which SQLite's FTS5 index
reads too), with a GIN index. On both backends: an index on
`upvote_observations.observed_at` (the trending window), and a partial index
on the claimable deliveries in claim order (date, fresh before retries, retry
time, id), so claiming the next row jumps to it instead of sorting or walking
the day's ledger.

Revision ID: 0006_pgscale
Revises: 0005_relevance
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_pgscale"
down_revision = "0005_relevance"
branch_labels = None
depends_on = None

TIMESTAMPS = {
    "papers": ("first_seen_at", "updated_at"),
    "paper_sources": ("first_seen_at",),
    "upvote_observations": ("observed_at",),
    "subscribers": ("created_at", "confirmed_at", "confirm_sent_at", "updated_at"),
    "digests": ("created_at",),
    "deliveries": (
        "selected_at",
        "next_attempt_at",
        "lease_until",
        "sent_at",
        "created_at",
        "updated_at",
    ),
    "leases": ("expires_at",),
    "job_runs": ("started_at", "finished_at"),
}

# The PostgreSQL full-text document: the analysed terms (already stemmed and folded by
# digest.text, so the `simple` configuration only splits them) and, for each source
# column, its weight label, which digest.db uses for the fields of a query.
TS_CONFIG = "simple"
TS_SOURCES = (
    ("title_terms", "A"),
    ("abstract_terms", "B"),
    ("author_terms", "C"),
    ("category_terms", "D"),
)


def search_vector_sql() -> str:
    return " || ".join(
        f"setweight(to_tsvector('{TS_CONFIG}'::regconfig, {column}), '{weight}')"
        for column, weight in TS_SOURCES
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, columns in TIMESTAMPS.items():
            for column in columns:
                op.execute(
                    f"ALTER TABLE {table} ALTER COLUMN {column} "
                    f"TYPE timestamptz USING {column} AT TIME ZONE 'UTC'"
                )
        op.execute(
            "ALTER TABLE papers ADD COLUMN search_vector tsvector "
            f"GENERATED ALWAYS AS ({search_vector_sql()}) STORED"
        )
        op.execute("CREATE INDEX ix_papers_search_vector ON papers USING gin (search_vector)")
    op.create_index("ix_upvote_observations_observed_at", "upvote_observations", ["observed_at"])
    op.create_index(
        "ix_deliveries_claimable",
        "deliveries",
        ["digest_date", sa.text("(next_attempt_at IS NOT NULL)"), "next_attempt_at", "id"],
        sqlite_where=sa.text("status IN ('queued', 'deferred')"),
        postgresql_where=sa.text("status IN ('queued', 'deferred')"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_claimable", table_name="deliveries")
    op.drop_index("ix_upvote_observations_observed_at", table_name="upvote_observations")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_papers_search_vector")
        op.execute("ALTER TABLE papers DROP COLUMN search_vector")
        for table, columns in TIMESTAMPS.items():
            for column in columns:
                op.execute(
                    f"ALTER TABLE {table} ALTER COLUMN {column} "
                    f"TYPE timestamp USING {column} AT TIME ZONE 'UTC'"
                )
