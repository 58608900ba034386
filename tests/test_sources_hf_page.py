"""The Hugging Face Daily Papers page parser, on the five real captures."""

from datetime import date

import pytest

from digest.sources.hf_page import parse_hf_page, resolve_date
from tests.conftest import SEEDS

AS_OF = date(2026, 11, 25)

# file -> (entries, entries with a metadata block); checked by hand: each
# metadata block is 5 non-blank lines, each bare entry 2, after the header.
COUNTS = {
    "000_5ed1fa5957327774.txt": (34, 34),
    "001_4e7a20fc27536b42.txt": (333, 0),
    "002_584096cb3b27ec92.txt": (53, 51),
    "003_3fc13db815416839.txt": (78, 0),
    "004_48a1b423d80b1307.txt": (57, 56),
}


def parse(name: str, as_of: date = AS_OF):
    return parse_hf_page((SEEDS / name).read_text(encoding="utf-8"), as_of)


def by_title(name: str, title: str, as_of: date = AS_OF):
    matches = [r for r in parse(name, as_of).records if r.title == title]
    assert len(matches) == 1, title
    return matches[0]


@pytest.mark.parametrize(("name", "expected"), COUNTS.items())
def test_every_capture_parses_exactly(name: str, expected: tuple[int, int]) -> None:
    result = parse(name)
    assert result.skipped == []
    assert (len(result.records), sum(1 for r in result.records if r.published_on)) == expected
    assert all(r.abstract and r.title and r.source == "hf_page" for r in result.records)


def test_entries_with_author_counts_dates_and_upvotes() -> None:
    first = parse("000_5ed1fa5957327774.txt").records[0]
    assert first.title == "Training Deep Surrogate Models with Large Scale Online Learning"
    assert first.abstract.startswith("The spatiotemporal resolution of Partial Differential")
    assert first.abstract.endswith("improved by 68%, 16% and 7%, respectively.")
    assert (first.author_count, first.published_on, first.upvotes) == (5, date(2023, 6, 28), 0)
    llm2llm = by_title(
        "000_5ed1fa5957327774.txt", "LLM2LLM: Boosting LLMs with Novel Iterative Data Enhancement"
    )
    assert (llm2llm.author_count, llm2llm.published_on, llm2llm.upvotes) == (
        9,
        date(2024, 3, 22),
        2,
    )
    tokenformer = parse("004_48a1b423d80b1307.txt").records[0]
    assert tokenformer.title.startswith("TokenFormer: Rethinking Transformer Scaling")
    assert (tokenformer.author_count, tokenformer.published_on, tokenformer.upvotes) == (
        8,
        date(2024, 10, 30),
        5,
    )


def test_year_less_dates_resolve_against_the_page_date() -> None:
    # Page "Dec 9" resolves to 2025-12-09 (as of 2026-11-25); "Sep 10 4" then to 2025-09-10.
    world = by_title(
        "000_5ed1fa5957327774.txt", "World Modeling with Probabilistic Structure Integration"
    )
    assert (world.author_count, world.published_on, world.upvotes) == (16, date(2025, 9, 10), 4)
    pixels = by_title(
        "000_5ed1fa5957327774.txt",
        "PIXELS: Progressive Image Xemplar-based Editing with Latent Surgery",
    )
    assert pixels.published_on == date(2025, 1, 16)
    # As of 2025-12-01 the page's "Dec 9" is 2024-12-09, so "Sep 10" is 2024-09-10.
    earlier = by_title(
        "000_5ed1fa5957327774.txt",
        "World Modeling with Probabilistic Structure Integration",
        as_of=date(2025, 12, 1),
    )
    assert earlier.published_on == date(2024, 9, 10)


def test_organization_lines_replace_the_author_count() -> None:
    nvfp4 = by_title("002_584096cb3b27ec92.txt", "Pretraining Large Language Models with NVFP4")
    assert (nvfp4.organization, nvfp4.author_count) == ("NVIDIA", None)
    assert (nvfp4.published_on, nvfp4.upvotes) == (date(2025, 9, 29), 2)
    tiny = parse("004_48a1b423d80b1307.txt").records[3]
    assert tiny.title.startswith("Tiny Model, Big Logic: Diversity-Driven Optimization")
    assert (tiny.organization, tiny.published_on, tiny.upvotes) == (
        "WeiboAI",
        date(2025, 11, 8),
        11,
    )


def test_entries_without_metadata_in_a_page_with_metadata() -> None:
    r1 = by_title(
        "002_584096cb3b27ec92.txt",
        "R1-Reward: Training Multimodal Reward Model Through Stable Reinforcement Learning",
    )
    assert (r1.author_count, r1.organization, r1.published_on, r1.upvotes) == (
        None,
        None,
        None,
        None,
    )
    assert r1.abstract


def test_header_glued_to_first_title_and_no_blank_lines() -> None:
    records = parse("001_4e7a20fc27536b42.txt").records
    assert records[0].title == (
        "Prompts as Auto-Optimized Training Hyperparameters: Training Best-in-Class IR "
        "Models from Scratch with 10 Gold Labels"
    )
    assert records[0].abstract.startswith("We develop a method for training small-scale")
    assert records[1].title.startswith("Leveraging Large Language Models for Enhanced NLP")
    assert records[-1].title == "Generating Sequences by Learning to Self-Correct"
    assert all(r.published_on is None and r.upvotes is None for r in records)


def test_header_without_daily_papers_line() -> None:
    records = parse("003_3fc13db815416839.txt").records
    assert records[0].title == (
        "Efficient LLM Training and Serving with Heterogeneous Context Sharding among "
        "Attention Heads"
    )
    assert records[-1].title == (
        "MixtureGrowth: Growing Neural Networks by Recombining Learned Parameters"
    )


def test_a_bad_date_skips_only_that_entry() -> None:
    page = (
        "Get trending papers in your email inbox!\nSubscribe\nDaily Papers\n"
        "byAK and the research community\nDec 9\n"
        "Good One\nAbstract one.\n  • 2 authors\n·\nJan 3 7\n"
        "Bad One\nAbstract two.\n  • 3 authors\n·\nSmarch 45, 2024\n"
        "Good Two\nAbstract three.\nnvidia NVIDIA\n·\nFeb 29, 2024\n"
    )
    result = parse_hf_page(page, AS_OF)
    assert [r.title for r in result.records] == ["Good One", "Good Two"]
    assert result.records[0].published_on == date(2025, 1, 3)
    assert result.records[0].upvotes == 7
    assert result.records[1].published_on == date(2024, 2, 29)
    assert result.skipped == ["record 2 ('Bad One'): date does not parse: 'Smarch 45, 2024'"]


def test_resolve_date_skips_missing_leap_days() -> None:
    assert resolve_date(2, 29, None, date(2026, 3, 1)) == date(2024, 2, 29)
    assert resolve_date(12, 9, None, date(2026, 12, 9)) == date(2026, 12, 9)
    assert resolve_date(12, 10, None, date(2026, 12, 9)) == date(2025, 12, 10)
