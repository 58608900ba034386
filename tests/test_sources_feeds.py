"""The HF daily_papers JSON and arXiv Atom/RSS parsers, on real captures and shaped fixtures."""

import json
from datetime import date

import pytest

from digest.sources import InputError, parse_input
from digest.sources.records import arxiv_id_from, normalize_title
from tests.conftest import DATA, NOW


def parse(name: str):
    return parse_input((DATA / name).read_bytes(), NOW)


def test_hf_daily_papers_json() -> None:
    result = parse("hf_daily_papers.json")
    assert result.format == "hf-daily-papers-json"
    assert result.skipped == []
    [paper] = result.records
    assert paper.arxiv_id == "2602.23229"
    assert paper.title == "Large Multimodal Models as General In-Context Classifiers"
    assert paper.authors == (
        "Marco Garosi",
        "Matteo Farina",
        "Alessandro Conti",
        "Massimiliano Mancini",
        "Elisa Ricci",
    )
    assert paper.author_count == 5
    assert paper.organization == "Multimedia and Human Understanding Group"
    assert paper.published_on == date(2026, 2, 26)
    assert paper.upvotes == 10
    assert paper.github_url == "https://github.com/marco-garosi/CIRCLE"
    assert paper.project_url == "https://circle-lmm.github.io/"
    assert paper.abstract.startswith("Which multimodal model should we use for classification?")
    assert paper.abstract.endswith("a flexible alternative to specialized models.")


def test_arxiv_api_query_capture() -> None:
    result = parse("arxiv_api_query.xml")
    assert result.format == "arxiv-api-atom"
    assert result.skipped == []
    assert [r.arxiv_id for r in result.records] == [
        "nucl-ex/0408020",
        "1309.4668",
        "1606.02159",
        "1610.08734",
        "2102.00018",
        "0803.1617",
        "1205.6628",
        "nucl-th/9910021",
        "1602.03411",
        "1401.3666",
    ]
    first = result.records[0]
    assert first.title == (
        "Two-photon exchange and elastic scattering of electrons/positrons on the proton. "
        "(Proposal for an experiment at VEPP-3)"
    )
    assert len(first.authors) == 9
    assert first.authors[0] == "J. Arrington"
    assert first.authors[-1] == "H. de Vries"
    assert first.categories == ("nucl-ex", "hep-ph")
    assert first.published_on == date(2004, 8, 18)
    assert first.pdf_url == "https://arxiv.org/pdf/nucl-ex/0408020v1"
    assert first.abstract.startswith("It has been suggested that two-photon exchange")
    assert result.records[1].categories[0] == "physics.acc-ph"


def test_arxiv_api_empty_capture() -> None:
    result = parse("arxiv_api_empty.xml")
    assert (result.format, result.records, result.skipped) == ("arxiv-api-atom", [], [])


def test_arxiv_api_older_link_style_and_old_ids() -> None:
    result = parse("arxiv_api_linkstyle.xml")
    old, new = result.records
    assert old.arxiv_id == "astro-ph/9904306"
    assert old.title == (
        "The Cosmic Microwave Background and the Ionization History of the Universe"
    )
    assert old.pdf_url == "http://arxiv.org/pdf/astro-ph/9904306v1"
    assert (new.arxiv_id, new.categories, new.published_on) == (
        "1706.03762",
        ("cs.CL", "cs.LG"),
        date(2017, 6, 12),
    )


@pytest.mark.parametrize("name", ["arxiv_listing.rss", "arxiv_listing.atom"])
def test_arxiv_listing_feeds(name: str) -> None:
    result = parse(name)
    assert result.format == "arxiv-listing"
    paper = result.records[0]
    assert paper.arxiv_id == "2508.13426"
    assert paper.source == "arxiv_rss"
    assert paper.authors == ("Maria Lopez", "Wei Zhang", "Ahmed Hassan")
    assert paper.abstract == (
        "We route speech frames through a sparse mixture of language-specific experts and "
        "improve translation quality on low-resource pairs while halving inference cost."
    )
    assert paper.categories == ("cs.CL", "cs.SD", "eess.AS")
    assert paper.published_on == date(2025, 8, 20)
    assert all("is a revision of an older paper" in reason for reason in result.skipped)


def test_arxiv_listing_keeps_cross_lists_and_skips_replacements() -> None:
    result = parse("arxiv_listing.rss")
    assert [r.arxiv_id for r in result.records] == ["2508.13426", "2508.13501"]
    assert result.records[1].authors == ("Jonas Berg",)
    assert result.skipped == [
        "record 3 ('An Older Paper, Revised'): announce type 'replace' is a revision of an "
        "older paper",
        "record 4 ('Another Revision, Cross-listed'): announce type 'replace-cross' is a "
        "revision of an older paper",
    ]


def test_weekend_listing_is_empty_not_an_error() -> None:
    result = parse("arxiv_listing_weekend.rss")
    assert (result.format, result.records, result.skipped) == ("arxiv-listing", [], [])


def test_json_records_without_title_or_with_bad_dates_are_skipped() -> None:
    document = (
        b'[{"title": "Kept", "paper": {"id": "2601.00001v2", "upvotes": 3}},'
        b' {"paper": {"id": "2601.00002"}},'
        b' {"title": "Bad date", "paper": {"publishedAt": "yesterday"}},'
        b" 42]"
    )
    result = parse_input(document, NOW)
    assert [r.arxiv_id for r in result.records] == ["2601.00001"]
    assert result.skipped == [
        "record 2: no title",
        "record 3 ('Bad date'): date does not parse: 'yesterday'",
        "record 4: not a JSON object",
    ]


def test_json_authors_of_the_wrong_shape_are_left_out() -> None:
    # `authors` is a list of objects with a string `name`; anything else names nobody.
    document = (
        b'[{"title": "A number", "paper": {"authors": 5}},'
        b' {"title": "A string", "paper": {"authors": "Ann Lee"}},'
        b' {"title": "Mixed", "paper": {"authors": [{"name": " Ann \\n Lee "}, {"name": 3},'
        b' "Bo Chen", {"name": "  "}, {}, {"name": "Bo Chen"}]}}]'
    )
    result = parse_input(document, NOW)
    assert result.skipped == []
    assert [(r.title, r.authors, r.author_count) for r in result.records] == [
        ("A number", (), None),
        ("A string", (), None),
        ("Mixed", ("Ann Lee", "Bo Chen"), 2),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"   \n\n", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
        (b"caf\xe9 latte", "not UTF-8"),
        (b"just some notes about papers", "unknown format"),
        (b'[{"title": "cut', "truncated or invalid JSON"),
        (b'{"papers": []}', "not a list of Hugging Face daily_papers items"),
        (b"<html><body>hello</body></html>", "XML but not a feed"),
        (
            b'<?xml version="1.0"?><rss version="2.0"><channel><title>Blog</title>'
            b"<item><title>Post</title><guid>x</guid></item></channel></rss>",
            "neither an arXiv API response nor an arXiv listing",
        ),
    ],
)
def test_unreadable_inputs_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_input(data, NOW)


def test_truncated_xml_is_refused() -> None:
    data = (DATA / "arxiv_api_query.xml").read_bytes()
    with pytest.raises(InputError, match="malformed or truncated XML"):
        parse_input(data[: len(data) // 2], NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://arxiv.org/abs/nucl-ex/0408020v1", "nucl-ex/0408020"),
        ("https://arxiv.org/pdf/2602.23229v3", "2602.23229"),
        ("oai:arXiv.org:2508.13426v1", "2508.13426"),
        ("arXiv:0704.0001", "0704.0001"),
        ("math.GT/0309136", "math.GT/0309136"),
        ("2602.23229", "2602.23229"),
        ("not an id", None),
        ("https://example.org/abs/2602.23229", None),
    ],
)
def test_arxiv_ids_lose_their_version(value: str, expected: str | None) -> None:
    assert arxiv_id_from(value) == expected


def test_title_normalization() -> None:
    assert normalize_title("UE4-NeRF:Neural  Radiance Field") == "ue4 nerf neural radiance field"
    assert normalize_title("Café <b>Über</b>") == normalize_title("cafe b uber b")


def test_json_links_that_fail_the_url_rule_are_dropped() -> None:
    """A paper's code and project links pass digest.urls: anything else is no link."""
    items = [
        ("https://github.com/org/repo", "https://bücher.example/p", "kept"),
        ("https://github.com@evil.example/org/repo", "javascript:alert(1)", "userinfo, script"),
        ("https://github.com:99999/org/repo", "http://[::1/", "bad port, unclosed IPv6"),
        ("https://github.com/org/repo\r\nBcc: x@y.org", "data:text/html,x", "CR/LF, data:"),
        ("https://github.com/" + "a" * 2048, "https://exa mple.org/", "too long, a space"),
    ]
    document = json.dumps(
        [
            {
                "title": title,
                "paper": {"id": f"2601.0000{n}", "githubRepo": code, "projectPage": site},
            }
            for n, (code, site, title) in enumerate(items, 1)
        ]
    ).encode()
    result = parse_input(document, NOW)
    assert [(r.title, r.github_url, r.project_url) for r in result.records] == [
        ("kept", "https://github.com/org/repo", "https://bücher.example/p"),
        ("userinfo, script", None, None),
        ("bad port, unclosed IPv6", None, None),
        ("CR/LF, data:", None, None),
        ("too long, a space", None, None),
    ]


def test_arxiv_pdf_links_that_fail_the_url_rule_are_passed_over() -> None:
    links = (
        '<link title="pdf" href="https://arxiv.org@evil.example/pdf/2601.00001v1"/>'
        '<link title="pdf" href="javascript:alert(1)"/>'
        '<link title="pdf" href="https://arxiv.org:0/pdf/2601.00001v1"/>'
        '<link title="pdf" href="https://arxiv.org/pdf/2601.00001v1"/>'
    )
    document = (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>https://arxiv.org/api/query</id><title>arXiv Query</title>"
        "<entry><id>http://arxiv.org/abs/2601.00001v1</id><title>Linked</title>"
        f"<published>2026-02-28T00:00:00Z</published>{links}</entry></feed>"
    ).encode()
    [record] = parse_input(document, NOW).records
    assert record.pdf_url == "https://arxiv.org/pdf/2601.00001v1"
