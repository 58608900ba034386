"""Relevance: papers carry their analysed terms (Snowball stems, acronyms kept apart), the
full-text index reads those with a plain tokenizer, mined acronym definitions, the matched
words of each digest item and the "more matched" counts of each digest.

The terms and acronyms of existing papers are computed here with `digest.text`, and the
SQLite FTS5 index is rebuilt from them.

Revision ID: 0005_relevance
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_relevance"
down_revision = "0004"
branch_labels = None
depends_on = None

FIELDS = ("title", "abstract", "authors", "categories")
TERMS = ("title_terms", "abstract_terms", "author_terms", "category_terms")

# The external-content FTS5 index over the analysed columns, kept in sync by triggers.
# The terms are already stemmed and folded: the tokenizer only splits on spaces.
SQLITE_FTS = [
    """CREATE VIRTUAL TABLE papers_fts USING fts5(
        title_terms, abstract_terms, author_terms, category_terms,
        content='papers', content_rowid='id',
        tokenize='unicode61 remove_diacritics 0')""",
    """CREATE VIRTUAL TABLE papers_vocab USING fts5vocab(papers_fts, 'row')""",
    """CREATE TRIGGER papers_fts_insert AFTER INSERT ON papers BEGIN
        INSERT INTO papers_fts(rowid, title_terms, abstract_terms, author_terms, category_terms)
        VALUES (new.id, new.title_terms, new.abstract_terms, new.author_terms,
                new.category_terms);
    END""",
    """CREATE TRIGGER papers_fts_delete AFTER DELETE ON papers BEGIN
        INSERT INTO papers_fts(papers_fts, rowid, title_terms, abstract_terms, author_terms,
                               category_terms)
        VALUES ('delete', old.id, old.title_terms, old.abstract_terms, old.author_terms,
                old.category_terms);
    END""",
    """CREATE TRIGGER papers_fts_update
        AFTER UPDATE OF title_terms, abstract_terms, author_terms, category_terms
        ON papers BEGIN
        INSERT INTO papers_fts(papers_fts, rowid, title_terms, abstract_terms, author_terms,
                               category_terms)
        VALUES ('delete', old.id, old.title_terms, old.abstract_terms, old.author_terms,
                old.category_terms);
        INSERT INTO papers_fts(rowid, title_terms, abstract_terms, author_terms, category_terms)
        VALUES (new.id, new.title_terms, new.abstract_terms, new.author_terms,
                new.category_terms);
    END""",
]

# Revision 0001's index, restored by the downgrade.
OLD_FTS = [
    """CREATE VIRTUAL TABLE papers_fts USING fts5(
        title, abstract, authors, categories,
        content='papers', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER papers_fts_insert AFTER INSERT ON papers BEGIN
        INSERT INTO papers_fts(rowid, title, abstract, authors, categories)
        VALUES (new.id, new.title, new.abstract, new.authors, new.categories);
    END""",
    """CREATE TRIGGER papers_fts_delete AFTER DELETE ON papers BEGIN
        INSERT INTO papers_fts(papers_fts, rowid, title, abstract, authors, categories)
        VALUES ('delete', old.id, old.title, old.abstract, old.authors, old.categories);
    END""",
    """CREATE TRIGGER papers_fts_update AFTER UPDATE OF title, abstract, authors, categories
        ON papers BEGIN
        INSERT INTO papers_fts(papers_fts, rowid, title, abstract, authors, categories)
        VALUES ('delete', old.id, old.title, old.abstract, old.authors, old.categories);
        INSERT INTO papers_fts(rowid, title, abstract, authors, categories)
        VALUES (new.id, new.title, new.abstract, new.authors, new.categories);
    END""",
]


def _drop_sqlite_fts() -> None:
    for trigger in ("papers_fts_insert", "papers_fts_delete", "papers_fts_update"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.execute("DROP TABLE IF EXISTS papers_vocab")
    op.execute("DROP TABLE IF EXISTS papers_fts")


def upgrade() -> None:
    from digest.analysis import acronym_rows, paper_terms  # the analysis of this version

    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _drop_sqlite_fts()
    for column in TERMS:
        op.add_column("papers", sa.Column(column, sa.Text(), nullable=False, server_default=""))
    op.create_table(
        "acronyms",
        sa.Column("paper_id", sa.Integer(), nullable=False),
        sa.Column("term", sa.String(length=64), nullable=False),
        sa.Column("expansion_terms", sa.String(length=300), nullable=False),
        sa.Column("acronym", sa.String(length=64), nullable=False),
        sa.Column("expansion", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(
            ["paper_id"], ["papers.id"], name="fk_acronyms_paper_id_papers", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("paper_id", "term", "expansion_terms", name="pk_acronyms"),
    )
    op.create_index("ix_acronyms_term", "acronyms", ["term"])
    op.create_index("ix_acronyms_expansion_terms", "acronyms", ["expansion_terms"])
    op.add_column(
        "digest_items", sa.Column("matched", sa.Text(), nullable=False, server_default="")
    )
    op.add_column(
        "digests", sa.Column("more_matched", sa.Text(), nullable=False, server_default="{}")
    )

    bind = op.get_bind()
    papers = sa.table("papers", sa.column("id"), *(sa.column(c) for c in FIELDS + TERMS))
    acronyms = sa.table(
        "acronyms",
        *(sa.column(c) for c in ("paper_id", "term", "expansion_terms", "acronym", "expansion")),
    )
    rows = bind.execute(sa.select(papers.c.id, *(papers.c[c] for c in FIELDS))).all()
    for paper_id, title, abstract, authors, categories in rows:
        values = paper_terms(title, abstract, authors, categories)
        bind.execute(papers.update().where(papers.c.id == paper_id).values(**values))
        found = acronym_rows(paper_id, title, abstract)
        if found:
            bind.execute(acronyms.insert(), found)
    if sqlite:
        for statement in SQLITE_FTS:
            op.execute(statement)
        op.execute("INSERT INTO papers_fts(papers_fts) VALUES ('rebuild')")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _drop_sqlite_fts()
    with op.batch_alter_table("digests") as batch_op:
        batch_op.drop_column("more_matched")
    with op.batch_alter_table("digest_items") as batch_op:
        batch_op.drop_column("matched")
    op.drop_table("acronyms")
    with op.batch_alter_table("papers") as batch_op:
        for column in TERMS:
            batch_op.drop_column(column)
    if sqlite:
        for statement in OLD_FTS:
            op.execute(statement)
        op.execute("INSERT INTO papers_fts(papers_fts) VALUES ('rebuild')")
