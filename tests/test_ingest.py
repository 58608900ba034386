"""Ingestion into a real SQLite file: merging, idempotence, upvote history, bad inputs."""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from digest import analysis, db, merge, query_plan, ranking, relevance
from digest import ingest as ingest_module
from digest import text as text_analysis
from digest.fetch import HttpFetcher
from digest.ingest import ingest_inputs
from digest.models import Paper
from digest.query import parse_query
from digest.sources import hf_api, parse_input
from digest.sources.records import InputError
from tests.conftest import DATA, NOW

LIMIT = 1_000_000
HF_JSON = DATA / "hf_daily_papers.json"
PAGE_HEADER = (
    "Get trending papers in your email inbox!\n\nSubscribe\n\nDaily Papers\n\n"
    "byAK and the research community\n\nMar 6\n\n"
)


def ingest(factory, *names, now=NOW, fetcher=None, max_bytes=LIMIT):
    return ingest_inputs(
        factory, [str(n) for n in names], now=now, max_bytes=max_bytes, fetcher=fetcher
    )


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def dump(factory: sessionmaker[Session]) -> list[tuple]:
    """Every stored row, to prove that a failed input changed nothing."""
    with factory() as session:
        return [
            tuple(row)
            for table in ("papers", "paper_sources", "upvote_observations")
            for row in session.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))
        ]


def page(path: Path, *entries: str) -> Path:
    path.write_text(PAGE_HEADER + "\n\n".join(entries) + "\n", encoding="utf-8")
    return path


def test_seeds_load_every_paper_exactly_once(factory, seeds: Path) -> None:
    summaries = ingest(factory, seeds)
    assert [s.error for s in summaries] == [None] * 5
    assert [s.parsed for s in summaries] == [34, 333, 53, 78, 57]
    # 555 entries; 15 titles recur (2 within 001, the rest across files).
    assert sum(s.new for s in summaries) == 540
    assert count(factory, Paper) == 540
    again = ingest(factory, seeds, now=NOW + timedelta(hours=1))
    assert [(s.new, s.updated) for s in again] == [(0, 0)] * 5
    assert sum(s.unchanged for s in again) == 555
    assert count(factory, Paper) == 540


def test_the_same_paper_merges_across_sources_keeping_the_richest_data(
    factory, tmp_path: Path
) -> None:
    capture = page(
        tmp_path / "page.txt",
        "Large Multimodal Models as General In-Context Classifiers\n\n"
        "Which multimodal model should we use for classification?\n\n"
        "  • 5 authors\n·\nFeb 26 4",
    )
    [first] = ingest(factory, capture)
    assert (first.new, first.updated) == (1, 0)
    [second] = ingest(factory, HF_JSON, now=NOW + timedelta(hours=2))
    assert (second.new, second.updated) == (0, 1)
    with factory() as session:
        [paper] = session.scalars(select(Paper)).all()
        assert paper.arxiv_id == paper.key == "2602.23229"
        assert paper.author_names[0] == "Marco Garosi"
        assert paper.author_count == 5
        assert paper.organization == "Multimedia and Human Understanding Group"
        assert paper.published_on == date(2026, 2, 26)
        assert paper.abstract.endswith("a flexible alternative to specialized models.")
        assert paper.hf_url == "https://huggingface.co/papers/2602.23229"
        assert paper.pdf_url == "https://arxiv.org/pdf/2602.23229"
        assert paper.github_url == "https://github.com/marco-garosi/CIRCLE"
        assert [s.source for s in paper.sources] == ["hf_api", "hf_page"]
        assert [(o.upvotes, o.observed_at) for o in paper.observations] == [
            (4, NOW),
            (10, NOW + timedelta(hours=2)),
        ]
        assert paper.upvotes == 10
        assert paper.first_seen_at == NOW
    # The page again, later, adds nothing but keeps the arXiv data it lacks.
    ingest(factory, capture, now=NOW + timedelta(hours=3))
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert paper.author_names[0] == "Marco Garosi"
        assert [o.upvotes for o in paper.observations] == [4, 10, 4]


def test_upvote_observations_only_record_changes(factory, tmp_path: Path) -> None:
    def capture(votes: int) -> Path:
        return page(
            tmp_path / f"p{votes}.txt",
            f"A Paper\n\nIts abstract.\n\n  • 2 authors\n·\nMar 1 {votes}",
        )

    ingest(factory, capture(3))
    ingest(factory, capture(3), now=NOW + timedelta(hours=6))
    ingest(factory, capture(9), now=NOW + timedelta(hours=12))
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert [(o.upvotes, o.observed_at) for o in paper.observations] == [
            (3, NOW),
            (9, NOW + timedelta(hours=12)),
        ]
        assert paper.upvotes == 9


def search(session: Session, text: str) -> list[Paper]:
    corpus = relevance.Corpus(session)
    found = relevance.rank(
        session, query_plan.plan_query(session, parse_query(text), corpus), corpus
    )
    papers = db.papers_by_id(session, [match.paper_id for match in found])
    return [papers[match.paper_id] for match in found]


def test_full_text_index_follows_inserts_and_updates(factory, tmp_path: Path) -> None:
    capture = page(
        tmp_path / "page.txt",
        "Large Multimodal Models as General In-Context Classifiers\n\nShort abstract.",
    )
    ingest(factory, capture)
    with factory() as session:
        assert search(session, "Garosi") == []
        assert [p.title for p in search(session, "classifier")] == [
            "Large Multimodal Models as General In-Context Classifiers"
        ]
    ingest(factory, HF_JSON)
    with factory() as session:
        # The authors arrived with the JSON; stemming maps "adapters" to "adapter".
        assert len(search(session, "garosi")) == 1
        assert len(search(session, "adapter")) == 1
        assert search(session, 'OR "NEAR(') == []


def test_arxiv_sources_ingest_with_categories(factory) -> None:
    summaries = ingest(factory, DATA / "arxiv_api_query.xml", DATA / "arxiv_listing.rss")
    assert [(s.format, s.new) for s in summaries] == [("arxiv-api-atom", 10), ("arxiv-listing", 2)]
    assert len(summaries[1].skipped) == 2
    with factory() as session:
        paper = session.scalars(select(Paper).where(Paper.arxiv_id == "nucl-ex/0408020")).one()
        assert paper.category_list == ["nucl-ex", "hep-ph"]
        assert paper.abs_url == "https://arxiv.org/abs/nucl-ex/0408020"
        assert len(search(session, "nucl")) >= 1


def full_dump(factory: sessionmaker[Session]) -> list[tuple]:
    """Every row ingest writes, the analysed terms and acronyms included."""
    tables = {
        "papers": "id",
        "paper_sources": "paper_id, source",
        "upvote_observations": "id",
        "acronyms": "paper_id, term, expansion_terms",
    }
    with factory() as session:
        return [
            (table, *row)
            for table, order in tables.items()
            for row in session.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))
        ]


def test_batches_of_any_size_store_the_same(
    factory, databases, tmp_path: Path, seeds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seeds repeat titles inside a file and across files: with batches of 3 records,
    # merges happen inside a batch, across batches and across inputs.
    other = databases.new(tmp_path / "other")
    engine = db.open_database(other)
    try:
        whole = db.session_factory(engine)
        ingest(whole, seeds)
        ingest(whole, seeds, HF_JSON, now=NOW + timedelta(hours=1))
        monkeypatch.setattr(merge, "BATCH_SIZE", 3)
        first = ingest(factory, seeds)
        again = ingest(factory, seeds, HF_JSON, now=NOW + timedelta(hours=1))
        assert sum(s.new for s in first) == 540
        assert [(s.new, s.updated, s.unchanged) for s in again[:5]] == [
            (0, 0, 34),
            (0, 0, 333),
            (0, 0, 53),
            (0, 0, 78),
            (0, 0, 57),
        ]
        assert full_dump(factory) == full_dump(whole)
    finally:
        engine.dispose()
        databases.drop(other)
    assert db.integrity_problems(engine_of(factory), full=True) == []


def test_a_worker_process_analyses_papers_exactly_as_this_one(
    factory, databases, tmp_path: Path, seeds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every batch of the seeds (up to 333 new papers) shares its analysis with the worker.
    monkeypatch.setattr(analysis, "PARALLEL_ANALYSIS", 2)
    monkeypatch.setattr(analysis, "spare_cpu", lambda: True)
    used: list[bool] = []
    close = analysis.Analyser.close

    def spy(self: analysis.Analyser) -> None:
        used.append(self._worker is not None)
        close(self)

    monkeypatch.setattr(analysis.Analyser, "close", spy)
    other = databases.new(tmp_path / "other")
    engine = db.open_database(other)
    try:
        alone = db.session_factory(engine)
        monkeypatch.setattr(analysis, "PARALLEL_ANALYSIS", 10**9)
        ingest(alone, seeds)
        monkeypatch.setattr(analysis, "PARALLEL_ANALYSIS", 2)
        ingest(factory, seeds)
        assert used == [False, True]
        assert full_dump(factory) == full_dump(alone)
    finally:
        engine.dispose()
        databases.drop(other)
    with factory() as session:
        texts = [
            tuple(row)
            for row in session.execute(
                text("SELECT title, abstract, authors, categories FROM papers ORDER BY id")
            )
        ]
    assert len(texts) == 540
    shared = analysed_by_worker(texts)
    assert shared == analysis.analyse(texts)
    assert [terms["abstract_terms"] for terms, _ in shared] == [
        text_analysis.joined(text_analysis.terms(abstract)) for _, abstract, _, _ in texts
    ]


def analysed_by_worker(texts: list) -> list[analysis.Analysis]:
    """The analysis of `texts` by an `Analyser` that shared it with its worker."""
    analyser = analysis.Analyser()
    try:
        shared = analyser.analyse(texts)
        assert analyser._worker is not None
    finally:
        analyser.close()
    return shared


def test_analysis_goes_on_here_when_the_worker_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis, "spare_cpu", lambda: True)
    texts = [
        (f"Mixture-of-Experts (MoE) routing {n}", f"We study RAG for LLMs, paper {n}.", "", "cs.CL")
        for n in range(analysis.PARALLEL_ANALYSIS)
    ]
    analyser = analysis.Analyser()
    try:
        first = analyser.analyse(texts)
        worker = analyser._worker
        assert worker is not None
        worker.kill()
        worker.wait()
        again = analyser.analyse(texts)
        assert analyser._worker is None  # given up: no new worker
        assert analyser.analyse(texts) == again
    finally:
        analyser.close()
    assert first == again == analysis.analyse(texts)
    assert first[0][1][0]["term"] == "qqmoe"


def engine_of(factory: sessionmaker[Session]):
    with factory() as session:
        return session.get_bind()


def source_hashes(factory: sessionmaker[Session]) -> list[tuple]:
    with factory() as session:
        return list(
            session.execute(
                text("SELECT paper_id, source, content_hash FROM paper_sources ORDER BY 1, 2")
            )
        )


def test_a_record_seen_before_only_adds_an_upvote_change(factory, tmp_path: Path) -> None:
    items = json.loads(HF_JSON.read_text(encoding="utf-8"))
    ingest(factory, HF_JSON)
    hashes = source_hashes(factory)
    assert [len(h) for _, _, h in hashes] == [32]
    before = full_dump(factory)
    [same] = ingest(factory, HF_JSON, now=NOW + timedelta(hours=1))
    assert (same.new, same.updated, same.unchanged) == (0, 0, 1)
    assert full_dump(factory) == before
    # More upvotes: one observation, the paper's count and update time; nothing else.
    items[0]["paper"]["upvotes"] += 5
    more = tmp_path / "more.json"
    more.write_text(json.dumps(items), encoding="utf-8")
    [changed] = ingest(factory, more, now=NOW + timedelta(hours=2))
    assert (changed.new, changed.updated, changed.unchanged) == (0, 1, 0)
    votes = items[0]["paper"]["upvotes"]
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert [(o.upvotes, o.observed_at) for o in paper.observations] == [
            (votes - 5, NOW),
            (votes, NOW + timedelta(hours=2)),
        ]
        assert (paper.upvotes, paper.updated_at, paper.first_seen_at) == (
            votes,
            NOW + timedelta(hours=2),
            NOW,
        )
    assert source_hashes(factory) == hashes
    # An observation from before the latest one is recorded, but the count stays.
    [earlier] = ingest(factory, HF_JSON, now=NOW + timedelta(minutes=30))
    assert (earlier.updated, earlier.unchanged) == (1, 0)
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert [o.upvotes for o in paper.observations] == [votes - 5, votes - 5, votes]
        assert paper.upvotes == votes


def test_a_changed_record_is_merged_and_its_new_hash_kept(factory, tmp_path: Path) -> None:
    items = json.loads(HF_JSON.read_text(encoding="utf-8"))
    project = items[0]["paper"].pop("projectPage")
    first = tmp_path / "first.json"
    first.write_text(json.dumps(items), encoding="utf-8")
    ingest(factory, first)
    [(paper_id, source, first_hash)] = source_hashes(factory)
    # Rows stored before hashes existed have none: the next ingest merges and fills it.
    with factory() as session, session.begin():
        session.execute(text("UPDATE paper_sources SET content_hash = NULL"))
    [legacy] = ingest(factory, first, now=NOW + timedelta(hours=1))
    assert (legacy.updated, legacy.unchanged) == (0, 1)
    assert source_hashes(factory) == [(paper_id, source, first_hash)]
    # The project page fills an empty field; the abstract, filled already, stays.
    items[0]["paper"]["projectPage"] = project
    items[0]["summary"] = "A different abstract."
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(items), encoding="utf-8")
    [summary] = ingest(factory, changed, now=NOW + timedelta(hours=2))
    assert (summary.updated, summary.unchanged) == (1, 0)
    [(_, _, new_hash)] = source_hashes(factory)
    assert new_hash not in (first_hash, None)
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert paper.project_url == project
        assert paper.abstract.startswith("Which multimodal model should we use")
        assert paper.updated_at == NOW + timedelta(hours=2)


def hf_copies() -> tuple[dict, dict]:
    """Two copies of the one paper of the HF daily_papers capture, to change apart."""
    [item] = json.loads(HF_JSON.read_text(encoding="utf-8"))
    return item, json.loads(json.dumps(item))


def write_items(path: Path, items: list[dict]) -> Path:
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_a_changed_text_is_analysed_again(factory, tmp_path: Path) -> None:
    # The same paper, first without an abstract, then with one that defines an acronym.
    items = json.loads(HF_JSON.read_text(encoding="utf-8"))
    abstract = items[0].pop("summary")
    items[0]["paper"].pop("summary")
    ingest(factory, write_items(tmp_path / "bare.json", items))
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert (paper.abstract, paper.abstract_terms, paper.acronyms) == ("", "", [])
    items[0]["summary"] = abstract
    [summary] = ingest(
        factory, write_items(tmp_path / "full.json", items), now=NOW + timedelta(hours=1)
    )
    assert (summary.updated, summary.unchanged) == (1, 0)
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert paper.abstract == abstract
        assert paper.abstract_terms == text_analysis.indexed_terms(abstract)
        assert sorted((a.term, a.expansion_terms) for a in paper.acronyms) == sorted(
            {
                (a.term, " ".join(a.expansion_terms))
                for a in text_analysis.acronym_definitions(f"{paper.title}. {abstract}")
            }
        )
        assert len(paper.acronyms) == 2


def test_a_field_ingest_ignores_changes_the_hash_and_nothing_else(factory, tmp_path: Path) -> None:
    items = json.loads(HF_JSON.read_text(encoding="utf-8"))
    ingest(factory, HF_JSON)
    [(_, _, first_hash)] = source_hashes(factory)
    before = full_dump(factory)
    items[0]["numComments"] = 7
    items[0]["paper"]["upvotes"] += 1
    [summary] = ingest(
        factory, write_items(tmp_path / "more.json", items), now=NOW + timedelta(hours=1)
    )
    # Parsed again (its hash changed) and merged: only the upvote count is news.
    assert (summary.new, summary.updated, summary.unchanged) == (0, 1, 0)
    [(_, _, new_hash)] = source_hashes(factory)
    assert new_hash not in (first_hash, None)
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert [o.upvotes for o in paper.observations] == [10, 11]
        assert (paper.upvotes, paper.updated_at) == (11, NOW + timedelta(hours=1))
    changed = {row for row in full_dump(factory) if row not in before}
    assert {row[0] for row in changed} == {"papers", "paper_sources", "upvote_observations"}


def test_an_older_version_after_a_newer_one_in_one_input_is_merged(factory, tmp_path: Path) -> None:
    # v1 is stored; an input then holds v2 (a project page more) and v1 again. The two
    # copies are folded into one record before anything is stored: v1, the last, with
    # the project page it lacks from v2. The same input again changes nothing.
    items = json.loads(HF_JSON.read_text(encoding="utf-8"))
    project = items[0]["paper"].pop("projectPage")
    v1 = write_items(tmp_path / "v1.json", items)
    ingest(factory, v1)
    [(_, _, v1_hash)] = source_hashes(factory)
    v2 = json.loads(json.dumps(items[0]))
    v2["paper"]["projectPage"] = project
    both = write_items(tmp_path / "both.json", [v2, items[0]])
    [summary] = ingest(factory, both, now=NOW + timedelta(hours=1))
    assert (summary.parsed, summary.new, summary.updated, summary.unchanged) == (2, 0, 1, 0)
    assert summary.repeated == 1
    [(_, _, folded_hash)] = source_hashes(factory)
    assert folded_hash not in (v1_hash, None)
    with factory() as session:
        assert session.scalars(select(Paper)).one().project_url == project
    [again] = ingest(factory, both, now=NOW + timedelta(hours=2))
    assert (again.updated, again.unchanged, again.repeated) == (0, 1, 1)
    assert [h for _, _, h in source_hashes(factory)] == [folded_hash]


def test_a_new_parser_version_merges_every_record_once_more(
    factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(factory, HF_JSON)
    [(_, _, first_hash)] = source_hashes(factory)
    before = full_dump(factory)
    monkeypatch.setattr(hf_api, "PARSER_VERSION", hf_api.PARSER_VERSION + 1)
    [summary] = ingest(factory, HF_JSON, now=NOW + timedelta(hours=1))
    assert (summary.updated, summary.unchanged) == (0, 1)
    [(_, _, new_hash)] = source_hashes(factory)
    assert new_hash not in (first_hash, None)
    after = full_dump(factory)
    assert len(after) == len(before)
    assert [row[0] for row in after if row not in before] == ["paper_sources"]


def test_unparseable_entries_are_reported_whether_parsed_now_or_at_once(
    factory, tmp_path: Path
) -> None:
    document = (
        b'[{"title": "Kept", "paper": {"id": "2601.00001v2", "upvotes": 3}},'
        b' {"paper": {"id": "2601.00002"}},'
        b' {"title": "Bad date", "paper": {"publishedAt": "yesterday"}},'
        b" 42]"
    )
    path = tmp_path / "bad.json"
    path.write_bytes(document)
    for hours in (0, 1):  # stored, then known
        [summary] = ingest(factory, path, now=NOW + timedelta(hours=hours))
        assert summary.parsed == 1
        assert (
            summary.skipped
            == parse_input(document, NOW).skipped
            == [
                "record 2: no title",
                "record 3 ('Bad date'): date does not parse: 'yesterday'",
                "record 4: not a JSON object",
            ]
        )
    assert (summary.new, summary.updated, summary.unchanged) == (0, 0, 1)


BAD_INPUTS = {
    "notes.txt": (b"Meeting notes, nothing to see.\n", "unknown format"),
    "truncated.xml": (
        (DATA / "arxiv_api_query.xml").read_bytes()[:4000],
        "malformed or truncated XML",
    ),
    "truncated.json": (HF_JSON.read_bytes()[:900], "truncated or invalid JSON"),
    "long-number.json": (b'[{"paper": {"upvotes": ' + b"9" * 5000 + b"}}]", "invalid JSON"),
    "junk.bin": (bytes(range(256)) * 4, "binary data"),
    "empty.txt": (b"", "empty file"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_a_bad_file_writes_nothing_and_the_others_still_load(
    factory, seeds: Path, tmp_path: Path, name: str
) -> None:
    ingest(factory, seeds / "000_5ed1fa5957327774.txt")
    before = dump(factory)
    data, message = BAD_INPUTS[name]
    bad = tmp_path / name
    bad.write_bytes(data)
    summaries = ingest(factory, bad, HF_JSON)
    assert summaries[0].name == str(bad)
    assert message in (summaries[0].error or "")
    assert summaries[1].ok and summaries[1].new == 1
    after = dump(factory)
    assert len(after) > len(before)
    assert set(before) <= set(after)


def test_files_over_the_size_limit_are_refused(factory, seeds: Path) -> None:
    big = seeds / "001_4e7a20fc27536b42.txt"
    [summary] = ingest(factory, big, max_bytes=100_000)
    assert summary.error == (
        f"file is {big.stat().st_size} bytes, over the 100000 byte limit (ingest.max_input_bytes)"
    )
    assert count(factory, Paper) == 0


def test_missing_file_is_reported(factory, tmp_path: Path) -> None:
    [summary] = ingest(factory, tmp_path / "nope.txt")
    assert summary.error == "no such file"


def test_a_database_failure_rolls_back_the_whole_input(factory, seeds: Path) -> None:
    ingest(factory, seeds / "000_5ed1fa5957327774.txt")
    before = dump(factory)
    failing_trigger = {
        "sqlite": [
            "CREATE TRIGGER refuse_twelfth BEFORE INSERT ON papers "
            "WHEN (SELECT count(*) FROM papers) >= 45 "
            "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        ],
        "postgresql": [
            "CREATE FUNCTION refuse_twelfth() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF (SELECT count(*) FROM papers) >= 45 THEN RAISE EXCEPTION 'disk on fire' "
            "USING ERRCODE = 'check_violation'; END IF; "
            "RETURN NEW; END $$",
            "CREATE TRIGGER refuse_twelfth BEFORE INSERT ON papers "
            "FOR EACH ROW EXECUTE FUNCTION refuse_twelfth()",
        ],
    }
    with factory() as session, session.begin():
        for statement in failing_trigger[session.get_bind().dialect.name]:
            session.execute(text(statement))
    [summary] = ingest(factory, seeds / "002_584096cb3b27ec92.txt")
    assert "database error, nothing stored" in (summary.error or "")
    assert "disk on fire" in (summary.error or "")
    assert dump(factory) == before


# --- URL inputs, served from a local HTTP server ---------------------------------


class Handler(BaseHTTPRequestHandler):
    failures: dict[str, int] = {}
    hits: list[str] = []

    def do_GET(self) -> None:
        Handler.hits.append(self.path)
        remaining = Handler.failures.get(self.path, 0)
        if remaining:
            Handler.failures[self.path] = remaining - 1
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        target = DATA / self.path.lstrip("/")
        if not target.is_file():
            self.send_error(404)
            return
        body = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.failures = {}
    Handler.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def test_urls_are_fetched_with_retries_backoff_and_a_polite_delay(factory, server: str) -> None:
    clock = FakeClock()
    fetcher = HttpFetcher(
        timeout=5,
        retries=2,
        backoff=1.5,
        host_delay=3.0,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    Handler.failures = {"/arxiv_api_query.xml": 2}
    summaries = ingest(
        factory,
        f"{server}/arxiv_api_query.xml",
        f"{server}/hf_daily_papers.json",
        f"{server}/missing.xml",
        fetcher=fetcher,
    )
    assert [s.new for s in summaries[:2]] == [10, 1]
    assert summaries[2].error == "HTTP 404 Not Found"
    assert Handler.hits == ["/arxiv_api_query.xml"] * 3 + ["/hf_daily_papers.json", "/missing.xml"]
    # Two backoffs (1.5 s, 3 s); each later request to the same host waits out the 3 s delay
    # (after the 3 s backoff, the third attempt needs no extra wait).
    assert clock.sleeps == [1.5, 1.5, 3.0, 3.0, 3.0]


def test_retries_give_up_with_a_clear_error(factory, server: str) -> None:
    clock = FakeClock()
    fetcher = HttpFetcher(
        retries=1, backoff=0.5, host_delay=0, monotonic=clock.monotonic, sleep=clock.sleep
    )
    Handler.failures = {"/hf_daily_papers.json": 5}
    [summary] = ingest(factory, f"{server}/hf_daily_papers.json", fetcher=fetcher)
    assert summary.error == "HTTP 503 Service Unavailable"
    assert clock.sleeps == [0.5]


def test_refused_connections_are_reported(factory) -> None:
    clock = FakeClock()
    fetcher = HttpFetcher(
        retries=1, backoff=0.1, host_delay=0, monotonic=clock.monotonic, sleep=clock.sleep
    )
    [summary] = ingest(factory, "http://127.0.0.1:9/feed.xml", fetcher=fetcher)
    assert (summary.error or "").startswith("fetch failed after 2 attempts:")


def test_a_url_is_sent_in_ascii(factory, server: str) -> None:
    """A non-ASCII path is percent-encoded as UTF-8 (http.client cannot send it raw)."""
    fetcher = HttpFetcher(retries=0, host_delay=0)
    [summary] = ingest(factory, f"{server}/café.json?q=ü", fetcher=fetcher)
    assert summary.error == "HTTP 404 Not Found"
    assert Handler.hits == ["/caf%C3%A9.json?q=%C3%BC"]


def test_urls_that_fail_the_url_rule_are_refused_before_any_request(factory, server: str) -> None:
    clock = FakeClock()
    fetcher = HttpFetcher(retries=3, monotonic=clock.monotonic, sleep=clock.sleep)
    port = server.rsplit(":", 1)[1]
    bad = (
        f"http://reader:s3cret@127.0.0.1:{port}/hf_daily_papers.json",
        f"{server}/hf_daily_papers.json\r\nX-Injected: 1",
        f"{server}/hf daily papers.json",
        "http://127.0.0.1:0/hf_daily_papers.json",
        "http://[::1]junk/feed.xml",
        f"{server}/?id_list=" + "a" * 8000,
    )
    summaries = ingest(factory, *bad, fetcher=fetcher)
    assert [s.line() for s in summaries[:3]] == [
        f"http://reader:***@127.0.0.1:{port}/hf_daily_papers.json: error: "
        "the URL carries a user name or password",
        repr(bad[1]) + ": error: the URL has a space or control character",
        f"{server}/hf daily papers.json: error: the URL has a space or control character",
    ]
    assert [s.error for s in summaries[3:]] == [
        "port 0 is not a TCP port",
        "host '[::1]' is not an IPv6 address",
        "the URL is longer than 8000 characters",
    ]
    assert Handler.hits == []
    assert clock.sleeps == []  # refused, not retried


def test_downloads_over_the_size_limit_are_refused(factory, server: str) -> None:
    fetcher = HttpFetcher(host_delay=0, max_bytes=1000)
    [summary] = ingest(factory, f"{server}/arxiv_api_query.xml", fetcher=fetcher)
    assert (summary.error or "").startswith("larger than the 1000 byte limit")


@pytest.fixture
def dripping_server() -> Iterator[tuple[str, list[str]]]:
    """A server that sends its response one byte every 50 ms (over a minute in all)."""
    listener = socket.create_server(("127.0.0.1", 0))
    parts = ["headers", "body"]

    def serve() -> None:
        for part in parts:
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                data = (
                    head + b"x" * 1000 if part == "body" else b"HTTP/1.1 200 OK\r\nX: " + b"y" * 999
                )
                try:
                    for byte in data:
                        connection.send(bytes([byte]))
                        time.sleep(0.05)
                except OSError:
                    pass  # the client gave up: what the test wants

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", parts
    listener.close()


def test_the_timeout_bounds_the_whole_download(dripping_server) -> None:
    """ingest.timeout is a deadline for the download, not for each read of a byte."""
    url, parts = dripping_server
    fetcher = HttpFetcher(timeout=1.0, retries=0, host_delay=0)
    for part in parts:  # a server dripping its headers, then one dripping its body
        started = time.monotonic()
        with pytest.raises(
            InputError, match=r"fetch failed after 1 attempts: not complete within 1 s"
        ):
            fetcher.fetch(f"{url}/{part}")
        assert time.monotonic() - started < 3.0, part


def test_the_worker_runs_the_installed_code_not_a_digest_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "digest"
    fake.mkdir()
    (fake / "__init__.py").write_text("", encoding="utf-8")
    (fake / "analysis.py").write_text(
        "import pickle, sys\n"
        "def serve_analysis():\n"
        "    texts = pickle.load(sys.stdin.buffer)\n"
        "    pickle.dump([({}, [])] * len(texts), sys.stdout.buffer)\n"
        "    sys.stdout.buffer.flush()\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(analysis, "spare_cpu", lambda: True)
    texts = [
        (f"Paper {n} on RAG", "An abstract.", "", "") for n in range(analysis.PARALLEL_ANALYSIS)
    ]
    shared = analysed_by_worker(texts)
    assert shared == analysis.analyse(texts)


def test_the_collector_stays_on_while_another_thread_runs() -> None:
    """The pause is process-wide: in the service a send may run beside the ingest."""
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        with ingest_module._collector_paused():
            assert gc.isenabled()
    finally:
        release.set()
        other.join()
    if threading.active_count() == 1:  # alone (the CLI): paused, then back on
        with ingest_module._collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled()


@pytest.mark.parametrize("count", [2**31, 2**70])
def test_an_implausible_upvote_count_is_dropped_not_fatal(
    factory, tmp_path: Path, count: int
) -> None:
    items = [
        {"title": "Huge", "summary": "Votes.", "paper": {"id": "2601.00001", "upvotes": count}},
        {"title": "Fine", "summary": "Votes.", "paper": {"id": "2601.00002", "upvotes": 7}},
    ]
    capture = tmp_path / "votes.json"
    capture.write_text(json.dumps(items), encoding="utf-8")
    ingest(factory, capture)
    with factory() as session:
        votes = dict(session.execute(text("SELECT arxiv_id, upvotes FROM papers")).all())
    assert votes == {"2601.00001": None, "2601.00002": 7}


def test_a_paper_given_twice_in_one_input_is_observed_once(factory, tmp_path: Path) -> None:
    # A feed repeating a paper with two counts: no gain between the two at one instant.
    first, second = hf_copies()
    first["paper"]["upvotes"], second["paper"]["upvotes"] = 10, 99
    twice = write_items(tmp_path / "twice.json", [first, second])
    [summary] = ingest(factory, twice)
    assert (summary.parsed, summary.new, summary.skipped) == (2, 1, [])

    def observed() -> list[tuple[int, object]]:
        with factory() as session:
            paper = session.scalars(select(Paper)).one()
            assert paper.upvotes == 99
            return [(o.upvotes, o.observed_at) for o in paper.observations]

    assert observed() == [(99, NOW)]
    # Again, later: 10 then 99 again, and 99 is what was observed: nothing new.
    ingest(factory, twice, now=NOW + timedelta(hours=1))
    assert observed() == [(99, NOW)]
    # 10 then 120: one observation, of 120.
    second["paper"]["upvotes"] = 120
    ingest(
        factory, write_items(tmp_path / "more.json", [first, second]), now=NOW + timedelta(hours=2)
    )
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert paper.upvotes == 120
        assert [(o.upvotes, o.observed_at) for o in paper.observations] == [
            (99, NOW),
            (120, NOW + timedelta(hours=2)),
        ]


def test_a_paper_given_twice_with_other_counts_is_unchanged_when_ingested_again(
    factory, tmp_path: Path
) -> None:
    """The copies are merged once, before storing: the same file again is 0 updated, and
    the database is as it was (no update time moved, no observation added)."""
    first, second = hf_copies()
    first["paper"]["upvotes"], second["paper"]["upvotes"] = 10, 15
    twice = write_items(tmp_path / "twice.json", [first, second])
    [stored] = ingest(factory, twice)
    assert stored.line() == (
        f"{twice}: hf-daily-papers-json, 2 parsed, 1 new, 0 updated, 0 unchanged, "
        "0 skipped, 1 repeated (merged)"
    )
    before = full_dump(factory)
    for hours in (1, 2):
        [again] = ingest(factory, twice, now=NOW + timedelta(hours=hours))
        assert (again.parsed, again.new, again.updated, again.unchanged, again.repeated) == (
            2,
            0,
            0,
            1,
            1,
        )
        assert full_dump(factory) == before


def test_copies_of_a_paper_with_other_contents_are_folded_the_last_winning(
    factory, tmp_path: Path
) -> None:
    """Two copies that disagree: the last one's fields, and what only the first has."""
    first, second = hf_copies()
    second["summary"] = second["paper"]["summary"] = "The second copy's abstract."
    github = first["paper"]["githubRepo"]
    del second["paper"]["githubRepo"]
    first["paper"]["upvotes"], second["paper"]["upvotes"] = 10, 12
    twice = write_items(tmp_path / "twice.json", [first, second])
    [stored] = ingest(factory, twice)
    assert (stored.new, stored.updated, stored.unchanged, stored.repeated) == (1, 0, 0, 1)
    with factory() as session:
        paper = session.scalars(select(Paper)).one()
        assert (paper.abstract, paper.github_url, paper.upvotes) == (
            "The second copy's abstract.",
            github,
            12,
        )
        assert [(o.upvotes, o.observed_at) for o in paper.observations] == [(12, NOW)]
    before = full_dump(factory)
    [again] = ingest(factory, twice, now=NOW + timedelta(hours=1))
    assert (again.new, again.updated, again.unchanged, again.repeated) == (0, 0, 1, 1)
    assert full_dump(factory) == before


def test_a_copy_of_a_paper_that_does_not_parse_is_skipped_and_reported(
    factory, tmp_path: Path
) -> None:
    """Folding parses the copies: a bad one is one skipped line, the good one is stored."""
    good, bad = hf_copies()
    bad["publishedAt"] = bad["paper"]["publishedAt"] = "2026-02-30T00:00:00Z"
    bad["paper"]["upvotes"] = good["paper"]["upvotes"] + 1
    [stored] = ingest(factory, write_items(tmp_path / "bad.json", [good, bad]))
    assert (stored.parsed, stored.new, stored.repeated) == (1, 1, 0)
    assert len(stored.skipped) == 1
    assert "date does not parse: '2026-02-30T00:00:00Z'" in stored.skipped[0]
    assert count(factory, Paper) == 1


def test_a_page_giving_a_paper_twice_is_unchanged_when_ingested_again(
    factory, tmp_path: Path
) -> None:
    """Papers without an arXiv id are one paper by title (a page capture)."""
    capture = page(
        tmp_path / "page.txt",
        "A Paper\n\nIts abstract.\n\n  • 2 authors\n·\nMar 1 3",
        "Another Paper\n\nAnother abstract.\n\n  • 1 author\n·\nMar 1 4",
        "A paper\n\nIts abstract, as the page repeats it.\n\n  • 3 authors\n·\nMar 1 5",
    )
    [stored] = ingest(factory, capture)
    assert (stored.parsed, stored.new, stored.repeated) == (3, 2, 1)
    before = full_dump(factory)
    [again] = ingest(factory, capture, now=NOW + timedelta(hours=1))
    assert (again.new, again.updated, again.unchanged, again.repeated) == (0, 0, 2, 1)
    assert full_dump(factory) == before
    with factory() as session:
        paper = session.scalars(select(Paper).where(Paper.title_key == "a paper")).one()
        assert (paper.abstract, paper.author_count, paper.upvotes) == (
            "Its abstract, as the page repeats it.",
            3,
            5,
        )


def test_counts_of_one_instant_from_two_inputs_are_no_gain(factory, tmp_path: Path) -> None:
    # One `digest ingest a b` stores both inputs' counts at its one `now`, in two
    # transactions; the later count is the count then, and nothing was gained.
    [item] = json.loads(HF_JSON.read_text(encoding="utf-8"))
    item["paper"]["upvotes"] = 10
    a = write_items(tmp_path / "a.json", [item])
    item["paper"]["upvotes"] = 99
    b = write_items(tmp_path / "b.json", [item])
    ingest(factory, a, b)
    later = NOW + timedelta(hours=1)
    with factory() as session:
        [paper_id] = session.scalars(select(Paper.id)).all()
        history = db.upvote_history(session, NOW - timedelta(days=1), later)
    assert history == {paper_id: [(NOW, 99)]}
    assert ranking.upvote_gain(history[paper_id], NOW - timedelta(days=1), later) == 0
