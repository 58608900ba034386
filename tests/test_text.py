"""Text analysis: words, Snowball stems, acronyms kept apart, acronym definitions."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest import text
from digest.text import (
    AcronymDefinition,
    acronym_definitions,
    action_bases,
    contraction_terms,
    counts_as_typed,
    indexed_terms,
    inflection_bases,
    joined,
    plain_terms,
    same_word,
    stem,
    terms,
    word_term,
    words,
)


def test_snowball_stems_agree_across_word_forms_and_keep_general_apart() -> None:
    assert terms("model models modelling modeled") == ["model"] * 4
    # Porter maps all four to "gener"; Snowball keeps "general" apart.
    assert terms("generation generative generated general") == [
        "generat",
        "generat",
        "generat",
        "general",
    ]
    assert stem("diffusion") == "diffus" and stem("robots") == stem("robotic") == "robot"


def test_acronyms_and_mixed_case_words_are_not_the_ordinary_word() -> None:
    assert terms("CoDE is a deepfake detector; our code is public") == [
        "qqcode",
        "is",
        "a",
        "deepfak",
        "detector",
        "our",
        "code",
        "is",
        "public",
    ]
    assert terms("RoBoT searches architectures for a robot") == [
        "qqrobot",
        "search",
        "architectur",
        "for",
        "a",
        "robot",
    ]
    # A plural s after a capital goes; sentence-initial capitals are ordinary words.
    assert terms("LLMs and MoEs. Robots") == ["qqllm", "and", "qqmoe", "robot"]
    # Digits: kept whole, case-folded; a possessive goes; diacritics are removed.
    assert terms("GPT-4 and 3D in OpenAI's TÜLU") == [
        "qqgpt",
        "4",
        "and",
        "3d",
        "in",
        "qqopenai",
        "qqtulu",
    ]


def test_a_title_in_capitals_has_no_acronyms() -> None:
    assert terms("DEEP LEARNING FOR ROBOTS AND CODE") == [
        "deep",
        "learn",
        "for",
        "robot",
        "and",
        "code",
    ]


# Texts that reach every branch of the analysis: acronyms, plurals, possessives,
# capitals, digits, diacritics, punctuation inside and around words, odd whitespace.
_PIECES = st.sampled_from(
    [
        "Mixture-of-Experts",
        "(MoE),",
        "LLMs'",
        "model's",
        "x’s",
        "GPT-4",
        "3D",
        "TÜLU",
        "CAFÉ",
        "DEEP",
        "LEARNING",
        "robots.",
        "CoDE",
        "o'clock",
        "snake_case",
        "ﬁne",
        "-",
        "",
        "\u00a0",
        "\x1c",
    ]
)


@given(
    st.lists(
        st.one_of(_PIECES, st.text(max_size=12)),
        max_size=30,
    ).map(" ".join)
)
def test_indexed_terms_are_the_joined_terms(sample: str) -> None:
    # Ingest stores `indexed_terms`, queries use `terms`: they must never disagree.
    assert indexed_terms(sample) == joined(terms(sample))
    assert indexed_terms(sample) == joined(terms(sample))  # from the chunk cache
    # Relevance reads a term's word as written at the same position.
    assert len(words(sample)) == len(terms(sample))


def test_indexed_terms_of_a_text_in_capitals_and_after_the_cache_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(text, "_CHUNK_CACHE_SIZE", 3)
    samples = {
        "DEEP LEARNING FOR CoDE": "deep learn for code",
        "BERT and CLIP, NASA": "bert and clip nasa",  # three long words, all capitals
        "BERT and CLIP beat models": "qqbert and qqclip beat model",  # two of four
        "RAG for LLMs": "qqrag for qqllm",
    }
    for sample, expected in [*samples.items(), *samples.items()]:
        assert indexed_terms(sample) == expected == joined(terms(sample))
    # Full: forgotten before the next text's chunks are analysed.
    assert set(text._chunk_terms) == {"RAG", "for", "LLMs"}
    assert text._chunk_capitals == {}


@pytest.mark.parametrize(
    ("word", "term"),
    [("RAG", "qqrag"), ("rag", "rag"), ("LLMs", "qqllm"), ("Models", "model"), ("3D", "3d")],
)
def test_query_words_analyse_like_the_text(word: str, term: str) -> None:
    assert word_term(word) == term
    assert terms(f"x {word}")[1] == term


@pytest.mark.parametrize(
    ("sample", "pieces"),
    [
        ("Refine Drugs, Don't Complete Them", {"don", "t"}),
        ("Why LLMs isn’t enough; we won't stop", {"isn", "t", "won"}),
        ("Reasoning Models DON'T Always Say", {"qqdon", "t"}),  # as indexed: an acronym
        ("O'Brien's rock'n'roll", {"o", "brien", "rock", "n", "roll"}),
        ("The model's output and the models' outputs", set()),  # possessives are words
        ("No apostrophe at all", set()),
    ],
)
def test_contraction_pieces_are_told_apart(sample: str, pieces: set[str]) -> None:
    assert contraction_terms(sample) == pieces
    # They are the index's own terms of those pieces: the index is unchanged.
    assert pieces <= set(terms(sample))


def test_authors_and_categories_are_only_folded() -> None:
    assert plain_terms("Geoffrey Hinton\nJosé Müller") == ["geoffrey", "hinton", "jose", "muller"]
    assert plain_terms("cs.CL stat.ML") == ["cs", "cl", "stat", "ml"]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("sparse Mixture-of-Experts (MoE) layers", ("MoE", "mixture of experts")),
        ("retrieval-augmented generation (RAG) helps", ("RAG", "retrieval augmented generation")),
        ("Large Language Models (LLMs) are", ("LLM", "large language models")),
        (
            "we propose Contrastive Deepfake Embeddings (CoDE), a",
            ("CoDE", "contrastive deepfake embeddings"),
        ),
        (
            "Reinforcement Learning from Human Feedback (RLHF)",
            ("RLHF", "reinforcement learning from human feedback"),
        ),
        ("Low-Rank Adaptation (LoRA)", ("LoRA", "low rank adaptation")),
        ("the Internet of Things (IoT)", ("IoT", "internet of things")),
    ],
)
def test_acronym_definitions_are_mined(text: str, found: tuple[str, str]) -> None:
    assert acronym_definitions(text) == [AcronymDefinition(*found)]


@pytest.mark.parametrize(
    "text",
    [
        "(see Table 1)",
        "results (FID) improve",
        "a model (GPT-4) and",
        "in the (RAG)",
        "(x)",
        "graph neural network of (GNN)",
        "Internet of Things of (IoT)",
    ],
)
def test_parentheses_that_define_nothing(text: str) -> None:
    assert acronym_definitions(text) == []


def test_definition_terms_are_the_index_terms() -> None:
    [moe] = acronym_definitions("a Mixture of Experts (MoE)")
    assert moe.term == "qqmoe"
    assert moe.expansion_terms == ("mixtur", "of", "expert")


# Snowball stems every word of each row alike; only the first ones are the same word.
@pytest.mark.parametrize(
    ("word", "same", "derivations"),
    [
        (
            "optimizer",
            ["optimizer", "optimizers", "optimiser", "optimisers"],
            ["optimization", "optimisation", "optimize", "optimized", "optimal", "optimally"],
        ),
        ("tokenizer", ["tokenizers", "tokeniser"], ["token", "tokens", "tokenization"]),
        # An action noun and its verb are one word; the adjective and agent noun are not.
        (
            "generation",
            ["generations", "generate", "generated", "generating"],
            ["generative", "generator"],
        ),
        ("segmentation", ["segment", "segments", "segmented"], ["segmental"]),
        ("hallucination", ["hallucinated", "hallucinate"], []),
        ("alignment", ["align", "aligned", "alignments"], ["aligner"]),
        ("optimize", ["optimizes", "optimized", "optimizing", "optimise"], ["optimizer"]),
        ("learning", ["learn", "learns", "learned"], []),
        ("modeling", ["model", "models", "modelled", "modelling"], []),
        ("planning", ["plan", "plans", "planned"], []),
        ("study", ["studies", "studied"], []),
        ("approach", ["approaches", "approached"], []),
        ("speed", ["speeds"], []),
        ("agents", ["agent"], ["agentic"]),
        ("robot", ["robots"], ["robotic", "robotics"]),
        ("reasoning", ["reason", "reasons"], ["reasonable"]),
    ],
)
def test_a_word_is_told_from_its_derivations(
    word: str, same: list[str], derivations: list[str]
) -> None:
    # British spellings stem apart (optimis-): a query finds them as its other spelling.
    assert all(stem(w.replace("is", "iz")) == stem(word) for w in same + derivations)
    assert [w for w in same if not same_word(w, word)] == []
    assert [w for w in derivations if same_word(w, word)] == []
    assert all(same_word(word, w) == same_word(w, word) for w in same + derivations)


def test_a_typed_participle_takes_its_inflections_not_its_action_noun() -> None:
    # "distributed training" is not training under a distribution shift.
    assert counts_as_typed("distributes", "distributed")
    assert counts_as_typed("distributing", "distributed")
    assert not counts_as_typed("distribution", "distributed")
    assert not counts_as_typed("alignment", "aligned")
    assert same_word("alignment", "aligned")  # what the rule sets aside
    # Other typed words keep their verb or action noun, participles included.
    assert counts_as_typed("distributed", "distribution")
    assert counts_as_typed("generated", "generation")
    assert counts_as_typed("segmentation", "segment")
    assert not counts_as_typed("generative", "generation")


def test_inflection_and_action_bases_of_short_and_odd_words() -> None:
    assert inflection_bases("optimisers") == {"optimisers", "optimizers", "optimizer"}
    assert action_bases("optimisations") == {
        "optimisations",
        "optimizations",
        "optimization",
        "optimiz",  # optimize, optimized (less -ation)
        "optimizat",  # less -ion: no word's base
    }
    # A plural -s is not taken from -ss, -us, -is; short words are only themselves.
    assert inflection_bases("class") == {"class"}
    assert inflection_bases("corpus") == {"corpus"}
    assert inflection_bases("analysis") == {"analysis"}
    assert inflection_bases("uses") == {"uses", "use"}
    assert action_bases("gas") == {"gas"}
    assert action_bases("gpt4s") == {"gpt4s"}
    assert action_bases("café") == {"café"}
    assert action_bases("lion") == {"lion"}  # too short to be a verb's noun


@given(st.text(max_size=20), st.text(max_size=20))
def test_same_word_takes_any_text(word: str, other: str) -> None:
    bases = action_bases(word)
    assert word in bases and inflection_bases(word) <= bases
    assert same_word(word, word)
    assert same_word(word, other) == same_word(other, word)
