"""Relevance and ranking end to end: acronyms, expansions, like:ID, the cutoff, upvotes,
trending for first digests and previews, time travel."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from digest import db, query_plan, relevance
from digest.config import DigestSettings
from digest.ingest import ingest_inputs
from digest.models import Acronym, Delivery, Paper
from digest.plan import plan_deliveries
from digest.query import parse_query
from digest.select import SelectionRun, digest_content
from digest.subscribers import subscribe, transient_subscriber
from digest.text import STOP_WORDS, Phrase, acronym_term
from tests.conftest import NOW, SEEDS

SETTINGS = DigestSettings()
FILLER = (
    "We report experiments on standard benchmarks, compare with strong baselines, analyse "
    "the results in detail and release everything for others to build on."
)


def ingest(factory: sessionmaker[Session], folder: Path, now: datetime, papers: list[dict]) -> None:
    """papers: dicts with id, title, summary and optional upvotes (HF daily_papers JSON)."""
    items = [
        {
            "title": p["title"],
            "summary": p["summary"],
            "paper": {
                "id": p["id"],
                "upvotes": p.get("upvotes", 0),
                "publishedAt": (now - timedelta(days=1)).isoformat(),
                "authors": [{"name": "A. Author"}],
            },
        }
        for p in papers
    ]
    path = folder / f"capture-{now:%Y%m%d%H%M%S}-{len(list(folder.iterdir()))}.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    [summary] = ingest_inputs(factory, [str(path)], now=now, max_bytes=10**7)
    assert summary.ok, summary.error


def ingest_rows(
    factory: sessionmaker[Session], folder: Path, papers: list[tuple[str, str, str]]
) -> None:
    """Papers as (id, title, first sentence of the abstract), ingested as of NOW."""
    rows = [{"id": i, "title": t, "summary": f"{first} {FILLER}"} for i, t, first in papers]
    ingest(factory, folder, NOW, rows)


def titles(session: Session, query: str, *, stored: bool = False) -> list[str]:
    corpus = relevance.Corpus(session)
    plan = query_plan.plan_query(session, parse_query(query, stored=stored), corpus)
    found = relevance.rank(session, plan, corpus)
    papers = db.papers_by_id(session, [m.paper_id for m in found])
    return [papers[m.paper_id].title for m in found]


def test_acronyms_are_mined_at_ingest_and_expand_queries_both_ways(factory, tmp_path) -> None:
    ingest(
        factory,
        tmp_path,
        NOW,
        [
            {
                "id": "2601.00001",
                "title": "Sparse Layers at Scale",
                "summary": "A Mixture-of-Experts (MoE) layer routes tokens. " + FILLER,
            },
            {
                "id": "2601.00002",
                "title": "Routing Tokens",
                "summary": "Our MoE model routes tokens to experts. " + FILLER,
            },
            {
                "id": "2601.00003",
                "title": "Experts Everywhere",
                "summary": "A mixture of experts for vision. " + FILLER,
            },
            {
                "id": "2601.00004",
                "title": "CoDE: Deepfake Detection",
                "summary": "Contrastive Deepfake Embeddings (CoDE) detect fakes. " + FILLER,
            },
            {
                "id": "2601.00005",
                "title": "Writing Programs",
                "summary": "Language models that write code. " + FILLER,
            },
        ],
    )
    with factory() as session:
        rows = session.execute(text_acronyms()).all()
        assert rows == [
            ("qqcode", "CoDE", "contrastive deepfake embeddings"),
            ("qqmoe", "MoE", "mixture of experts"),
        ]
        everything_moe = {"Sparse Layers at Scale", "Routing Tokens", "Experts Everywhere"}
        assert set(titles(session, "moe")) == everything_moe  # acronym -> expansion
        assert set(titles(session, "MoE")) == everything_moe
        assert set(titles(session, "mixture of experts")) == everything_moe  # and back
        assert titles(session, "code") == ["Writing Programs"]  # not CoDE
        assert titles(session, "CoDE") == ["CoDE: Deepfake Detection"]
        corpus = relevance.Corpus(session)
        plan = query_plan.plan_query(session, parse_query("moe"), corpus)
        assert plan.expansions == ("moe → mixture of experts",)


def text_acronyms():  # type: ignore[no-untyped-def]
    from digest.models import Acronym

    return select(Acronym.term, Acronym.acronym, Acronym.expansion).order_by(Acronym.term)


def test_phrase_beats_proximity_beats_anywhere_and_title_beats_abstract(factory, tmp_path) -> None:
    ingest(
        factory,
        tmp_path,
        NOW,
        [
            {
                "id": "2601.00011",
                "title": "A Study",
                "summary": "We apply video models to generation of captions. " + FILLER,
            },
            {
                "id": "2601.00012",
                "title": "Another Study",
                "summary": "Video generation with diffusion. " + FILLER,
            },
            {
                "id": "2601.00013",
                "title": "Video Generation at Scale",
                "summary": "Diffusion for clips. " + FILLER,
            },
            {
                "id": "2601.00014",
                "title": "A Third Study",
                "summary": "Generation of text. " + FILLER + " Some video too.",
            },
        ],
    )
    with factory() as session:
        assert titles(session, "video generation") == [
            "Video Generation at Scale",  # the phrase, in the title
            "Another Study",  # the phrase, in the abstract
            "A Study",  # the words within ten words of each other
            "A Third Study",  # the words far apart
        ]


def test_like_finds_papers_on_the_source_papers_subject(factory, tmp_path) -> None:
    ingest_inputs(factory, [str(SEEDS)], now=NOW, max_bytes=10**8)
    with factory() as session:
        source = session.scalars(
            select(Paper).where(Paper.title.startswith("MegaBlocks: Efficient Sparse Training"))
        ).one()
        corpus = relevance.Corpus(session)
        plan = query_plan.plan_query(session, parse_query(f"like:{source.id}"), corpus)
        assert "expert" in plan.like and "qqmoe" in plan.like
        # What it expanded to, on one line, in the paper's own words: the acronym in its
        # capitals, a word its title capitalises in lower case, in the terms' order.
        [expanded] = plan.expansions
        assert expanded.startswith(f"like:{source.id} → ")
        shown = expanded.split(" → ")[1].split(", ")
        assert len(shown) == len(plan.like) and "MoE" in shown and "experts" in shown
        assert all(word == word.lower() or not word[1:].islower() for word in shown)
        found = relevance.rank(session, plan, corpus)[:5]
        papers = db.papers_by_id(session, [m.paper_id for m in found])
        assert source.id not in papers
        # Every one of the five closest papers is about mixtures of experts.
        assert all(
            "expert" in (papers[m.paper_id].title + papers[m.paper_id].abstract).lower()
            for m in found
        )
        # It composes with other operators: the same, without the ones saying "inference".
        narrowed = query_plan.plan_query(
            session, parse_query(f"like:{source.id} -inference"), corpus
        )
        kept = db.papers_by_id(
            session, [m.paper_id for m in relevance.rank(session, narrowed, corpus)]
        )
        assert kept and all("inferenc" not in p.abstract.lower() for p in kept.values())
        missing = query_plan.plan_query(session, parse_query("like:999999"), corpus)
        assert missing.empty and missing.missing == ("999999",)


def test_like_never_picks_a_piece_of_a_contraction(factory, tmp_path) -> None:
    """ "Don't" is indexed as "don" and "t": rare, so distinctive by tf-idf, yet no topic.
    Written in capitals in a title ("DON'T"), its piece is indexed as an acronym: no
    more a like:ID term than the word."""
    ingest_rows(
        factory,
        tmp_path,
        [
            ("2601.00001", "Don't Stop Pretraining Your Speech Encoder", "Speech pretraining."),
            ("2601.00002", "Don't Forget the Speech Decoder", "A speech decoder."),
            ("2601.00003", "Reasoning Models DON'T Always Say Chess", "Chess reasoning."),
            ("2601.00004", "Graph Models DON'T Always Play Chess", "Chess graphs."),
            *[(f"2601.001{i:02d}", f"Filler Study {i}", f"Topic number {i}.") for i in range(8)],
        ],
    )
    with factory() as session:
        corpus = relevance.Corpus(session)
        picked = {
            reference: query_plan.plan_query(session, parse_query(f"like:{reference}"), corpus).like
            for reference in ("2601.00001", "2601.00003")
        }
    assert "speech" in picked["2601.00001"] and "chess" in picked["2601.00003"]
    assert [sorted({"don", "qqdon", "t"}.intersection(like)) for like in picked.values()] == [
        [],
        [],
    ]


def test_weak_matches_fall_below_the_cutoff(factory, tmp_path) -> None:
    strong = [
        {
            "id": f"2601.001{i:02d}",
            "title": f"Robot Manipulation {i}",
            "summary": "A robot grasps objects; the robot policy learns manipulation. " + FILLER,
        }
        for i in range(4)
    ]
    weak = {
        "id": "2601.00199",
        "title": "Scheduling Compilers",
        "summary": FILLER + " " + FILLER + " It could one day help a robot.",
    }
    ingest(factory, tmp_path, NOW - timedelta(hours=1), [*strong, weak])
    subscriber = transient_subscriber(["robot"], "UTC", 7)
    with factory() as session:
        found = {
            m.paper_id: m.relevance
            for m in SelectionRun(session, NOW, SETTINGS).matches("robot").values()
        }
        assert len(found) == 4  # the weak match is cut
        everything = replace(SETTINGS, min_relevance=0.0)
        assert len(SelectionRun(session, NOW, everything).matches("robot")) == 5
        _, _, content = digest_content(session, subscriber, None, NOW, SETTINGS)
        assert len(content.items) == 4
        assert titles(session, "robot")[-1] == "Scheduling Compilers"  # match lists it last


def test_a_topic_named_only_in_passing_falls_behind_and_below_the_cutoff(factory, tmp_path) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            ("2601.00021", "Compression Toolkit", "Methods such as pruning and quantization help."),
            ("2601.00022", "Another Toolkit", "We shrink models with quantization of weights."),
            ("2601.00023", "Serving Toolkit", "Serving at scale. Future work: quantization."),
            ("2601.00024", "Quantization at Scale", "Tools such as quantization shrink models."),
        ],
    )
    with factory() as session:
        assert titles(session, "quantization") == [
            "Quantization at Scale",  # its title names it: a list in the abstract is no matter
            "Another Toolkit",
            "Serving Toolkit",  # only as future work
            "Compression Toolkit",  # only as an example in a list
        ]
        kept = SelectionRun(session, NOW, SETTINGS).matches("quantization")
        papers = db.papers_by_id(session, list(kept))
        assert sorted(p.title for p in papers.values()) == [
            "Another Toolkit",
            "Quantization at Scale",
        ]


def test_a_title_naming_the_query_raises_a_paper_without_changing_what_is_cut(
    factory, tmp_path
) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            ("2601.00031", "Segmentation Made Simple", "A simple recipe for masks of images."),
            (
                "2601.00032",
                "Masks for Images",
                "Segmentation of images, segmentation of videos and segmentation of scenes.",
            ),
            ("2601.00033", "Video Masks", "Video segmentation with masks of objects."),
            ("2601.00034", "Scheduling Compilers", "Compilers schedule loops; segmentation helps."),
        ],
    )
    subscriber = transient_subscriber(["segmentation"], "UTC", 7)
    with factory() as session:
        corpus = relevance.Corpus(session)
        plan = query_plan.plan_query(session, parse_query("segmentation"), corpus)
        found = relevance.rank(session, plan, corpus)
        papers = db.papers_by_id(session, [m.paper_id for m in found])
        by_title = {papers[m.paper_id].title: m for m in found}
        simple, video = by_title["Segmentation Made Simple"], by_title["Video Masks"]
        assert simple.titled and not video.titled
        assert simple.relevance < video.relevance < simple.relevance * relevance.TITLE_BONUS
        assert [papers[m.paper_id].title for m in found] == [
            "Masks for Images",
            "Segmentation Made Simple",  # its title names the query: weight x1.5
            "Video Masks",
            "Scheduling Compilers",
        ]
        # The cutoff compares relevance: the same three papers are kept, in that order.
        assert by_title["Scheduling Compilers"].relevance < SETTINGS.min_relevance
        _, _, content = digest_content(session, subscriber, None, NOW, SETTINGS)
        shown = db.papers_by_id(session, [item.paper_id for item in content.items])
        assert [shown[item.paper_id].title for item in content.items] == [
            "Masks for Images",
            "Segmentation Made Simple",
            "Video Masks",
        ]


def test_star_is_the_period_by_upvotes_and_fills_the_digest(factory, tmp_path) -> None:
    votes = [3, 40, 0, 12, 7, 25, 1, 18, 9, 30, 5, 2, 14, 22]
    ingest(
        factory,
        tmp_path,
        NOW - timedelta(hours=1),
        [
            {"id": f"2601.002{i:02d}", "title": f"Paper {i}", "summary": FILLER, "upvotes": v}
            for i, v in enumerate(votes)
        ],
    )
    subscriber = transient_subscriber(["*"], "UTC", 7)
    with factory() as session:
        _, _, content = digest_content(session, subscriber, None, NOW, SETTINGS)
        shown = [item.upvotes for item in content.items]
    # Not capped at max_per_topic (10): all 14, the most upvoted first.
    assert shown == sorted(votes, reverse=True)


def test_a_paper_gaining_90_upvotes_trends_in_a_first_digest_and_a_preview(
    factory, tmp_path
) -> None:
    old = {
        "id": "2601.00300",
        "title": "Diffusion Model 0",
        "summary": "Diffusion models, diffusion everywhere. " + FILLER,
    }
    ingest(factory, tmp_path, NOW - timedelta(days=10), [{**old, "upvotes": 10}])
    fresh = [
        {
            "id": f"2601.003{i:02d}",
            "title": f"Diffusion Model {i}",
            "summary": "Diffusion models, diffusion everywhere. " + FILLER,
        }
        for i in range(1, 13)
    ]
    ingest(factory, tmp_path, NOW - timedelta(hours=2), [*fresh, {**old, "upvotes": 100}])
    with db.transaction(factory) as session:
        subscribe(session, "new@example.org", ["diffusion"], now=NOW - timedelta(minutes=5))
    with factory() as session:
        subscriber = db.find_subscriber(session, "new@example.org")
        first = SelectionRun(session, NOW, SETTINGS).select(subscriber, NOW.date())
        papers = db.papers_by_id(session, [i.paper_id for i in first.items])
        top = first.items[0]
        # Not NEW #10: as relevant as the rest, it trends at the top of the first digest.
        assert (papers[top.paper_id].arxiv_id, top.kind, top.upvote_gain, top.upvotes) == (
            "2601.00300",
            "trending",
            90,
            100,
        )
        preview = transient_subscriber(["diffusion"], "UTC", 7)
        _, _, content = digest_content(session, preview, None, NOW, SETTINGS)
        assert (content.items[0].kind, content.items[0].upvote_gain) == ("trending", 90)
        # 13 matched, 10 shown: the email says so.
        assert content.more == {"diffusion": 3}


def test_a_past_dates_digest_sees_only_what_was_known_at_its_send_time(factory, tmp_path) -> None:
    day1 = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    paper = {"id": "2603.00400", "title": "Speech Models", "summary": "Speech. " + FILLER}
    ingest(factory, tmp_path, day1, [{**paper, "upvotes": 5}])
    with db.transaction(factory) as session:
        subscribe(session, "ada@example.org", ["speech"], now=day1 - timedelta(days=1), hour=7)
    later = {"id": "2603.00401", "title": "Speech Tokens", "summary": "Speech. " + FILLER}
    ingest(factory, tmp_path, day1 + timedelta(days=1), [{**paper, "upvotes": 95}, later])
    now = day1 + timedelta(days=1, hours=5)  # day 2, 10:00 UTC
    with db.transaction(factory) as session:
        subscriber = db.find_subscriber(session, "ada@example.org")
        # The preview of day 1 and the (late) send of day 1 agree: 5 upvotes, no day-2 paper.
        _, as_of, content = digest_content(session, subscriber, date(2026, 3, 2), now, SETTINGS)
        assert as_of == datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
        assert [(i.upvotes, i.upvote_gain) for i in content.items] == [(5, 0)]
        plan_deliveries(
            session, [(subscriber, date(2026, 3, 2))], now=now, settings=SETTINGS, at_send_time=True
        )
        delivery = session.scalars(select(Delivery)).one()
        assert delivery.selected_at == as_of
        assert delivery.digest is not None
        assert [(i.upvotes, i.upvote_gain) for i in delivery.digest.items] == [(5, 0)]
        # Day 2's digest then has the day-2 paper, and the first one's 90 new upvotes are
        # not shown again (it was sent on day 1).
        delivery.status = "sent"
        plan_deliveries(
            session, [(subscriber, date(2026, 3, 3))], now=now, settings=SETTINGS, at_send_time=True
        )
        day2 = db.find_delivery(session, subscriber.id, date(2026, 3, 3))
        assert day2 is not None and day2.digest is not None
        shown = db.papers_by_id(session, [i.paper_id for i in day2.digest.items])
        assert [p.arxiv_id for p in shown.values()] == ["2603.00401"]


@freeze_time("2026-11-25 08:00:00")
@pytest.mark.parametrize("query", ["robot", "video generation", "RAG"])
def test_match_and_preview_show_the_same_papers(cli, seeds, query) -> None:
    cli("ingest", str(seeds))
    listed = cli("match", query, "--limit", "10").output.splitlines()
    preview = cli("preview", "--topic", query, "--format", "text").output.splitlines()
    text = Path(preview[-1]).read_text(encoding="utf-8")
    header = next(i for i, line in enumerate(listed) if line.startswith("id "))
    rows = [
        line for line in listed[header + 1 :] if float(line.split()[1]) >= SETTINGS.min_relevance
    ]
    # Each paper match lists above the cutoff is in the preview, with its matched words.
    assert rows
    for row in rows[:10]:
        assert row.split("  ")[-1].rstrip(".")[:40] in text
    assert "Matched “" in text


def test_a_prefix_matches_words_whose_stems_are_shorter_than_it(factory, tmp_path) -> None:
    ingest(
        factory,
        tmp_path,
        NOW,
        [
            {"id": "2601.00501", "title": "Optimization at Scale", "summary": FILLER},
            {"id": "2601.00502", "title": "A Learned Optimizer", "summary": FILLER},
            {"id": "2601.00503", "title": "Optimizing Kernels", "summary": FILLER},
            {"id": "2601.00504", "title": "Optimistic Exploration", "summary": FILLER},
            {"id": "2601.00505", "title": "Optimal Transport", "summary": FILLER},
        ],
    )
    with factory() as session:
        # Snowball stems optimization, optimizer and optimizing to "optim", shorter than
        # the prefix; "optimistic" does not start with it. "Optimal" shares the stem optim
        # with them, so the stored stems cannot tell it apart.
        assert set(titles(session, "optimiz*")) == {
            "Optimization at Scale",
            "A Learned Optimizer",
            "Optimizing Kernels",
            "Optimal Transport",
        }
        assert set(titles(session, "title:optimiz*")) == set(titles(session, "optimiz*"))
        assert len(titles(session, "optimi*")) == 5  # optimist starts with optimi


def test_a_definition_also_matches_without_its_least_distinctive_last_word(
    factory, tmp_path
) -> None:
    ingest(
        factory,
        tmp_path,
        NOW,
        [
            {
                "id": "2601.00601",
                "title": "Grounded Answers",
                "summary": "Retrieval-augmented generation (RAG) grounds answers. " + FILLER,
            },
            {
                "id": "2601.00602",
                "title": "Better Pipelines",
                "summary": "We improve retrieval-augmented generation (RAG) pipelines. " + FILLER,
            },
            {
                "id": "2601.00603",
                "title": "Documents for LLMs",
                "summary": "Retrieval-augmented LLMs answer from documents. " + FILLER,
            },
            {
                "id": "2601.00611",
                "title": "Faster Pipelines",
                "summary": "Our RAG pipeline answers questions quickly. " + FILLER,
            },
            {"id": "2601.00604", "title": "Image Retrieval", "summary": "Retrieval. " + FILLER},
            {"id": "2601.00605", "title": "Text Generation", "summary": "Generation. " + FILLER},
            {"id": "2601.00606", "title": "Image Generation", "summary": "Generation. " + FILLER},
            {
                "id": "2601.00607",
                "title": "Small Models",
                "summary": "Post-training quantization (PTQ) of models. " + FILLER,
            },
            {
                "id": "2601.00608",
                "title": "Vision Models",
                "summary": "We study post-training quantization (PTQ) for vision. " + FILLER,
            },
            {
                "id": "2601.00609",
                "title": "Preference Data",
                "summary": "Post-training of language models; training recipes. " + FILLER,
            },
            {"id": "2601.00610", "title": "Training at Scale", "summary": "Training. " + FILLER},
        ],
    )
    with factory() as session:
        # "generation" is the commonest word of its definition: RAG also finds the paper
        # that writes "retrieval-augmented LLMs", not the ones on retrieval or generation.
        plan = query_plan.plan_query(session, parse_query("RAG"), relevance.Corpus(session))
        assert plan.expansions == (
            "RAG → retrieval augmented generation",
            "RAG → retrieval augmented",
        )
        assert set(titles(session, "RAG")) == {
            "Grounded Answers",
            "Better Pipelines",
            "Documents for LLMs",
            "Faster Pipelines",
        }
        # Hyphenated words find the acronym they define, each part in its place in the
        # phrase.
        assert set(titles(session, "retrieval-augmented generation")) == {
            "Grounded Answers",
            "Better Pipelines",
            "Faster Pipelines",
        }
        corpus = relevance.Corpus(session)
        plan = query_plan.plan_query(session, parse_query("retrieval-augmented generation"), corpus)
        assert plan.expansions == ("retrieval augmented generation → RAG",)
        assert plan.sequence == (
            frozenset({"retriev"}),
            frozenset({"augment"}),
            frozenset({"generat"}),
        )
        # "quantization" is the rarest word of its definition: it stays required, and
        # post-training in general is not PTQ.
        assert set(titles(session, "PTQ")) == {"Small Models", "Vision Models"}


def test_a_definition_is_shortened_only_to_words_that_mean_it(factory, tmp_path) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            (
                "2601.00701",
                "Efficient Fine-Tuning",
                "Low-rank adaptation (LoRA) fine-tunes few weights.",
            ),
            ("2601.00702", "Adapters", "We compare LoRA."),
            ("2601.00703", "Compression", "Low-rank factorization compresses weights."),
            ("2601.00704", "Gradients", "Low-rank gradients."),
            ("2601.00705", "Features", "Low-rank features."),
            ("2601.00706", "Domains", "Domain adaptation."),
            ("2601.00707", "Tests", "Test-time adaptation."),
            ("2601.00708", "Data", "Adaptation of data."),
        ],
    )
    with factory() as session:
        # "adaptation" is the commonest word of the definition, but only one of the four
        # papers saying "low-rank" means low-rank adaptation: LoRA keeps all three words.
        assert set(titles(session, "LoRA")) == {"Efficient Fine-Tuning", "Adapters"}


def test_a_definition_loses_a_common_first_word_only_when_the_rest_means_it(
    factory, tmp_path
) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            (
                "2601.00721",
                "Translating Bavarian",
                "Neural machine translation (NMT) for a dialect.",
            ),
            ("2601.00722", "Few-Shot Translation", "Machine translation with few examples."),
            ("2601.00723", "Neural Codecs", "A neural network compresses audio."),
            ("2601.00724", "Neural Fields", "Deep neural scene representations."),
            ("2601.00725", "Control", "Deep reinforcement learning (DRL) for control."),
            ("2601.00726", "Bandits", "Reinforcement learning with bandit feedback."),
            ("2601.00727", "Reward Models", "Reinforcement learning from human feedback."),
            ("2601.00728", "Deep Nets", "Deep networks, deep features, deep models."),
            ("2601.00729", "Depth", "Deep layers; deep networks."),
        ],
    )
    with factory() as session:
        # "neural" is the commonest word of "neural machine translation", and one of the
        # two papers saying "machine translation" writes NMT: the rest means NMT.
        plan = query_plan.plan_query(session, parse_query("NMT"), relevance.Corpus(session))
        assert Phrase(("machin", "translat")) in plan.groups[0].phrases
        # `digest match` names what it used.
        assert plan.expansions == ("NMT → neural machine translation", "NMT → machine translation")
        assert set(titles(session, "NMT")) == {"Translating Bavarian", "Few-Shot Translation"}
        # "deep" is the commonest word of "deep reinforcement learning", but only one of
        # the three papers saying "reinforcement learning" means DRL: it keeps its words.
        plan = query_plan.plan_query(session, parse_query("DRL"), relevance.Corpus(session))
        assert [p.terms for p in plan.groups[0].phrases] == [
            (acronym_term("DRL"),),
            ("deep", "reinforc", "learn"),
        ]
        assert set(titles(session, "DRL")) == {"Control"}


def test_a_shortening_finds_more_and_counts_no_occurrence_twice(factory, tmp_path) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            ("2601.00741", "Dialects", "Neural machine translation (NMT) for a dialect."),
            ("2601.00742", "Few Examples", "Machine translation with few examples."),
            ("2601.00743", "Metrics", "We define machine translation (MT) and NMT metrics."),
            ("2601.00744", "Nets", "Neural nets."),
            ("2601.00745", "Fields", "Neural fields."),
            ("2601.00746", "Codecs", "Neural codecs."),
            ("2601.00747", "Control", "Deep reinforcement learning (DRL) for control."),
            ("2601.00748", "Scale", "DRL: reinforcement learning at scale."),
            ("2601.00749", "Deep Nets", "Deep nets, deep layers."),
            ("2601.00750", "Depth", "Deep features."),
        ],
    )
    with factory() as session:
        corpus = relevance.Corpus(session)
        whole, short = Phrase(("neural", "machin", "translat")), Phrase(("machin", "translat"))
        plan = query_plan.plan_query(session, parse_query("NMT"), corpus)
        assert short in plan.groups[0].phrases
        # "neural machine translation" is one occurrence, not also one of "machine
        # translation": the dialect paper's abstract counts 1 for the pair, as for the
        # whole alone.
        (dialects,) = [m.paper_id for m in relevance.rank(session, plan, corpus)[:1]]
        paper = corpus.papers([dialects])[dialects]
        assert relevance._field_counts(paper, [whole, short])[1] == 1
        assert relevance._field_counts(paper, [short])[1] == 1
        # Typed words equal to a shortening still find their own acronym (MT).
        plan = query_plan.plan_query(session, parse_query('"machine translation" NMT'), corpus)
        assert Phrase((acronym_term("MT"),)) in plan.groups[0].phrases
        # When every paper saying "reinforcement learning" says DRL, the shortening
        # would find nothing more: it is neither used nor listed.
        plan = query_plan.plan_query(session, parse_query("DRL"), corpus)
        assert plan.expansions == ("DRL → deep reinforcement learning",)


def test_any_mined_definition_plans_and_ranks(factory, tmp_path) -> None:
    """Whatever definitions a feed's abstracts give (small words anywhere, hyphens,
    plural or odd acronyms), every query over them is planned and ranked: a random
    corpus of definitions, fixed by its seed, queried by each acronym and word run."""
    rng = random.Random(1)
    vocabulary = (  # noqa: SIM905 (a sentence reads better than 30 quoted words)
        "of the in a for and to with on graph neural network model learning deep "
        "reinforcement mixture experts low rank adaptation retrieval augmented generation "
        "large language vision transformer self supervised"
    ).split()

    def phrase(size: int) -> list[str]:
        return [rng.choice(vocabulary) for _ in range(size)]

    rows, queries = [], []
    for number in range(40):
        sentences = []
        for _ in range(rng.randint(1, 3)):
            words = phrase(rng.randint(1, 5))
            acronym = "".join(w[0] for w in words if w not in STOP_WORDS).upper() or "X"
            acronym += rng.choice(["", "", "s", "O"])
            sentences.append(rng.choice([" ", "-"]).join(words) + f" ({acronym}).")
            queries += [acronym, acronym.lower(), " ".join(words), "-".join(words)]
        rows.append((f"2601.{number:05d}", " ".join(phrase(4)), " ".join(sentences)))
    ingest_rows(factory, tmp_path, rows)
    with factory() as session:
        for query in dict.fromkeys(queries):
            # Raises nothing, "of of of" included: a topic stored before stop-word-only
            # queries were refused is still planned.
            titles(session, query, stored=True)


def test_a_definition_ending_in_a_small_word_is_planned(factory, tmp_path) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            ("2601.00731", "Layers", "We stack a graph neural network of (GNN) layers."),
            ("2601.00732", "Molecules", "A graph neural network for molecules."),
            ("2601.00733", "Vision", "A neural network for images."),
        ],
    )
    with factory() as session:
        # Ingest no longer mines a definition ending in a stop word; a database from before
        # holds "graph neural network of" for GNN, whose last term is no word to drop in a
        # shortening (it was a KeyError).
        assert session.scalars(select(Acronym)).all() == []
        layers = session.scalars(select(Paper.id).where(Paper.title == "Layers")).one()
        session.add(
            Acronym(
                paper_id=layers,
                term="qqgnn",
                expansion_terms="graph neural network of",
                acronym="GNN",
                expansion="graph neural network of",
            )
        )
        session.commit()
        plan = query_plan.plan_query(session, parse_query("GNN"), relevance.Corpus(session))
        assert plan.expansions == ("GNN → graph neural network of",)
        assert set(titles(session, "GNN")) == {"Layers"}


def test_an_acronym_defined_as_something_else_is_another_word(factory, tmp_path) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            (
                "2601.00801",
                "Learning Without Forgetting",
                "Continual learning (CL) trains on a stream of tasks.",
            ),
            ("2601.00802", "Replay Buffers", "Continual learning (CL) with replay."),
            (
                "2601.00803",
                "Ordering Examples",
                "Curriculum learning (CL) orders examples; CL helps.",
            ),
            ("2601.00804", "Streams of Tasks", "Our CL method never forgets old tasks."),
        ],
    )
    with factory() as session:
        # CL stands for continual learning here, except in the paper that defines it as
        # curriculum learning, where it is another word; "Streams of Tasks" uses CL without
        # defining it, in the sense most papers define it in.
        assert set(titles(session, "continual learning")) == {
            "Learning Without Forgetting",
            "Replay Buffers",
            "Streams of Tasks",
        }
        assert titles(session, "curriculum learning") == ["Ordering Examples"]
        corpus = relevance.Corpus(session)
        plan = query_plan.plan_query(session, parse_query("continual learning"), corpus)
        assert (plan.meanings, plan.foreign) == ({"qqcl": frozenset({"continu learn"})}, set())
        # Undefined, CL is taken in its commoner meaning: not curriculum learning.
        plan = query_plan.plan_query(session, parse_query("curriculum learning"), corpus)
        assert plan.foreign == {"qqcl"}


def test_british_and_american_spellings_find_each_other(factory, tmp_path) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            ("2601.01001", "Quantisation", "Weights."),
            ("2601.01002", "Quantization", "Activations."),
            ("2601.01003", "Pruning", "Weights."),
        ],
    )
    with factory() as session:
        both = {"Quantisation", "Quantization"}
        assert set(titles(session, "quantization")) == both
        assert set(titles(session, "quantisation")) == both
        corpus = relevance.Corpus(session)
        plan = query_plan.plan_query(session, parse_query("quantisation"), corpus)
        assert plan.expansions == ("quantisation → quantization",)
        # A spelling no paper uses adds nothing: "advize" is not a word here.
        plan = query_plan.plan_query(session, parse_query("advise"), corpus)
        assert plan.expansions == ()


def test_a_typed_participle_is_not_its_action_noun(factory, tmp_path) -> None:
    # Snowball stems distributed and distribution alike (distribut).
    ingest_rows(
        factory,
        tmp_path,
        [
            (
                "2601.01201",
                "Training under Distribution Shift",
                "Training when the training distribution shifts.",
            ),
            ("2601.01202", "Faster Training at Scale", "Distributed training on many machines."),
        ],
    )
    with factory() as session:
        found = titles(session, "distributed training")
    # The title "Distribution ... Training" names a derivation: no title bonus, half weight.
    assert found == ["Faster Training at Scale", "Training under Distribution Shift"]


def test_a_query_word_beats_its_derivations_with_the_same_stem(factory, tmp_path) -> None:
    # Snowball stems optimizer, optimization and optimal alike (optim): the papers that
    # write the word itself, or an inflection of it, come first.
    ingest_rows(
        factory,
        tmp_path,
        [
            (
                "2601.01101",
                "Optimal Transport",
                "Optimal transport of images, optimally computed, optimal for images.",
            ),
            ("2601.01102", "Prompt Optimization", "Optimization of prompts for images."),
            ("2601.01103", "Learned Optimizers", "Optimizers trained for images."),
            ("2601.01104", "Fast Optimizer", "An optimizer for images."),
        ],
    )
    with factory() as session:
        corpus = relevance.Corpus(session)
        plan = query_plan.plan_query(session, parse_query("optimizer"), corpus)
        assert plan.typed == {"optim": {"optimizer"}}

        def ranked(weight: float) -> list[tuple[str, bool]]:
            saved, relevance.DERIVED_WEIGHT = relevance.DERIVED_WEIGHT, weight
            try:
                found = relevance.rank(session, plan, corpus)
            finally:
                relevance.DERIVED_WEIGHT = saved
            papers = db.papers_by_id(session, [m.paper_id for m in found])
            return [(papers[m.paper_id].title, m.titled) for m in found]

        # A title naming only a derivation earns no title bonus either.
        assert ranked(relevance.DERIVED_WEIGHT) == [
            ("Fast Optimizer", True),
            ("Learned Optimizers", True),
            ("Optimal Transport", False),
            ("Prompt Optimization", False),
        ]
        # Counted in full, a derivation used more often ranks among the word.
        assert ranked(1.0) == [
            ("Fast Optimizer", True),
            ("Optimal Transport", True),
            ("Learned Optimizers", True),
            ("Prompt Optimization", True),
        ]


def test_closed_and_hyphenated_compounds_find_each_other(factory, tmp_path) -> None:
    ingest_rows(
        factory,
        tmp_path,
        [
            ("2601.00901", "Closed", "We study pretraining of language models."),
            ("2601.00902", "Hyphenated", "We study pre-training of language models."),
            ("2601.00903", "Participle", "A pre-trained encoder, fine-tuned on code."),
            ("2601.00904", "Spaced", "Data is pre processed, then finetuned."),
            ("2601.00905", "Notable", "A notable gain."),
            ("2601.00906", "Not able", "It is not able to train; a not able model."),
        ],
    )
    with factory() as session:
        corpus = relevance.Corpus(session)

        def expansions(query: str) -> tuple[str, ...]:
            return query_plan.plan_query(session, parse_query(query), corpus).expansions

        # One word finds its parts joined by a hyphen, and the parts find the word.
        assert set(titles(session, "pretraining")) == {"Closed", "Hyphenated", "Participle"}
        assert expansions("pretraining") == ("pretraining → pre-training",)
        assert set(titles(session, "pre-training")) == {"Closed", "Hyphenated", "Participle"}
        assert expansions("pre-training") == ("pre training → pretraining",)
        # Typed apart, quoted or not, the words find the word.
        assert set(titles(session, "fine tuning")) == {"Participle", "Spaced"}
        assert set(titles(session, '"fine tuning"')) == {"Participle", "Spaced"}
        assert set(titles(session, "finetuning")) == {"Participle", "Spaced"}
        # Words merely in a row are no compound: "not able" is not "notable", and "pre
        # processed" with a space is not enough (no paper hyphenates it).
        assert titles(session, "notable") == ["Notable"]
        assert expansions("notable") == ()
        assert expansions("preprocessing") == ()
