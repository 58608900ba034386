"""The one place that talks to the database: engines, sessions, migrations, queries.

Callers write `from digest import db` and `db.name(session, ...)`; every public
name of the modules below is re-exported here:

- `engine`: engines and sessions (SQLite pragmas, PostgreSQL session settings),
  Alembic migrations and schema checks, integrity checks, `transaction`, and the
  bulk statements the stores share (`insert_rows`, `update_rows`, `insert_new`).
- `papers`: the paper store: ingest's batch reads and writes of papers, sources,
  upvote observations and acronyms; paper lookups, upvote history, `stats`.
- `search`: full-text matching (SQLite FTS5, PostgreSQL tsvector) within a run's
  `Window`, and what relevance reads from the index: analysed terms, document
  frequencies, corpus size, acronyms.
- `subscribers`: subscribers and their topics.
- `digests`: the shared digests and their items, and the delivery rows planning
  and sending read (only digest.ledger changes a delivery's status).
- `jobs`: the scheduler's leases and job runs.

`open_database(url)` returns an engine on an up-to-date schema: the embedded
SQLite default migrates itself, a server database that is behind raises
`SchemaOutOfDate` telling the operator to run `digest db upgrade`.
Backend-specific SQL (SQLite FTS5 and pragmas, PostgreSQL tsvector and LATERAL
joins, ON CONFLICT inserts) lives in this package and nowhere else; the one
exception is digest.ledger's claim, which skips rows locked by another sender on
PostgreSQL.
"""

from digest.db.digests import (
    NewDigest,
    RecentDelivery,
    StoredItem,
    deliveries_with_status,
    digest_is_weekly,
    digest_items,
    find_delivery,
    planned_deliveries,
    previous_selections,
    queued_by_date,
    received_papers,
    recent_deliveries,
    store_digests,
)
from digest.db.engine import (
    CHUNK,
    SQLITE_BUSY_TIMEOUT_MS,
    SchemaOutOfDate,
    create_db_engine,
    current_revision,
    engine_url,
    error_detail,
    head_revision,
    include_object,
    insert_new,
    insert_rows,
    integrity_problems,
    open_database,
    require_current_schema,
    session_factory,
    transaction,
    update_rows,
    upgrade,
)

# Tests run Alembic commands (downgrade) on the package's migrations with it.
from digest.db.engine import _alembic_config as _alembic_config
from digest.db.jobs import (
    acquire_lease,
    current_lease,
    last_job_run,
    record_job_run,
    release_lease,
)
from digest.db.papers import (
    Stats,
    StoredPaper,
    find_paper_by_reference,
    insert_papers,
    list_papers,
    paper_dates,
    paper_rows,
    papers_by_id,
    replace_acronyms,
    stats,
    store_paper_links,
    stored_papers,
    update_papers,
    upvote_history,
    upvotes_as_of,
)
from digest.db.search import (
    CorpusSize,
    IndexedPaper,
    Window,
    acronym_expansions,
    acronyms_for,
    corpus_size,
    defined_acronyms,
    document_frequencies,
    indexed_papers,
    match_candidates,
    window_papers,
)
from digest.db.subscribers import (
    delete_requests_before,
    delete_stale_requests,
    find_subscriber,
    insert_subscribers,
    iter_subscribers,
    list_subscribers,
    replace_topics,
    stale_pending_subscribers,
    subscribers_by_key,
    topic_subscriber_counts,
    update_subscribers,
)

__all__ = [
    "CHUNK",
    "SQLITE_BUSY_TIMEOUT_MS",
    "CorpusSize",
    "IndexedPaper",
    "NewDigest",
    "RecentDelivery",
    "SchemaOutOfDate",
    "Stats",
    "StoredItem",
    "StoredPaper",
    "Window",
    "acquire_lease",
    "acronym_expansions",
    "acronyms_for",
    "corpus_size",
    "create_db_engine",
    "current_lease",
    "current_revision",
    "defined_acronyms",
    "delete_requests_before",
    "delete_stale_requests",
    "deliveries_with_status",
    "digest_is_weekly",
    "digest_items",
    "document_frequencies",
    "engine_url",
    "error_detail",
    "find_delivery",
    "find_paper_by_reference",
    "find_subscriber",
    "head_revision",
    "include_object",
    "indexed_papers",
    "insert_new",
    "insert_papers",
    "insert_rows",
    "insert_subscribers",
    "integrity_problems",
    "iter_subscribers",
    "last_job_run",
    "list_papers",
    "list_subscribers",
    "match_candidates",
    "open_database",
    "paper_dates",
    "paper_rows",
    "papers_by_id",
    "planned_deliveries",
    "previous_selections",
    "queued_by_date",
    "received_papers",
    "recent_deliveries",
    "record_job_run",
    "release_lease",
    "replace_acronyms",
    "replace_topics",
    "require_current_schema",
    "session_factory",
    "stale_pending_subscribers",
    "stats",
    "store_digests",
    "store_paper_links",
    "stored_papers",
    "subscribers_by_key",
    "topic_subscriber_counts",
    "transaction",
    "update_papers",
    "update_rows",
    "update_subscribers",
    "upgrade",
    "upvote_history",
    "upvotes_as_of",
    "window_papers",
]
