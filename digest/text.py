"""Text analysis: the one place that turns titles, abstracts and query words into index terms.

The same analysis runs when a paper is stored (its terms go into the
database, which indexes them with a plain tokenizer: SQLite FTS5 `unicode61`,
PostgreSQL `simple`) and when a query is parsed, so both sides always agree:

* words are Unicode letter/digit runs (NFKC, diacritics removed, case folded);
  a possessive ``'s`` is dropped;
* an ordinary word is stemmed with Snowball English (`stem`), so ``models``,
  ``modelling`` and ``model`` agree, while ``general`` and ``generation`` do not;
* a word written as an acronym or in mixed case in the text (``RAG``, ``CoDE``,
  ``RoBoT``, ``LLMs``) is a different term from the ordinary word: it is kept
  unstemmed, case-folded, without a plural ``s``, behind `ACRONYM_MARK`
  (``qqcode``), so the deepfake method "CoDE" never matches the word "code";
* words with digits (``3D``, ``GPT4``, ``7B``) are kept as they are, case-folded;
* in a text written mostly in capitals, case means nothing and every word is ordinary.

Snowball also conflates derivations (optimizer, optimization, optimal all stem to
``optim``); `inflection_bases` tells a word's inflections (optimizers, optimiser) from
them, and `same_word` also a verb from its action noun (segment, segmentation);
`counts_as_typed` applies it to a query's typed word, but a typed participle keeps only
its inflections (distributed is not distribution): relevance weighs any other
derivation below the word a query typed.

Author names and categories are only folded (`plain_terms`), never stemmed.
`contraction_terms` tells the pieces of "Don't" apart, which name nothing.
`acronym_definitions` finds "Mixture-of-Experts (MoE)"-style definitions.
Everything here is pure: no database, no clock.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import NamedTuple

import Stemmer

ACRONYM_MARK = "qq"  # no English stem starts with it; PostgreSQL parses it as a plain word

# A word, and the possessive 's after it (group 1 is the word without it).
_WORD = re.compile(r"([^\W_]+)(?:['’]s\b)?", re.UNICODE)
_PARENTHESIZED = re.compile(r"\(\s*([^\W_][^()\s;,]{0,14}?)\s*\)", re.UNICODE)
_stemmer = Stemmer.Stemmer("english")

# Words that carry no topic of their own: never required, shown or weighed on their own.
STOP_WORDS = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "that",
        "the",
        "their",
        "this",
        "to",
        "via",
        "we",
        "was",
        "were",
        "which",
        "with",
        "without",
    )
)


@dataclass(frozen=True)
class Token:
    """One word of a text: its index `term`, as `written`, and whether it is an acronym."""

    term: str
    written: str
    acronym: bool
    start: int
    end: int


def fold(text: str) -> str:
    """NFKC, case-folded, diacritics removed: the form every comparison uses."""
    if text.isascii():  # the same, faster: nothing to normalize or remove
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return unicodedata.normalize(
        "NFKC", "".join(c for c in decomposed if not unicodedata.combining(c))
    )


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """The Snowball English stem of a folded word (words with digits are kept whole)."""
    if any(c.isdigit() for c in word):
        return word
    return str(_stemmer.stemWord(word))


def acronym_term(word: str) -> str:
    """The index term of a word written as an acronym: ``LLMs`` -> ``qqllm``."""
    return ACRONYM_MARK + fold(_singular(word))


def _singular(word: str) -> str:
    # LLMs -> LLM, MoEs -> MoE; a plural s only follows a capital.
    if len(word) > 2 and word.endswith("s") and word[-2].isupper():
        return word[:-1]
    return word


# -ise/-ize (-yse/-yze) endings, British or American: optimiser, optimizer.
_SPELLING = re.compile(r"(?<=[a-z]{3})([iy])([sz])(e|es|ed|ing|er|ers|ation|ations|able)$")


def other_spelling(word: str) -> str | None:
    """The word with -ise/-ize (-yse/-yze) endings swapped: optimisation <-> optimization."""
    if is_acronym(word):
        return None
    return _SPELLING.sub(lambda m: m[1] + ("z" if m[2] == "s" else "s") + m[3], word) or None


# Inflectional endings and what replaces them: studies -> study, approaches -> approach.
_INFLECTIONS = (
    ("ies", "y"),
    ("ied", "y"),
    ("sses", "ss"),
    ("shes", "sh"),
    ("ches", "ch"),
    ("xes", "x"),
    ("zes", "z"),
    ("ing", ""),
    ("ed", ""),
    ("s", ""),
)
_NOT_PLURAL = ("ss", "us", "is")
_BASE_MIN = 3  # letters an ending leaves at least


@lru_cache(maxsize=100_000)
def inflection_bases(word: str) -> frozenset[str]:
    """What a folded word may be an inflection of: itself, and itself spelled the American
    way (optimiser -> optimizer) without a plural -s/-es or a verb's -ed/-ing, then
    without a final -e or a doubled final consonant (planned -> plann -> plan).

    Two words are inflections of one another when they share a base: optimizers,
    optimiser, optimizer; optimize, optimized, optimizing; speed, speeds; but not
    optimizer, optimization, optimize and optimal, which Snowball stems alike.
    Words of other scripts, with digits or of three letters or fewer are only themselves.
    """
    if len(word) < 4 or not word.isascii() or not word.isalpha():
        return frozenset((word,))
    american = _SPELLING.sub(lambda m: m[1] + "z" + m[3], word)
    found = {word, american}
    for ending, replacement in _INFLECTIONS:
        plural = ending != "s" or not american.endswith(_NOT_PLURAL)
        if american.endswith(ending) and len(american) - len(ending) >= _BASE_MIN and plural:
            found.add(american[: -len(ending)] + replacement)
    for base in list(found):
        if len(base) > _BASE_MIN and base.endswith("e"):
            found.add(base[:-1])
        if len(base) > _BASE_MIN and base[-1] == base[-2] and base[-1] not in "aeiousy":
            found.add(base[:-1])
    return frozenset(found)


_ACTION_NOUN = ("ation", "ion", "ment")  # segmentation, generation, alignment


@lru_cache(maxsize=100_000)
def action_bases(word: str) -> frozenset[str]:
    """`inflection_bases`, and for an action noun also its verb's: segmentation ->
    segment, hallucination -> hallucinat(e), optimization -> optimiz(e), alignment ->
    align."""
    bases = inflection_bases(word)
    verbs = {
        base[: -len(ending)]
        for base in bases
        for ending in _ACTION_NOUN
        if base.endswith(ending) and len(base) - len(ending) >= _BASE_MIN
    }
    return bases | verbs


def same_word(word: str, other: str) -> bool:
    """Whether two folded words are one word for relevance: inflections of one another
    (`inflection_bases`), or a verb and its action noun (`action_bases`: segmented and
    segmentation, hallucinate and hallucination), not other derivations with the same
    stem (optimizer and optimization, an agent noun; generation and generative)."""
    return word == other or not action_bases(word).isdisjoint(action_bases(other))


def counts_as_typed(written: str, typed: str) -> bool:
    """Whether a paper's `written` word counts as the query's `typed` one: `same_word`,
    except that a typed -ed word (a participle) keeps only its inflections, not its
    action noun. As a modifier it names a state, and the noun may mean something else:
    "distributed" (training) is not "distribution", which ML papers mostly use for a
    probability distribution. Where the two share a sense (quantized, quantization),
    the noun's papers still match, as a derivation."""
    if typed.endswith("ed"):
        return not inflection_bases(written).isdisjoint(inflection_bases(typed))
    return same_word(written, typed)


def is_acronym(word: str) -> bool:
    """Written with a capital after its first letter (RAG, CoDE, LLMs) and no digit."""
    if len(word) < 2 or any(c.isdigit() for c in word):
        return False
    return any(c.isupper() for c in word[1:])


def _shouting(words: list[str]) -> bool:
    # A text (or title) written mostly in capitals: case carries no meaning in it.
    return _shouting_words(list(map(_word, words)))


def _shouting_words(words: list[_Word]) -> bool:
    long = sum(map(_LONG, words))
    return bool(long >= 3 and sum(map(_LONG_CAPITALS, words)) * 2 > long)


class _Word(NamedTuple):
    """What analysis needs to know of one word as written, computed once per distinct word."""

    term: str  # its index term (`word_term`)
    ordinary: str  # its index term in a text that is all capitals (never an acronym)
    long: bool  # a word of letters only, longer than 3: it counts towards `_shouting`
    long_capitals: bool  # such a word, in capitals


_TERM, _ORDINARY, _LONG, _LONG_CAPITALS = (itemgetter(n) for n in range(4))


@lru_cache(maxsize=200_000)
def _word(word: str) -> _Word:
    long = len(word) > 3 and word.isalpha()
    return _Word(word_term(word), _ordinary_term(word), long, long and word.isupper())


def tokens(text: str) -> Iterator[Token]:
    """The words of `text` with their index terms, in order."""
    matches = list(_WORD.finditer(text))
    words = [match.group(1) for match in matches]
    caseless = _shouting(words)
    for match, word in zip(matches, words, strict=True):
        acronym = not caseless and is_acronym(word)
        term = word_term(word) if acronym else _ordinary_term(word)
        yield Token(term, word, acronym, match.start(), match.end())


@lru_cache(maxsize=200_000)
def word_term(word: str) -> str:
    """The index term of one word as a query writes it: RAG -> qqrag, models -> model."""
    return acronym_term(word) if is_acronym(word) else _ordinary_term(word)


@lru_cache(maxsize=200_000)
def _ordinary_term(word: str) -> str:
    return stem(fold(word))


def terms(text: str) -> list[str]:
    """The index terms of a title or abstract, in order (`tokens`, without the positions)."""
    # Ingest analyses every stored paper: one cached lookup per word, and loops in C.
    words = list(map(_word, _WORD.findall(text)))
    return list(map(_ORDINARY if _shouting_words(words) else _TERM, words))


def words(text: str) -> list[str]:
    """The words of a title or abstract as written, one for each of its `terms`."""
    return _WORD.findall(text)


def indexed_terms(text: str) -> str:
    """`joined(terms(text))`, as ingest stores a title or abstract, computed chunk by chunk.

    No word crosses whitespace, so the terms of a text are those of its
    whitespace-separated chunks ("Mixture-of-Experts", "(MoE),") in turn. Chunks recur
    like words do, so each distinct one is analysed once (`_remember`), and a text costs
    a split, a dict look-up per chunk and a join, all in C.
    """
    chunks = text.split()
    try:
        joined_terms = "".join(map(_chunk_terms.__getitem__, chunks))
    except KeyError:
        if len(_chunk_terms) + len(chunks) > _CHUNK_CACHE_SIZE:
            _chunk_terms.clear()  # bounded: the common chunks come back at once
            _chunk_capitals.clear()
        for chunk in chunks:
            if chunk not in _chunk_terms:
                _remember(chunk)
        joined_terms = "".join(map(_chunk_terms.__getitem__, chunks))
    # A text in capitals has at least two long words in capitals (`_shouting_words`):
    # only then are its words looked at one by one.
    if (
        not _chunk_capitals.keys().isdisjoint(chunks)
        and sum(map(_chunk_capitals.get, chunks, itertools.repeat(0))) >= 2
    ):
        words = list(map(_word, _WORD.findall(text)))
        if _shouting_words(words):
            return joined(list(map(_ORDINARY, words)))
    return joined_terms[:-1]


# What `indexed_terms` knows of each chunk it has seen: its words' terms, each followed by
# a space ("" without words), and, when any, how many of its words are long and in
# capitals (they count towards `_shouting_words`). Dicts of strings and ints only, which
# the garbage collector never walks.
_CHUNK_CACHE_SIZE = 200_000
_chunk_terms: dict[str, str] = {}
_chunk_capitals: dict[str, int] = {}


def _remember(chunk: str) -> None:
    words = list(map(_word, _WORD.findall(chunk)))
    _chunk_terms[chunk] = "".join([word.term + " " for word in words])
    capitals = sum(map(_LONG_CAPITALS, words))
    if capitals:
        _chunk_capitals[chunk] = capitals


# A word with apostrophes inside ("Don't", "isn’t", "we're", "O'Brien"); the index splits
# it at them, like every tokenizer that reads words as letter and digit runs.
_APOSTROPHE_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)+", re.UNICODE)
_POSSESSIVE = re.compile(r"[^\W_]+['’]s", re.IGNORECASE | re.UNICODE)


def contraction_terms(text: str) -> frozenset[str]:
    """The terms of the pieces of words written with an apostrophe (but a possessive
    's): "Don't" -> {"don", "t"}, "DON'T" -> {"qqdon", "t"}. A piece such as "don" or
    "isn" names nothing, yet is rare enough to look distinctive: what picks a paper's
    distinctive terms leaves these out. (The words stay in the index as they are: a
    query typing "don't" analyses it alike.)"""
    spans = [
        match.span()
        for match in _APOSTROPHE_WORD.finditer(text)
        if not _POSSESSIVE.fullmatch(match.group())
    ]
    if not spans:
        return frozenset()
    return frozenset(
        token.term for token in tokens(text) if any(s <= token.start < e for s, e in spans)
    )


def plain_terms(text: str) -> list[str]:
    """Folded words, unstemmed: how author names and categories are indexed."""
    return _WORD_PLAIN.findall(fold(text))


_WORD_PLAIN = re.compile(r"[^\W_]+", re.UNICODE)


def joined(words: list[str]) -> str:
    """Terms as stored in the database: one space between them."""
    return " ".join(words)


@dataclass(frozen=True)
class Phrase:
    """Index terms that must occur in this order, next to each other, in `field` (a paper
    field name; None: any field), or a `prefix` of a term."""

    terms: tuple[str, ...]
    field: str | None = None
    prefix: bool = False


@dataclass(frozen=True)
class AcronymDefinition:
    """An acronym and the words it stands for, as an abstract defines it."""

    acronym: str  # as written: MoE
    expansion: str  # folded words: mixture of experts

    @property
    def term(self) -> str:
        return acronym_term(self.acronym)

    @property
    def expansion_terms(self) -> tuple[str, ...]:
        return tuple(stem(word) for word in self.expansion.split())


def acronym_definitions(text: str) -> list[AcronymDefinition]:
    """Definitions like "Mixture-of-Experts (MoE)" or "retrieval-augmented generation (RAG)".

    The words before the parenthesis whose initials spell the acronym, in
    order (an initial may cover several letters of a word, and small words
    such as "of" may be skipped), make its expansion.
    """
    found: list[AcronymDefinition] = []
    for match in _PARENTHESIZED.finditer(text):
        acronym = _singular(match.group(1))
        if not is_acronym(acronym) or not acronym.isalpha() or len(acronym) > 10:
            continue
        before = _WORD_PLAIN.findall(text[max(0, match.start() - 120) : match.start()])
        expansion = _expansion(acronym, before)
        if expansion:
            found.append(AcronymDefinition(acronym, " ".join(fold(w) for w in expansion)))
    return found


def _expansion(acronym: str, before: list[str]) -> list[str] | None:
    """The shortest run of words ending `before` whose initials spell `acronym`."""
    if not before or before[-1].casefold() in STOP_WORDS:
        return None  # a definition ends in a content word ("graph network of (GNN)")
    letters = fold(acronym)
    capitals = [c.casefold() for c in acronym if c.isupper()]
    spelled = "".join(capitals) if len(capitals) >= 2 else ""
    # The first letter each spelling can begin with (`_spells`: the first word supplies
    # it, unless it is a stop word).
    initials = {letters[:1], spelled[:1]} - {""}
    size_limit = min(len(before), len(letters) + 3)
    folded = [fold(w) for w in before[len(before) - size_limit :]]
    for size in range(1, size_limit + 1):
        words = before[-size:]
        if words[0].casefold() in STOP_WORDS or not words[0][0].isalpha():
            continue
        first = folded[-size]
        if first[:1] not in initials and first not in STOP_WORDS:
            continue  # spells neither: saves the walk
        if _spells(letters, folded[-size:]) or (spelled and _spells(spelled, folded[-size:])):
            return words
    return None


def _spells(letters: str, words: list[str]) -> bool:
    """Whether each word in turn supplies the next letters of `letters` (a prefix of each
    word at least one letter long); stop words may supply none."""

    def walk(i: int, j: int) -> bool:
        if j == len(words):
            return i == len(letters)
        word = words[j]
        if word in STOP_WORDS and walk(i, j + 1):
            return True
        for take in range(min(len(word), len(letters) - i), 0, -1):
            if word[:take] == letters[i : i + take] and walk(i + take, j + 1):
                return True
        return False

    return bool(letters) and walk(0, 0)


def written_forms(sources: Iterable[str], matched: Sequence[tuple[str, ...]]) -> list[str]:
    """Each run of index terms in `matched` as the first of `sources` that has it writes it
    ("Video Generation", "RAG"), once: a term inside a phrase already shown is not repeated,
    and a run no source has is left out."""
    found = []
    for source in sources:
        source_tokens = list(tokens(source))
        found.append((source, source_tokens, [token.term for token in source_tokens]))
    shown: list[str] = []
    for terms in matched:
        if any(set(terms) <= {token.term for token in tokens(words)} for words in shown):
            continue  # a word of a phrase already shown
        for source, source_tokens, sequence in found:
            at = next(
                (
                    i
                    for i in range(len(sequence) - len(terms) + 1)
                    if tuple(sequence[i : i + len(terms)]) == terms
                ),
                None,
            )
            if at is not None:
                words = source[source_tokens[at].start : source_tokens[at + len(terms) - 1].end]
                shown.append(" ".join(words.split()))
                break
    return shown
