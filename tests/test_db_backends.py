"""The database layer on both backends: drivers, schema, full text, claims.

Most tests here run on whichever backend the suite runs on (SQLite, or PostgreSQL
with DIGEST_TEST_DATABASE_URL) and expect the same results; the ones marked
`postgresql` check what only exists there (tsquery, timestamptz, SKIP LOCKED).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from digest import db, fulltext, ledger, query_plan, relevance
from digest.analysis import paper_terms
from digest.ingest import ingest_inputs
from digest.models import Base, Delivery, Digest, Paper, Subscriber, UTCDateTime
from digest.query import QueryError, parse_query
from digest.text import Phrase
from tests.conftest import NOW, SEEDS

# --- drivers --------------------------------------------------------------------------


def test_a_plain_postgresql_url_means_psycopg_3() -> None:
    assert db.engine_url("postgresql://digest@db/digest").drivername == "postgresql+psycopg"
    assert db.engine_url("postgresql+psycopg2://d@db/d").drivername == "postgresql+psycopg2"
    assert db.engine_url("sqlite:////tmp/x.sqlite3").drivername == "sqlite"


@pytest.mark.parametrize("command", [("stats",), ("db", "status")])
def test_a_missing_postgresql_driver_is_a_one_line_error(cli, monkeypatch, command) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    monkeypatch.setenv("DIGEST_DATABASE_URL", "postgresql://digest:secret@db.invalid/digest")
    result = cli(*command)
    assert result.exit_code == 1
    assert result.output == (
        "Error: database postgresql://digest:***@db.invalid/digest: the driver is not "
        "installed (import of psycopg halted; None in sys.modules); "
        "for PostgreSQL run: pip install 'papers-digest[postgres]'\n"
    )


@pytest.mark.postgresql
def test_the_postgresql_engine_runs_on_psycopg_3_in_utc(engine: Engine) -> None:
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")
    with engine.connect() as connection:
        assert connection.execute(text("SHOW TimeZone")).scalar() == "UTC"


# --- schema ---------------------------------------------------------------------------


# SQLite's reflection skips the expression index on claimable deliveries, with a warning.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_the_models_and_the_migrations_describe_the_same_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": db.include_object})
        assert compare_metadata(context, Base.metadata) == []


@pytest.mark.postgresql
def test_every_timestamp_is_timestamptz_on_postgresql(engine: Engine) -> None:
    with engine.connect() as connection:
        types = dict(
            connection.execute(
                text(
                    "SELECT table_name || '.' || column_name, data_type "
                    "FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type LIKE 'timestamp%'"
                )
            ).all()
        )
    modelled = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, UTCDateTime)
    }
    assert set(types) == modelled and len(modelled) == 23
    assert set(types.values()) == {"timestamp with time zone"}


@pytest.mark.postgresql
def test_stored_instants_come_back_in_utc_whatever_the_session_zone(factory) -> None:
    seen = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    with db.transaction(factory) as session:
        session.add(paper(1, title="Zones", first_seen_at=seen))
    with factory() as session:
        session.execute(text("SET TIME ZONE 'America/Los_Angeles'"))
        stored = session.scalar(text("SELECT first_seen_at::text FROM papers"))
        assert stored == "2026-03-28 18:30:00-07"
        assert session.get(Paper, 1).first_seen_at == seen  # type: ignore[union-attr]


# --- full text: the same query means the same on both backends --------------------------


def paper(number: int, first_seen_at: datetime = NOW, **fields: str) -> Paper:
    values = {"title": f"Paper {number}", "abstract": "", "authors": "", "categories": ""}
    values |= fields
    return Paper(
        id=number,
        key=f"title:paper {number}",
        title_key=f"paper {number}",
        first_seen_at=first_seen_at,
        updated_at=NOW,
        **values,
        **paper_terms(values["title"], values["abstract"], values["authors"], values["categories"]),
    )


def test_fields_phrases_prefixes_and_exclusions_find_the_same_papers(factory) -> None:
    with db.transaction(factory) as session:
        session.add_all(
            [
                paper(1, title="Striped zebra crossings", abstract="We count crossings."),
                paper(2, title="Crossings", abstract="A striped zebra crossing study."),
                paper(3, title="Crossing", authors="Zebra Smith\nAda Lovelace"),
                paper(4, title="Crossing", categories="zebra.LG cs.CV"),
                paper(5, title="Zebrafish models", abstract="Fish, not horses."),
            ]
        )
    with factory() as session:

        def ids(query: str) -> list[int]:
            return [match.paper_id for match in relevance.search(session, parse_query(query))[1]]

        assert sorted(ids("zebra")) == [1, 2, 3, 4]
        assert ids("title:zebra") == [1]
        assert ids("author:zebra") == [3]
        assert ids("cat:zebra") == [4]
        assert ids("cat:cs.CV") == [4]
        assert sorted(ids("zebra*")) == [1, 2, 3, 4, 5]
        assert sorted(ids('"striped zebra"')) == [1, 2]
        assert ids('"zebra striped"') == []
        assert sorted(ids("zebra -author:smith -cat:zebra")) == [1, 2]
        assert sorted(ids("zebra -title:zebra")) == [2, 3, 4]
        assert sorted(ids("author:lovelace OR title:zebrafish")) == [3, 5]
        assert ids("title:crossings study") == [2]  # stemmed: crossing, crossings
        assert db.document_frequencies(session, ["zebra", "cross", "nowher"]) == {
            "zebra": 4,
            "cross": 4,
            "nowher": 0,
        }


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, databases) -> Iterator[Session]:
    engine = db.open_database(databases.new(tmp_path_factory.mktemp("backends")))
    factory = db.session_factory(engine)
    ingest_inputs(factory, [str(SEEDS)], now=NOW, max_bytes=10**7)
    with factory() as session:
        yield session
    engine.dispose()


# Seed papers each query finds, identical on SQLite FTS5 and PostgreSQL: both index the
# same analysed terms, and the ranking is computed in Python from the same statistics.
# (With more than relevance.CANDIDATE_LIMIT candidates, which ones are rescored follows
# each index's own ranking, bm25 or ts_rank_cd, so such queries are left out.)
AGREED = {
    "diffusion": 31,
    "diffusion models": 32,
    '"language model"': 262,
    '"large language models"': 174,
    "rlhf OR dpo": 30,
    "llm -survey": 173,
    "multimodal OR vision": 74,  # and multi-modal
    "title:agents": 8,
    "title:benchmark*": 4,
    "diffus*": 31,
    "GPT-4": 12,
    "video generation": 12,
    "text-to-image": 13,
    "state-of-the-art": 151,
    "MoE": 15,
    "retrieval augmented generation": 6,
    "reinforcement learning -robot": 47,
}


# Candidates the index finds that do not match: "Discovered Policy Optimisation" defines
# DPO as itself, not as direct preference optimization.
OTHER_SENSE = {"rlhf OR dpo": ["Discovered Policy Optimisation"]}


@pytest.mark.parametrize(("query", "count"), AGREED.items())
def test_seed_matches_agree_across_backends(seeded: Session, query: str, count: int) -> None:
    plan, found = relevance.search(seeded, parse_query(query))
    assert len(found) == count
    candidates = db.match_candidates(seeded, plan.retrieval_groups(), plan.excluded)
    # Every other candidate scores: the index found only matches.
    others = set(candidates) - {match.paper_id for match in found}
    papers = db.papers_by_id(seeded, others)
    assert sorted(paper.title for paper in papers.values()) == OTHER_SENSE.get(query, [])
    weights = [match.weight for match in found]
    assert weights == sorted(weights, reverse=True)
    scores = [match.relevance for match in found]
    assert max(scores) == 1.0 and min(scores) > 0


# --- the tsquery compiler -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "excluded", "tsquery"),
    [
        ([[Phrase(("diffus",))], [Phrase(("model",))]], [], "('diffus') & ('model')"),
        ([[Phrase(("languag", "model"))]], [], "(('languag' <-> 'model'))"),
        ([[Phrase(("rlhf",)), Phrase(("dpo",))]], [], "('rlhf' | 'dpo')"),
        ([[Phrase(("llm",))]], [Phrase(("survey",))], "('llm') & !'survey'"),
        ([[Phrase(("agent",), "title")]], [], "('agent':A)"),
        ([[Phrase(("benchmark",), "abstract")]], [], "('benchmark':B)"),
        ([[Phrase(("hinton",), "authors")]], [], "('hinton':C)"),
        ([[Phrase(("cs", "cl"), "categories")]], [], "(('cs':D <-> 'cl':D))"),
        ([[Phrase(("diffus",), prefix=True)]], [], "('diffus':*)"),
        ([[Phrase(("diffus",), "title", prefix=True)]], [], "('diffus':*A)"),
        (
            [[Phrase(("qqmoe",)), Phrase(("mixtur", "of", "expert"))]],
            [],
            ("('qqmoe' | ('mixtur' <-> 'of' <-> 'expert'))"),
        ),
    ],
)
def test_phrases_compile_to_tsquery(groups, excluded, tsquery: str) -> None:
    assert fulltext.tsquery_expression(groups, excluded) == tsquery


@pytest.mark.parametrize("terms", [("it's",), ("a b",), ("x'|y",), ("",), ()])
def test_anything_but_index_terms_is_refused_not_compiled(terms: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="not index terms"):
        fulltext.tsquery_expression([[Phrase(terms)]])


LEXEME = re.compile(r"'[^\W_]+'(?::\*[ABCD]?|:[ABCD])?")


def only_quoted_lexemes(expression: str) -> bool:
    """True if everything outside the quoted lexemes is tsquery operators and spaces."""
    return set(LEXEME.sub("L", expression)) <= set("L()&|!<-> ")


SOUP = ["'", '"', "\\", "-", "*", ":", "!", "&", "|", "<->", "<2>", "(", ")", "OR", "title:"]
SOUP += ["cat:", "x", "ü", " ", ":*", ":A", "''", "\x00", "日本", "MoE", "like:1"]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(st.text(max_size=120), st.lists(st.sampled_from(SOUP), max_size=25).map("".join)))
def test_user_text_reaches_tsquery_only_as_quoted_lexemes(seeded: Session, typed: str) -> None:
    try:
        query = parse_query(typed)
    except QueryError:
        return
    plan = query_plan.plan_query(seeded, query, relevance.Corpus(seeded))
    if plan.everything or plan.empty:
        return
    expression = fulltext.tsquery_expression(plan.retrieval_groups(), plan.excluded)
    assert only_quoted_lexemes(expression)
    if seeded.get_bind().dialect.name == "postgresql":
        seeded.execute(
            text("SELECT to_tsquery(:config, :q)"),
            {"config": fulltext.PG_TS_CONFIG, "q": expression},
        )
    relevance.rank(seeded, plan, relevance.Corpus(seeded), limit=5)


@pytest.mark.postgresql
def test_search_vector_holds_the_analysed_terms_with_the_compiler_configuration(
    engine: Engine,
) -> None:
    with engine.connect() as connection:
        expression = connection.execute(
            text(
                "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
                "JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
                "WHERE d.adrelid = 'papers'::regclass AND a.attname = 'search_vector'"
            )
        ).scalar_one()
        gin = connection.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_papers_search_vector'")
        ).scalar_one()
    assert set(re.findall(r"'(\w+)'::regconfig", expression)) == {fulltext.PG_TS_CONFIG}
    sources = re.findall(r"to_tsvector\('\w+'::regconfig, (\w+)\), '([ABCD])'", expression)
    assert sources == [
        (column, fulltext.PG_FIELD_WEIGHTS[field]) for field, column in fulltext.FTS_COLUMNS.items()
    ]
    assert "USING gin (search_vector)" in gin


# --- claiming deliveries ----------------------------------------------------------------

DAY = date(2026, 11, 25)


def fill_ledger(factory, size: int, sent: int) -> None:
    """`size` deliveries of DAY, the first `sent` of them already sent."""
    with db.transaction(factory) as session:
        session.execute(
            insert(Subscriber),
            [
                {
                    "id": n + 1,
                    "email": f"r{n}@example.org",
                    "email_key": f"r{n}@example.org",
                    "status": "active",
                    "timezone": "UTC",
                    "send_hour": 7,
                    "secret": "s",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(size)
            ],
        )
        session.add(Digest(id=1, digest_date=DAY, content_hash="x", created_at=NOW))
        session.flush()
        session.execute(
            insert(Delivery),
            [
                {
                    "id": n + 1,
                    "subscriber_id": n + 1,
                    "digest_date": DAY,
                    "digest_id": 1,
                    "status": "sent" if n < sent else "queued",
                    "selected_at": NOW,
                    "attempts": 0,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for n in range(size)
            ],
        )


def test_the_claim_jumps_to_the_next_due_row_through_the_claimable_index(
    factory, engine: Engine
) -> None:
    fill_ledger(factory, 2000, sent=1990)
    statements: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, *_) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    with factory() as session, session.begin():
        assert ledger.claim(session, NOW, NOW + timedelta(minutes=5), [DAY]) == 1991
        session.rollback()
    event.remove(engine, "before_cursor_execute", capture)
    # The reservation finds the row; taking it is an update by primary key.
    reserve, take = [s for s in statements if "UPDATE deliveries" in s[0]]
    assert "SELECT" not in take[0] and "deliveries.id =" in take[0], take[0]
    statement, parameters = reserve
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = [str(row[3]) for row in rows]
        else:
            connection.exec_driver_sql("ANALYZE deliveries")
            rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
            plan = [str(row[0]) for row in rows]
    joined = "\n".join(plan)
    assert "ix_deliveries_claimable" in joined, joined
    assert "TEMP B-TREE" not in joined and "Sort" not in joined, joined


def test_claims_go_by_date_then_id_and_skip_rows_not_yet_due(factory) -> None:
    fill_ledger(factory, 5, sent=0)
    later = NOW + timedelta(hours=1)
    with db.transaction(factory) as session:
        session.execute(
            update(Delivery).where(Delivery.id == 1).values(digest_date=DAY.replace(day=26))
        )
        session.execute(
            update(Delivery)
            .where(Delivery.id == 2)
            .values(status="deferred", next_attempt_at=later)
        )
    claimed = []
    for _ in range(5):
        with db.transaction(factory) as session:
            claimed.append(
                ledger.claim(session, NOW, NOW + timedelta(minutes=5), [DAY, DAY.replace(day=26)])
            )
    assert claimed == [3, 4, 5, 1, None]


def test_a_reservation_holds_a_row_until_taken_and_one_that_runs_out_is_due_again(
    factory,
) -> None:
    fill_ledger(factory, 3, sent=0)
    held, lease = NOW + timedelta(seconds=30), NOW + timedelta(minutes=5)
    with db.transaction(factory) as session:
        assert ledger.reserve(session, NOW, held, [DAY]) == 1
        assert ledger.reserve(session, NOW, held, [DAY]) == 2
        assert ledger.unreserve(session, 2, NOW) == 1  # built, never sent: due again
    with factory() as session:
        rows = {d.id: (d.status, d.attempts) for d in session.scalars(select(Delivery))}
    assert rows == {1: ("queued", 0), 2: ("queued", 0), 3: ("queued", 0)}
    later = held + timedelta(seconds=1)  # the first sender died: its reservation ran out
    with db.transaction(factory) as session:
        assert ledger.claim(session, later, later + timedelta(minutes=5), [DAY]) == 1
        # The dead sender's reservation is no longer its own: it cannot take the row.
        assert not ledger.take(session, 1, held, later, lease)
        assert ledger.take(session, 2, held, NOW, lease) is False  # handed back earlier
        assert ledger.reserve(session, later, lease, [DAY]) == 2
        assert ledger.take(session, 2, lease, later, lease)
    with factory() as session:
        rows = {d.id: (d.status, d.attempts) for d in session.scalars(select(Delivery))}
    assert rows == {1: ("sending", 1), 2: ("sending", 1), 3: ("queued", 0)}


@pytest.mark.postgresql
def test_a_claim_skips_rows_another_sender_holds(factory) -> None:
    fill_ledger(factory, 3, sent=0)
    lease = NOW + timedelta(minutes=5)
    with factory() as first, first.begin():
        assert ledger.claim(first, NOW, lease, [DAY]) == 1  # row 1 stays locked
        with factory() as second, second.begin():
            # Without SKIP LOCKED this claim would wait for the first transaction.
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert ledger.claim(second, NOW, lease, [DAY]) == 2
    with db.transaction(factory) as session:
        assert ledger.claim(session, NOW, lease, [DAY]) == 3
        assert ledger.claim(session, NOW, lease, [DAY]) is None


def paper_row(key: str, text_value: str = "", n: int = 0) -> dict[str, object]:
    """A `papers` row as ingest writes it in bulk."""
    return {
        "key": key,
        "title_key": key,
        "title": text_value,
        "abstract": text_value,
        "authors": "",
        "categories": "",
        "published_on": date(2026, 11, n + 1) if n % 2 else None,
        "upvotes": None if n % 2 else n,
        "first_seen_at": NOW - timedelta(minutes=n),
        "updated_at": NOW,
        "title_terms": "",
        "abstract_terms": "",
        "author_terms": "",
        "category_terms": "",
    }


def test_bulk_inserts_store_every_value_as_given(factory) -> None:
    # PostgreSQL takes them by COPY, SQLite by multi-row INSERTs: text that COPY's
    # format escapes (tabs, newlines, backslashes, \N) and NULLs come back unchanged.
    tricky = ["tab\there", "two\nlines", "back\\slash", "\\N", "", "café ∑ 🙂", "a|b,c;'d\""]
    rows = [paper_row(f"title:row {n}", text_value, n) for n, text_value in enumerate(tricky)]
    with db.transaction(factory) as session:
        ids = db.insert_papers(session, rows)
    with factory() as session:
        stored = {p.key: p for p in session.scalars(select(Paper))}
    assert set(ids) == set(stored) == {row["key"] for row in rows}
    for row in rows:
        paper = stored[str(row["key"])]
        assert (paper.title, paper.abstract) == (row["title"], row["abstract"])
        assert (paper.published_on, paper.upvotes) == (row["published_on"], row["upvotes"])
        assert paper.first_seen_at == row["first_seen_at"]
        assert paper.first_seen_at.tzinfo is not None


def test_a_failed_bulk_insert_is_a_database_error_and_stores_nothing(factory) -> None:
    with db.transaction(factory) as session:
        db.insert_papers(session, [paper_row("title:one")])
    with pytest.raises(IntegrityError), db.transaction(factory) as session:
        db.insert_papers(session, [paper_row("title:two"), paper_row("title:one")])
    with factory() as session:
        assert session.scalars(select(Paper.key)).all() == ["title:one"]
