"""The topic query language: parsing, canonical forms, FTS5 compilation, hostile input."""

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from digest import db
from digest.ingest import ingest_inputs
from digest.query import QueryError, parse_query
from tests.conftest import NOW, SEEDS


@pytest.mark.parametrize(
    ("text", "canonical", "fts"),
    [
        ("Diffusion  Models", "diffusion models", '("diffusion") AND ("models")'),
        ('"language model"', '"language model"', '("language model")'),
        ("rlhf OR dpo", "rlhf OR dpo", '("rlhf" OR "dpo")'),
        ("a OR b c", "a OR b c", '("a" OR "b") AND ("c")'),
        ("llm -survey", "llm -survey", '(("llm")) NOT "survey"'),
        (
            'agents -"position paper"',
            'agents -"position paper"',
            '(("agents")) NOT "position paper"',
        ),
        ("title:agents", "title:agents", '(title : "agents")'),
        ("author:Hinton", "author:hinton", '(authors : "hinton")'),
        ("cat:cs.CL", 'cat:"cs cl"', '(categories : "cs cl")'),
        ("diffus*", "diffus*", '("diffus" *)'),
        ("GPT-4", '"gpt 4"', '("gpt 4")'),
        ("re: diffusion", "re diffusion", '("re") AND ("diffusion")'),  # not a field name
    ],
)
def test_parse_and_compile(text: str, canonical: str, fts: str) -> None:
    query = parse_query(text)
    assert query.canonical() == canonical
    assert db.fts5_expression(query) == fts
    assert parse_query(query.canonical()) == query


def test_star_is_everything() -> None:
    assert parse_query(" * ").everything
    assert parse_query("*").canonical() == "*"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "query is empty"),
        ("   ", "query is empty"),
        ("-survey", "only excludes words"),
        ("!!! ??? ...", "has no words to look for"),
        ('""', "has no words to look for"),
        ("OR", "has no words to look for"),
        ("llm -llm", "requires and excludes 'llm', so it can match nothing"),
        ("venue:neurips", "unknown field 'venue:'"),
        ("x" * 501, "longer than 500 characters"),
        (" ".join(f"w{i}" for i in range(40)), "more than 32 terms"),
        ("title:", "'title:' needs a word or \"phrase\" right after it, e.g. title:agents"),
        ("agents author:", "'author:' needs a word"),
        ("title: agents", "'title:' needs a word"),  # not the word "title" and then "agents"
        ("-cat:", "'cat:' needs a word"),
    ],
)
def test_bad_queries_are_rejected_clearly(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(text)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, databases) -> Iterator[Session]:
    url = databases.new(tmp_path_factory.mktemp("q"))
    engine = db.open_database(url)
    factory = db.session_factory(engine)
    ingest_inputs(factory, [str(SEEDS)], now=NOW, max_bytes=10**7)
    with factory() as session:
        yield session
    engine.dispose()


def matches(session: Session, text: str) -> list[str]:
    return [paper.title for paper, _ in db.matching_papers(session, parse_query(text))]


def test_query_semantics_on_the_seed_papers(seeded: Session) -> None:
    diffusion = matches(seeded, "diffusion")
    assert len(diffusion) == 31
    # Stemming: "models" and "model" are the same word.
    assert matches(seeded, "diffusion models") == matches(seeded, "diffusion model")
    without_video = matches(seeded, "diffusion -video")
    assert 0 < len(without_video) < len(diffusion)
    assert all("video" not in title.lower() for title in without_video)
    either = set(matches(seeded, "rlhf OR dpo"))
    assert set(matches(seeded, "rlhf")) | set(matches(seeded, "dpo")) == either
    in_title = matches(seeded, "title:diffusion")
    assert in_title and all("diffus" in title.lower() for title in in_title)
    assert set(in_title) < set(diffusion)
    phrase = matches(seeded, '"language models"')
    assert set(phrase) <= set(matches(seeded, "language models"))
    assert len(matches(seeded, "*")) == 540
    assert matches(seeded, "cat:cs.CL") == []  # HF pages carry no arXiv categories


HOSTILE = [
    "NEAR(a b, 3)",
    'title:"unterminated',
    '"a" AND "b" NOT ^c',
    "col:a OR {title abstract}:b",
    "a* * *b",
    "\x00\r\n; DROP TABLE papers; --",
    "'); DELETE FROM papers; --",
    "日本語 モデル",
    "-(-a)",
    "a OR OR OR",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_never_reach_fts_as_syntax(seeded: Session, text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError:
        return
    db.match_papers(seeded, query)  # must not raise an FTS5 syntax error


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=120))
def test_any_text_parses_or_is_rejected_and_never_breaks_fts(seeded: Session, text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError:
        return
    db.match_papers(seeded, query, limit=5)
    assert parse_query(query.canonical()) == query


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.sampled_from(
            [
                '"',
                "-",
                "*",
                ":",
                "OR",
                "AND",
                "NOT",
                "NEAR",
                "(",
                ")",
                "title:",
                "cat:",
                "x",
                "ü",
                " ",
                "^",
                "{",
                "}",
            ]
        ),
        max_size=25,
    )
)
def test_operator_soup_never_breaks_fts(seeded: Session, pieces: list[str]) -> None:
    try:
        query = parse_query("".join(pieces))
    except QueryError:
        return
    db.match_papers(seeded, query, limit=5)
