"""The topic query language: parsing, canonical forms, FTS5 compilation, hostile input."""

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from digest import db, fulltext, query_plan, relevance
from digest.ingest import ingest_inputs
from digest.query import Query, QueryError, parse_query
from tests.conftest import NOW, SEEDS


def compiled(session: Session, query: Query) -> str:
    plan = query_plan.plan_query(session, query, relevance.Corpus(session))
    return fulltext.fts5_expression(plan.retrieval_groups(), plan.excluded)


def match(session: Session, query: Query, limit: int | None = None) -> list[relevance.Match]:
    corpus = relevance.Corpus(session)
    found = relevance.rank(session, query_plan.plan_query(session, query, corpus), corpus)
    return found[:limit] if limit else found


@pytest.fixture
def empty(factory) -> Session:
    """A session on an empty database: no acronyms, no document frequencies."""
    with factory() as session:
        yield session


@pytest.mark.parametrize(
    ("text", "canonical", "fts"),
    [
        ("Diffusion  Models", "diffusion models", '("diffus") AND ("model")'),
        ('"language model"', '"language model"', '("languag model")'),
        ("rlhf OR dpo", "rlhf OR dpo", '("rlhf" OR "dpo")'),
        ("a OR b c", "a OR b c", '("a" OR "b") AND ("c")'),
        ("llm -survey", "llm -survey", '(("llm")) NOT "survey"'),
        (
            'agents -"position paper"',
            'agents -"position paper"',
            '(("agent")) NOT "posit paper"',
        ),
        ("title:agents", "title:agents", '(title_terms : "agent")'),
        ("author:Hinton", "author:hinton", '(author_terms : "hinton")'),
        ("cat:cs.CL", 'cat:"cs cl"', '(category_terms : "cs cl")'),
        ("diffus*", "diffus*", '("diffus" *)'),
        ("GPT-4", '"GPT 4"', '("qqgpt 4")'),
        ("RAG", "RAG", '("qqrag")'),
        ("CoDE generation", "CoDE generation", '("qqcode") AND ("generat")'),
        ("like:2602.23229v2 -survey", "like:2602.23229 -survey", ""),
        ("re: diffusion", "re diffusion", '("re") AND ("diffus")'),  # not a field name
        ("title:like:", "title:like", '(title_terms : "like")'),  # the word, not the operator
    ],
)
def test_parse_and_compile(empty: Session, text: str, canonical: str, fts: str) -> None:
    query = parse_query(text)
    assert query.canonical() == canonical
    if query.likes:  # no such paper here: nothing to look for
        assert query_plan.plan_query(empty, query, relevance.Corpus(empty)).empty
    else:
        assert compiled(empty, query) == fts
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
        ("like:abc", "like: takes a paper's number or its arXiv id"),
        ("-like:12 x", "like: cannot be excluded"),
        ("x" * 501, "longer than 500 characters"),
        (" ".join(f"w{i}" for i in range(40)), "more than 32 terms"),
        ("title:", "'title:' needs a word or \"phrase\" right after it, e.g. title:agents"),
        ("agents author:", "'author:' needs a word"),
        ("title: agents", "'title:' needs a word"),  # not the word "title" and then "agents"
        ("-cat:", "'cat:' needs a word"),
        ("like:", "'like:' needs a paper id right after it, e.g. like:42"),
        ("like: 42", "'like:' needs a paper id"),  # not the words "like" and "42"
        ("agents LIKE:", "'LIKE:' needs a paper id"),
        ("a", r"looks only for common words \(a\) that nearly every paper has"),
        ("The", r"common words \(the\)"),
        ("of the", r"common words \(of the\)"),
        ('"of the"', r"common words \(of the\)"),
        ("the OR a -survey", r"common words \(the a\)"),
        ("title:the", r"common words \(the\)"),
    ],
)
def test_bad_queries_are_rejected_clearly(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("the transformer", "the transformer"),
        ("the OR diffusion", "the OR diffusion"),
        ("author:An", "author:an"),  # a surname
        ("like:42 the", "like:42 the"),
        ("IT", "IT"),  # typed as an acronym
        ("a*", "a*"),  # a prefix, not a word
        ("*", "*"),
    ],
)
def test_stop_words_are_fine_beside_a_word_to_look_for(text: str, canonical: str) -> None:
    assert parse_query(text).canonical() == canonical


def test_a_stored_stop_word_topic_still_parses() -> None:
    """Topics saved before the rule keep being selected (and shown) as they were."""
    assert parse_query("of the", stored=True).canonical() == "of the"


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
    found = match(session, parse_query(text))
    papers = db.papers_by_id(session, [m.paper_id for m in found])
    return [papers[m.paper_id].title for m in found]


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


def test_a_prefix_also_looks_for_the_shorter_stems_of_its_words(
    seeded: Session, empty: Session
) -> None:
    # Optimization, optimizer and optimizing stem to "optim", shorter than the prefix; the
    # seeds have that stem, an empty database has not.
    assert compiled(seeded, parse_query("optimiz*")) == '("optimiz" * OR "optim")'
    assert (
        compiled(seeded, parse_query("title:optimiz*"))
        == '(title_terms : "optimiz" * OR title_terms : "optim")'
    )
    assert compiled(empty, parse_query("optimiz*")) == '("optimiz" *)'
    assert compiled(seeded, parse_query("author:optimiz*")) == '(author_terms : "optimiz" *)'
    found = set(matches(seeded, "optimiz*"))
    every = {title for title in matches(seeded, "*") if "optimiz" in title.lower()}
    assert len(every) == 85 and every <= found  # each title with such a word
    assert found < set(matches(seeded, "optim*"))  # which also finds optimisation, optimism


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
    match(seeded, query)  # must not raise an FTS5 syntax error


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=120))
def test_any_text_parses_or_is_rejected_and_never_breaks_fts(seeded: Session, text: str) -> None:
    try:
        query = parse_query(text)
    except QueryError:
        return
    match(seeded, query, limit=5)
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
    match(seeded, query, limit=5)
