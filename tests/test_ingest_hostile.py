"""Hostile inputs found by the QA audit: each ends as one line or a skipped record, never a
traceback, a hang or a whole input lost on one backend and not the other.

Runs on both backends (tests/conftest.py): NUL, overlong keys and huge counts are what
PostgreSQL refuses and SQLite stores.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digest.fetch import HttpFetcher
from digest.ingest import ingest_inputs
from digest.models import Paper
from digest.sources import parse_input
from digest.sources.hf_page import parse_hf_page
from tests.conftest import NOW

LIMIT = 1_000_000
PAGE_HEADER = (
    "Get trending papers in your email inbox!\n\nSubscribe\n\nDaily Papers\n\n"
    "byAK and the research community\n\n"
)


def ingest(factory, *names, now=NOW, fetcher=None):
    return ingest_inputs(
        factory, [str(n) for n in names], now=now, max_bytes=LIMIT, fetcher=fetcher
    )


def papers(factory: sessionmaker[Session]) -> list[tuple]:
    with factory() as session:
        rows = session.execute(
            select(Paper.arxiv_id, Paper.title, Paper.authors, Paper.published_on).order_by(
                Paper.title
            )
        )
        return [tuple(row) for row in rows]


def atom(*entries: str) -> str:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>https://arxiv.org/api/query</id><title>arXiv Query</title>"
        + "".join(entries)
        + "</feed>"
    )


def entry(number: str, title: str, published: str = "2026-03-01T00:00:00Z") -> str:
    return (
        f"<entry><id>http://arxiv.org/abs/{number}v1</id><title>{title}</title>"
        f"<summary>An abstract.</summary><published>{published}</published>"
        "<author><name>A. Author</name></author></entry>"
    )


def hf_item(number: str, title: str, **paper: object) -> dict:
    return {"title": title, "paper": {"id": number, "authors": [{"name": "A. Author"}], **paper}}


def write_json(path: Path, items: list) -> Path:
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


# --- 1, 11, 17: one normaliser for every text field --------------------------------------


def test_surrogates_nul_and_controls_are_cleaned_from_every_source(factory, tmp_path: Path) -> None:
    hf = write_json(
        tmp_path / "a.json",
        [
            {"title": "sur \ud800 rogate", "paper": {"id": "2602.00060"}},
            {
                "title": "bell\x07 esc\x1b[31m nul\x00 rlo\u202eevil",
                "paper": {"id": "2602.00061", "authors": [{"name": "Ada\x00 \ud83d Lovelace"}]},
            },
        ],
    )
    feed = tmp_path / "b.xml"
    feed.write_text(atom(entry("2603.00012", "sur &#xD800; ent &#55297;")), encoding="utf-8")
    summaries = ingest(factory, hf, feed)
    assert [s.line() for s in summaries] == [
        f"{hf}: hf-daily-papers-json, 2 parsed, 2 new, 0 updated, 0 unchanged, 0 skipped",
        f"{feed}: arxiv-api-atom, 1 parsed, 1 new, 0 updated, 0 unchanged, 0 skipped",
    ]
    assert papers(factory) == [
        ("2602.00061", "bell esc [31m nul rloevil", "Ada Lovelace", None),
        ("2603.00012", "sur ent", "A. Author", date(2026, 3, 1)),
        ("2602.00060", "sur rogate", "", None),
    ]


def test_a_good_feed_then_one_with_a_surrogate_both_load(cli, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_good.xml").write_text(atom(entry("2603.00011", "Good")), encoding="utf-8")
    (folder / "b_bad.xml").write_text(atom(entry("2603.00012", "sur &#xD800; ent")), "utf-8")
    result = cli("ingest", str(folder))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{folder}/a_good.xml: arxiv-api-atom, 1 parsed, 1 new, 0 updated, 0 unchanged, 0 skipped",
        f"{folder}/b_bad.xml: arxiv-api-atom, 1 parsed, 1 new, 0 updated, 0 unchanged, 0 skipped",
    ]


def test_an_exception_inside_the_feed_parser_is_that_inputs_error(
    factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import feedparser

    def broken(data: bytes) -> object:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(feedparser, "parse", broken)
    feed = tmp_path / "a.xml"
    feed.write_text(atom(entry("2603.00011", "Good")), encoding="utf-8")
    hf = write_json(tmp_path / "b.json", [hf_item("2602.00060", "Still loads")])
    first, second = ingest(factory, feed, hf)
    assert first.line() == (
        f"{feed}: error: feed parser failed: UnicodeEncodeError: 'utf-8' codec can't encode "
        "character '\\ud800' in position 0: surrogates not allowed"
    )
    assert second.ok and second.new == 1


# --- 2, 18: implausible counts are no count -----------------------------------------------


def test_implausible_author_and_upvote_counts_on_a_page_are_no_count(
    factory, tmp_path: Path
) -> None:
    capture = tmp_path / "page.txt"
    capture.write_text(
        PAGE_HEADER
        + "Mar 6\n\n"
        + "\n\n".join(
            [
                "Many authors\n\nAbstract one.\n\n• 99999999999999999999999 authors\n·\nMar 5 3",
                f"Digits\n\nAbstract two.\n\n• {'9' * 5000} authors\n·\nMar 5 4",
                "Too many\n\nAbstract three.\n\n• 100001 authors\n·\nMar 5 5",
                "Big upvotes\n\nAbstract four.\n\n• 7 authors\n·\nJun 28, 2023 999999999999",
                "No count\n\nAbstract five.\n\n• 3 authors\n·\nMar 4",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    (summary,) = ingest(factory, capture)
    assert summary.line() == (
        f"{capture}: hf-page, 5 parsed, 5 new, 0 updated, 0 unchanged, 0 skipped"
    )
    with factory() as session:
        rows = session.execute(
            select(Paper.title, Paper.author_count, Paper.upvotes).order_by(Paper.title)
        )
        assert [tuple(row) for row in rows] == [
            ("Big upvotes", 7, None),
            ("Digits", None, 4),
            ("Many authors", None, 3),
            ("No count", 3, 0),
            ("Too many", None, 5),
        ]


# --- 13: a bad page date never turns the header into papers -------------------------------


def test_a_bad_page_date_is_reported_and_the_header_still_dropped() -> None:
    text = (
        "Get trending papers in your email inbox!\nDaily Papers\n"
        "byAK and the research community\nFeb 31\nAfter bad page date\n\n"
        "An abstract about diffusion models.\n\n  • 5 authors\n·\nJun 28, 2023 3\n"
    )
    result = parse_hf_page(text, date(2026, 11, 25))
    assert [(r.title, r.author_count, r.published_on, r.upvotes) for r in result.records] == [
        ("After bad page date", 5, date(2023, 6, 28), 3)
    ]
    assert result.skipped == ["page date: date does not parse: 'Feb 31'"]


# --- 14: dates read strictly and bounded, alike in every parser ---------------------------


def test_bad_and_implausible_dates_skip_the_record_in_every_parser(factory, tmp_path: Path) -> None:
    feed = tmp_path / "a.xml"
    feed.write_text(
        atom(
            entry("2603.00001", "Feb 30", "2026-02-30T00:00:00Z"),
            entry("2603.00002", "Year 99999", "99999-01-01T00:00:00Z"),
            entry("2603.00003", "Tomorrow is fine", "2026-11-26T00:00:00Z"),
            entry("2603.00004", "Next month", "2026-12-25T00:00:00Z"),
            entry("2603.00005", "Offset", "2026-03-01T22:00:00-04:00"),
        ),
        encoding="utf-8",
    )
    hf = write_json(
        tmp_path / "b.json",
        [
            hf_item("2602.00001", "Year one", publishedAt="0001-01-01T00:00:00Z"),
            hf_item("2602.00002", "Year 9999", publishedAt="9999-12-31T00:00:00Z"),
            hf_item("2602.00003", "Feb 30 too", publishedAt="2026-02-30T00:00:00Z"),
            hf_item("2602.00004", "Good one", publishedAt="2026-03-01T10:00:00.000Z"),
        ],
    )
    capture = tmp_path / "c.txt"
    capture.write_text(
        PAGE_HEADER
        + "Mar 6\n\nOld\n\nAbstract.\n\n• 2 authors\n·\nMar 22, 1989 2\n\n"
        + "Fine\n\nAbstract.\n\n• 2 authors\n·\nMar 22, 2024 2\n",
        encoding="utf-8",
    )
    atom_summary, hf_summary, page_summary = ingest(factory, feed, hf, capture)
    assert (atom_summary.new, atom_summary.skipped) == (
        2,
        [
            "record 1 ('Feb 30'): date does not parse: '2026-02-30T00:00:00Z'",
            "record 2 ('Year 99999'): date does not parse: '99999-01-01T00:00:00Z'",
            "record 4 ('Next month'): date out of range: 2026-12-25 "
            "(before 1990-01-01 or more than 3 days after 2026-11-25)",
        ],
    )
    assert (hf_summary.new, hf_summary.skipped) == (
        1,
        [
            "record 1 ('Year one'): date out of range: 0001-01-01 "
            "(before 1990-01-01 or more than 3 days after 2026-11-25)",
            "record 2 ('Year 9999'): date out of range: 9999-12-31 "
            "(before 1990-01-01 or more than 3 days after 2026-11-25)",
            "record 3 ('Feb 30 too'): date does not parse: '2026-02-30T00:00:00Z'",
        ],
    )
    assert (page_summary.new, page_summary.skipped) == (
        1,
        [
            "record 1 ('Old'): date out of range: 1989-03-22 "
            "(before 1990-01-01 or more than 3 days after 2026-03-06): 'Mar 22, 1989 2'"
        ],
    )
    assert {title: day for _, title, _, day in papers(factory)} == {
        "Tomorrow is fine": date(2026, 11, 26),
        "Offset": date(2026, 3, 2),
        "Good one": date(2026, 3, 1),
        "Fine": date(2024, 3, 22),
    }


# --- 11: a title-only record with a very long title fits its key --------------------------


def test_long_titles_without_an_arxiv_id_get_bounded_distinct_keys(factory, tmp_path: Path) -> None:
    long_a = "A" + " word" * 199 + " alpha"
    long_b = "A" + " word" * 199 + " beta"
    hf = write_json(tmp_path / "a.json", [{"title": long_a}, {"title": long_b}])
    (first,) = ingest(factory, hf)
    assert (first.new, first.error) == (2, None)
    (again,) = ingest(factory, hf)
    assert (again.new, again.unchanged) == (0, 2)
    with factory() as session:
        keys = session.scalars(select(Paper.key).order_by(Paper.title)).all()
        titles = session.scalars(select(Paper.title).order_by(Paper.title)).all()
    assert titles == [long_a, long_b]
    assert [len(key) for key in keys] == [486, 486]
    assert keys[0][:-17] == keys[1][:-17] and keys[0] != keys[1]
    assert keys[0].startswith("title:a word word")


# --- 7, 21: URLs that do not parse, and one-line errors -----------------------------------


def test_a_url_that_does_not_parse_is_its_own_error_and_the_others_load(
    factory, tmp_path: Path
) -> None:
    hf = write_json(tmp_path / "x.json", [hf_item("2602.00060", "Loads")])
    slept: list[float] = []
    fetcher = HttpFetcher(retries=3, sleep=slept.append)
    bad = ("http://[::1", "http://", "http://h:abc/", "http://h:99999/")
    summaries = ingest(factory, *bad, hf, fetcher=fetcher)
    assert [s.line() for s in summaries] == [
        "http://[::1: error: not a valid URL",
        "http://: error: the URL has no host",
        "http://h:abc/: error: not a valid URL",
        "http://h:99999/: error: not a valid URL",
        f"{hf}: hf-daily-papers-json, 1 parsed, 1 new, 0 updated, 0 unchanged, 0 skipped",
    ]
    assert slept == []  # a URL that cannot be valid is not retried


def test_error_lines_stay_one_line(factory, tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_bytes(b'[{"title": "a\x01b"}]')
    unterminated = tmp_path / "open.json"
    unterminated.write_bytes(b'[{"title": "ab')
    summaries = ingest(factory, bad_json, unterminated, "no\r\nsuch.xml")
    assert [s.line() for s in summaries] == [
        f"{bad_json}: error: truncated or invalid JSON: Invalid control character "
        "at line 1 column 14",
        f"{unterminated}: error: truncated or invalid JSON: Unterminated string starting "
        "at line 1 column 12",
        "'no\\r\\nsuch.xml': error: no such file",
    ]


# --- 9, 19: what is not a file ----------------------------------------------------------


def test_fifos_devices_and_empty_names_are_refused(factory, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    hf = write_json(tmp_path / "x.json", [hf_item("2602.00060", "Loads")])
    summaries = ingest(factory, fifo, "/dev/zero", "", hf)
    assert [s.line() for s in summaries] == [
        f"{fifo}: error: is a named pipe (FIFO), not a regular file",
        "/dev/zero: error: is a device, not a regular file",
        "'': error: empty file name",
        f"{hf}: hf-daily-papers-json, 1 parsed, 1 new, 0 updated, 0 unchanged, 0 skipped",
    ]


def test_an_empty_name_on_the_command_line_ingests_nothing(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "x.json", [hf_item("2602.00060", "Would load")])
    result = cli("ingest", "")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "'': error: empty file name",
        "Error: 1 of 1 inputs failed",
    ]


# --- 16: --as-of is bounded --------------------------------------------------------------


@pytest.mark.parametrize("as_of", ["9999-12-31T23:59:59", "1989-12-31"])
def test_ingest_as_of_out_of_bounds_is_a_usage_error(cli, tmp_path: Path, as_of: str) -> None:
    hf = write_json(tmp_path / "x.json", [hf_item("2602.00060", "Not loaded")])
    result = cli("ingest", "--as-of", as_of, str(hf))
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: Invalid value for '--as-of': must be between 1990-01-01 and now"
    )
    assert "Traceback" not in result.output
    ok = cli("papers")
    assert "Not loaded" not in ok.output


# --- 22: byte order marks, and DTDs refused by name ---------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_feeds_with_a_byte_order_mark_load(factory, tmp_path: Path, encoding: str) -> None:
    feed = tmp_path / "bom.xml"
    text = atom(entry("2603.00011", "With a BOM"))
    feed.write_bytes(text.replace("UTF-8", encoding.upper()[:6]).encode(encoding))
    (summary,) = ingest(factory, feed)
    assert (summary.format, summary.new, summary.error) == ("arxiv-api-atom", 1, None)
    assert papers(factory) == [("2603.00011", "With a BOM", "A. Author", date(2026, 3, 1))]


def test_json_with_a_utf16_byte_order_mark_loads() -> None:
    data = json.dumps([hf_item("2602.00060", "Sixteen")]).encode("utf-16")
    result = parse_input(data, NOW)
    assert [r.title for r in result.records] == ["Sixteen"]


@pytest.mark.parametrize(
    "declaration",
    [
        '<!DOCTYPE f [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>',
        # After a comment longer than any head a parser might look at first.
        "<!--" + "x" * 70_000 + '-->\n<!DOCTYPE f [<!ENTITY xxe "expanded">]>',
    ],
    ids=["external", "billion laughs", "after 70 KB"],
)
def test_xml_with_entities_is_refused_by_name(factory, tmp_path: Path, declaration: str) -> None:
    feed = tmp_path / "dtd.xml"
    text = atom(entry("2603.00011", "&xxe;"))
    feed.write_text(text.replace("?>\n", "?>\n" + declaration + "\n", 1), encoding="utf-8")
    (summary,) = ingest(factory, feed)
    assert summary.line() == f"{feed}: error: XML with a DTD or entity declarations is not allowed"
    assert papers(factory) == []


def test_the_plausible_dates_end_three_days_after_the_ingest() -> None:
    from datetime import date

    from digest.sources.records import publication_date

    today = date(2026, 11, 25)
    assert publication_date("2026-11-28T23:00:00Z", today) == date(2026, 11, 28)
    assert publication_date("1990-01-01", today) == date(1990, 1, 1)
    # An offset moves the day to UTC's: 23:30 at -01:00 is the next day.
    assert publication_date("2026-11-27T23:30:00-01:00", today) == date(2026, 11, 28)
    assert publication_date("Wed, 25 Nov 2026 10:00:00 +0000", today) == today
    # RFC 2822 without a time, as feedparser reads it.
    assert publication_date("Wed, 20 Aug 2025", today) == date(2025, 8, 20)
    assert publication_date(" 2 Jan 2026 ", today) == date(2026, 1, 2)
    for bad in (
        "2026-11-29T00:00:00Z",
        "1989-12-31",
        "2026-02-30",
        "",
        "soon",
        "Mon, 30 Feb 2026",
        "29 Nov 2026",
        "20 Aug 2025 junk",
        "20 Foo 2025",
    ):
        with pytest.raises(ValueError):
            publication_date(bad, today)
