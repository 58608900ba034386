"""What a topic query means in this corpus: the phrases to find, and their senses.

Query analysis (`plan_query`):

* each word becomes its index term (Snowball stem, or the acronym term for a word
  typed as an acronym: ``RAG``); a lowercase word that the corpus writes more often
  as an acronym than as a word (``rag``, ``moe``) also matches the acronym, while
  ``code`` never matches "CoDE";
* acronyms expand both ways from the definitions mined at ingest: ``MoE`` also
  matches "mixture of experts" and ``mixture of experts`` (or
  ``mixture-of-experts``) also matches "MoE"; a definition of three words or more
  also matches without its commonest first or last word when the shorter words
  mostly mean it (`_shortened`: "machine translation" for ``NMT``);
* an acronym means what each paper says: a paper that defines it only as something
  the query does not mean, or does not define it while the corpus mostly defines it
  as something else, does not match it (`Plan.meanings`, `Plan.foreign`);
* a word with an -ise/-ize ending also matches the other spelling, if papers use it;
* a compound written closed also matches it hyphenated, and two words (hyphenated,
  quoted or typed apart) also match them written as one, if papers write them so
  (`_compound`: ``pretraining`` and "pre-training", ``fine tuning`` and "finetuning");
* the words typed (folded) are kept with their index terms (`Plan.typed`), so that
  scoring can tell a paper writing the word or an inflection of it from one writing
  only a derivation with the same stem (optimizer, not optimization or optimal);
* ``like:ID`` becomes the paper's `LIKE_TERMS` most distinctive terms (tf-idf over
  its title, counted twice, and abstract; never a piece of a contraction such as the
  "don" of "Don't"), any of which may match, each weighed by its tf-idf (Lucene's
  MoreLikeThis); the paper itself is left out.

The plan is scored by `digest.relevance`.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from digest import db
from digest.models import Paper
from digest.query import Query, Term
from digest.text import (
    ACRONYM_MARK,
    STOP_WORDS,
    Phrase,
    acronym_term,
    contraction_terms,
    fold,
    is_acronym,
    other_spelling,
    plain_terms,
    stem,
    tokens,
    word_term,
    written_forms,
)

if TYPE_CHECKING:
    from digest.relevance import Corpus

TRUNCATE_EXPANSIONS = True
SHORTENED_MIN_SHARE = 0.5
SHORTEN_FIRST = True
LIKE_TERMS = 10
# A word written closed ("pretraining") also matches its hyphenated form ("pre-training")
# when at least this share of the papers with the two words in a row write the hyphen.
COMPOUND_MIN_SHARE = 0.5
COMPOUND_SAMPLE = 200  # papers read to tell (the index has no hyphens)


@dataclass(frozen=True)
class Group:
    """Required: any of `phrases` must occur."""

    phrases: tuple[Phrase, ...]


@dataclass(frozen=True)
class Plan:
    """A query analysed into index terms, with what it expanded to."""

    groups: tuple[Group, ...] = ()
    excluded: tuple[Phrase, ...] = ()
    # The query's words in order (each a set of single terms), scored as a phrase and
    # for proximity when there are several; `whole` are acronyms standing for all of them.
    sequence: tuple[frozenset[str], ...] = ()
    whole: tuple[str, ...] = ()
    like: dict[str, float] = field(default_factory=dict)
    like_ids: tuple[int, ...] = ()
    # Acronym terms -> the definitions (expansion terms) the query means by them: a paper
    # that defines the acronym only as something else does not match it ("CL" for
    # curriculum learning does not match `continual learning`), nor does a paper that
    # does not define it when the corpus mostly defines it as something else (`foreign`).
    meanings: dict[str, frozenset[str]] = field(default_factory=dict)
    foreign: frozenset[str] = frozenset()
    # Index terms of the words the query typed (not acronyms, expansions, prefixes or
    # like:ID terms) -> those words, folded: "optim" -> {"optimizer"} for `optimizer`.
    typed: dict[str, frozenset[str]] = field(default_factory=dict)
    expansions: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    everything: bool = False

    @property
    def empty(self) -> bool:
        return not self.everything and not self.groups and not self.like

    def retrieval_groups(self) -> list[list[Phrase]]:
        groups = [list(group.phrases) for group in self.groups]
        if self.like:
            groups.append([Phrase((term,)) for term in self.like])
        return groups


# Endings Snowball takes off (or rewrites), so a word starting with a prefix may stem to
# less than the prefix: optimization -> optim. `_prefix_stems` completes a prefix with them.
# fmt: off
_ENDINGS = (
    "e", "es", "ed", "ing", "ings", "ion", "ions", "ation", "ations", "ational", "ator",
    "ators", "ement", "ements", "ment", "ments", "ence", "ences", "ance", "ances", "er", "ers",
    "ism", "isms", "ist", "ists", "ity", "ities", "ive", "ives", "ize", "izes", "ized", "izing",
    "ization", "izations", "ise", "ises", "ised", "ising", "isation", "isations", "al", "als",
    "ally", "ly", "ness", "ous", "able", "ible", "ant", "ants", "ent", "ents", "ic", "ics",
    "ical", "ically", "s",
)
# fmt: on


def _prefix_stems(prefix: str) -> tuple[str, ...]:
    """The stems shorter than `prefix` that words starting with it may have (optimiz ->
    optim), which a prefix match on the stored stems would miss (`plan_query` keeps those
    the corpus has)."""
    if not prefix.isalpha() or prefix.startswith(ACRONYM_MARK):
        return ()
    # Every word made of the prefix and an ending, including the endings that begin
    # inside the prefix (optimi + zation: optim + ization).
    words = {prefix} | {
        prefix[:cut] + ending
        for cut in range(3, len(prefix) + 1)
        for ending in _ENDINGS
        if ending.startswith(prefix[cut:]) and len(ending) > len(prefix) - cut
    }
    found = {stem(word) for word in words}
    return tuple(sorted(t for t in found if len(t) < len(prefix) and t.isalnum()))


def _phrase(term: Term) -> Phrase:
    if term.field in ("authors", "categories"):
        words = tuple(plain_terms(" ".join(term.words)))
        return Phrase(words, term.field, term.prefix)
    if term.prefix:
        word = term.words[0]
        root = word if is_acronym(word) else fold(word)
        stemmed = stem(root) if not is_acronym(word) else acronym_term(word)
        return Phrase((stemmed if root.startswith(stemmed) else root,), term.field, True)
    return Phrase(tuple(word_term(word) for word in term.words), term.field)


def _typed_word(term: Term, word: str) -> bool:
    """Whether `word` of `term` is an ordinary word of the text that scoring weighs by its
    written form (`Plan.typed`): not an acronym, a prefix, or in authors or categories."""
    return (
        term.field in (None, "title", "abstract")
        and not term.prefix
        and not is_acronym(word)
        and fold(word).isalpha()
    )


def _show(phrase: Phrase, written: dict[str, str]) -> str:
    return " ".join(written.get(t, t.removeprefix(ACRONYM_MARK)) for t in phrase.terms)


def plan_query(session: Session, query: Query, corpus: Corpus) -> Plan:
    """Analyse `query` into index terms, with acronym expansions and like:ID terms."""
    if query.everything:
        return Plan(everything=True)
    expansions: list[str] = []
    written: dict[str, str] = {}
    typed_words: dict[str, set[str]] = {}
    groups: list[list[Phrase]] = []
    for group in query.groups:
        phrases: list[Phrase] = []
        for term in group:
            phrase = _phrase(term)
            phrases.append(phrase)
            for word, index_term in zip(term.words, phrase.terms, strict=False):
                written.setdefault(index_term, word)
                if _typed_word(term, word):
                    typed_words.setdefault(index_term, set()).add(fold(word))
            if phrase.prefix and term.field in (None, "title"):
                # A prefix of the words, not of their stems: optimiz* finds "optimization".
                shorter_stems = _prefix_stems(phrase.terms[0])
                known = corpus.df(shorter_stems)
                for shorter in (t for t in shorter_stems if known[t]):
                    phrases.append(Phrase((shorter,), phrase.field))
                    written.setdefault(shorter, f"{term.words[0]}*")
        groups.append(phrases)
    typed = [len(phrases) for phrases in groups]  # before any expansion

    # British and American spellings find each other: quantisation, quantization.
    for group, phrases in zip(query.groups, groups, strict=True):
        for term, phrase in zip(group, list(phrases), strict=False):
            other = other_spelling(term.words[0]) if len(term.words) == 1 else None
            if other is None or phrase.prefix or term.field not in (None, "title", "abstract"):
                continue
            variant = word_term(other)
            if variant != phrase.terms[0] and corpus.df([variant])[variant]:
                phrases.append(Phrase((variant,), phrase.field))
                written.setdefault(variant, other)
                typed_words.setdefault(variant, set()).add(fold(other))
                expansions.append(f"{term.words[0]} → {other}")

    # Closed and hyphenated compounds find each other: pretraining, pre-training.
    for group, phrases in zip(query.groups, groups, strict=True):
        for term, phrase in zip(group, list(phrases), strict=False):
            if phrase.prefix or not all(_typed_word(term, word) for word in term.words):
                continue
            compound = _compound(term.words, phrase.field, corpus)
            if compound is not None:
                phrases.append(compound[0])
                expansions.append(_compound_noted(compound, written, typed_words, term.words))

    # A lowercase word the corpus mostly writes as an acronym (rag, moe) means the acronym.
    singles = {p.terms[0]: p for g in groups for p in g if len(p.terms) == 1 and p.field is None}
    acronyms = {
        t: acronym_term(written.get(t, t))
        for t, p in singles.items()
        if not p.prefix and not t.startswith(ACRONYM_MARK) and t.isalpha()
    }
    df = corpus.df([*acronyms, *acronyms.values()])
    for phrases in groups:
        for phrase in list(phrases):
            if len(phrase.terms) != 1 or phrase.field is not None or phrase.prefix:
                continue
            acronym = acronyms.get(phrase.terms[0])
            if acronym and df[acronym] > df[phrase.terms[0]]:
                phrases.append(Phrase((acronym,)))
                written[acronym] = written.get(phrase.terms[0], phrase.terms[0])

    # Acronym -> its definitions (those at least a quarter as common as the most common).
    meanings: dict[str, set[str]] = {}
    foreign: set[str] = set()
    for phrases in groups:
        for phrase in list(phrases):
            if len(phrase.terms) == 1 and phrase.terms[0].startswith(ACRONYM_MARK):
                if phrase.field not in (None, "title"):
                    continue
                found = db.acronym_expansions(session, phrase.terms[0])
                top = found[0][2] if found else 0
                for terms, words, count in found:
                    if count * 4 >= top:
                        meanings.setdefault(phrase.terms[0], set()).add(terms)
                        expansion = Phrase(tuple(terms.split()), phrase.field)
                        phrases.append(expansion)
                        expansions.append(f"{_show(phrase, written)} → {words}")
                        short = _shortened(expansion, phrase, corpus)
                        if short is not None:
                            phrases.append(short)
                            kept = _written_part(words, expansion, short)
                            expansions.append(f"{_show(phrase, written)} → {kept}")

    # Words -> the acronym they define: a quoted phrase, or a run of plain words, which
    # may be hyphenated ("retrieval-augmented generation" -> RAG).
    whole: list[str] = []
    single_run = [
        i
        for i, phrases in enumerate(groups)
        if typed[i] == 1 and phrases[0].field is None and not phrases[0].prefix
    ]
    runs: dict[str, list[int]] = {}
    for i, phrases in enumerate(groups):
        for phrase in phrases[: typed[i]]:  # typed, not an expansion equal to one
            if len(phrase.terms) > 1 and phrase.field is None:
                runs.setdefault(" ".join(phrase.terms), [i])
    for start in range(len(single_run)):
        for end in range(start + 2, len(single_run) + 1):
            indexes = single_run[start:end]
            if indexes != list(range(indexes[0], indexes[-1] + 1)):
                break
            key = " ".join(" ".join(groups[i][0].terms) for i in indexes)
            runs.setdefault(key, indexes)
    for key, indexes in runs.items():
        for acronym, shown, count in db.acronyms_for(session, key)[:1]:
            meanings.setdefault(acronym, set()).add(key)
            if count < db.acronym_expansions(session, acronym)[0][2]:
                foreign.add(acronym)
            for i in indexes:
                groups[i].append(Phrase((acronym,)))
            if len(indexes) > 1:
                whole.append(acronym)
            expansions.append(f"{' '.join(written.get(t, t) for t in key.split())} → {shown}")
        # Two words typed apart also match them written as one: fine tuning, finetuning.
        apart = [query.groups[i][0] for i in indexes]
        if len(apart) == 2 and all(_typed_word(term, term.words[0]) for term in apart):
            typed_pair = tuple(term.words[0] for term in apart)
            compound = _compound(typed_pair, None, corpus)
            if compound is not None:
                for i in indexes:
                    groups[i].append(compound[0])
                whole.extend(compound[0].terms)
                expansions.append(_compound_noted(compound, written, typed_words, typed_pair))

    # The words in order, a hyphenated word's parts each in its place.
    sequence = tuple(
        position
        for i in single_run
        for position in (
            [frozenset(t for p in groups[i] if len(p.terms) == 1 for t in p.terms) - set(whole)]
            if len(groups[i][0].terms) == 1
            else [frozenset({t}) for t in groups[i][0].terms]
        )
    )
    if len(single_run) < 2:
        sequence = ()
    like: dict[str, float] = {}
    like_ids: list[int] = []
    missing: list[str] = []
    for reference in query.likes:
        paper = db.find_paper_by_reference(session, reference)
        if paper is None:
            missing.append(reference)
            continue
        like_ids.append(paper.id)
        chosen = like_terms(paper, corpus)
        for like_term, weight in chosen.items():
            like[like_term] = max(like.get(like_term, 0.0), weight)
        # The terms as the paper writes them, one line: "like:42 → floating, FP16, point".
        like_words = ", ".join(_written_like_term(paper, term) for term in chosen)
        expansions.append(f"like:{reference} → {like_words}")
    excluded = tuple(_phrase(term) for term in query.excluded)
    return Plan(
        groups=tuple(Group(tuple(dict.fromkeys(phrases))) for phrases in groups),
        excluded=excluded,
        sequence=sequence if len(sequence) > 1 else (),
        whole=tuple(whole),
        like=like,
        like_ids=tuple(like_ids),
        meanings={acronym: frozenset(terms) for acronym, terms in meanings.items()},
        foreign=frozenset(foreign - {a for a, terms in meanings.items() if len(terms) > 1}),
        typed={term: frozenset(words) for term, words in typed_words.items()},
        expansions=tuple(dict.fromkeys(expansions)),
        missing=tuple(missing),
    )


def _compound(
    words: tuple[str, ...], field: str | None, corpus: Corpus
) -> tuple[Phrase, tuple[str, ...]] | None:
    """The other way to write a compound, with its words (folded), if the corpus uses it:
    two typed words ("pre-training", "fine tuning" in quotes) as one ("pretraining") when
    papers write that; one word as two joined by a hyphen (`_hyphenated`)."""
    folded = tuple(fold(word) for word in words)
    if len(folded) == 2 and not STOP_WORDS.intersection(folded):
        joined = "".join(folded)
        term = word_term(joined)
        return (Phrase((term,), field), (joined,)) if corpus.df([term])[term] else None
    return _hyphenated(folded[0], field, corpus) if len(folded) == 1 else None


def _compound_noted(
    compound: tuple[Phrase, tuple[str, ...]],
    written: dict[str, str],
    typed_words: dict[str, set[str]],
    typed: tuple[str, ...],
) -> str:
    """Records a compound's words as written and typed; says what it expanded to."""
    variant, variant_words = compound
    for index_term, word in zip(variant.terms, variant_words, strict=True):
        written.setdefault(index_term, word)
        typed_words.setdefault(index_term, set()).add(word)
    return f"{' '.join(typed)} → {'-'.join(variant_words)}"


def _hyphenated(
    word: str, field: str | None, corpus: Corpus
) -> tuple[Phrase, tuple[str, ...]] | None:
    """`word` split in two where papers write the parts in a row, mostly with a hyphen
    between them ("pre-training" for `pretraining`, "multi-modal" for `multimodal`); the
    split the most papers write. A space alone is not enough: "not able" is not
    "notable"."""
    splits = [
        (word[:cut], word[cut:])
        for cut in range(2, len(word) - 2)
        if word[:cut] not in STOP_WORDS and word[cut:] not in STOP_WORDS
    ]
    if len(word) < 6 or not word.isalpha() or not splits:
        return None
    terms = {split: (word_term(split[0]), word_term(split[1])) for split in splits}
    df = corpus.df({t for pair in terms.values() for t in pair})
    best: tuple[int, Phrase, tuple[str, ...]] | None = None
    for (left, right), pair in terms.items():
        if not (df[pair[0]] and df[pair[1]]):
            continue
        phrase = Phrase(pair, field)
        having = db.match_candidates(corpus.session, [[phrase]])
        if not having or (best is not None and len(having) <= best[0]):
            continue
        # The right part's words as its stem and the typed part begin them: tun- (tuning).
        start = os.path.commonprefix([pair[1], right])  # noqa: RUF071 (strings, not paths)
        pattern = re.compile(rf"\b{left}\s*[-\u2010\u2011]\s*{start}", re.IGNORECASE)
        sample = db.papers_by_id(corpus.session, having[:COMPOUND_SAMPLE]).values()
        hyphen = sum(1 for p in sample if pattern.search(fold(f"{p.title} {p.abstract}")))
        if hyphen >= COMPOUND_MIN_SHARE * len(sample):
            best = (len(having), phrase, (left, right))
    return (best[1], best[2]) if best else None


def _shortened(expansion: Phrase, acronym: Phrase, corpus: Corpus) -> Phrase | None:
    """A definition of three content words or more without its first or last word, when
    that word is its least distinctive one and the shorter words mostly mean the same
    thing: "retrieval augmented" for "retrieval augmented generation", which papers also
    write "retrieval-augmented LLMs", and "machine translation" for "neural machine
    translation" (NMT); but not "low rank" for "low rank adaptation" (LoRA), which
    low-rank compression papers write too.

    Mostly: at least SHORTENED_MIN_SHARE of the papers with the shorter words also have
    the whole definition or the acronym; and not all of them, or the shortening finds
    nothing more."""
    terms = expansion.terms
    content = [t for t in terms if t not in STOP_WORDS]
    if not TRUNCATE_EXPANSIONS or len(content) < 3:
        return None
    df = corpus.df(content)
    commonest = max(df.values())
    # An edge that is a stop word (a feed's "graph neural network of (GNN)") is not the
    # definition's least distinctive word: it is kept.
    if df.get(terms[-1]) == commonest and terms[-2] not in STOP_WORDS:
        short = Phrase(terms[:-1], expansion.field)
    elif SHORTEN_FIRST and df.get(terms[0]) == commonest and terms[1] not in STOP_WORDS:
        short = Phrase(terms[1:], expansion.field)
    else:
        return None
    having = len(db.match_candidates(corpus.session, [[short]]))
    meaning = len(db.match_candidates(corpus.session, [[short], [expansion, acronym]]))
    # It must find papers the definition does not, or it only repeats it.
    return short if SHORTENED_MIN_SHARE * having <= meaning < having else None


def _written_part(words: str, whole: Phrase, part: Phrase) -> str:
    """The written words of `whole` that its shortening `part` keeps: "machine
    translation" of "neural machine translation"."""
    found = list(tokens(words))
    if len(found) != len(whole.terms):
        return " ".join(part.terms)
    if part.terms == whole.terms[1:]:
        return words[found[1].start :]
    return words[: found[-2].end]


def _written_like_term(paper: Paper, term: str) -> str:
    """A like: term as the paper writes it, a capitalised word in lower case (a title's
    capitals are the title's: "floating", but "FP16", "DeepSpeed"); the term itself if
    the text lacks it."""
    written = written_forms((paper.title, paper.abstract), [(term,)])
    if not written:
        return term.removeprefix(ACRONYM_MARK)
    word = written[0]
    return word.lower() if word[:1].isupper() and word[1:].islower() else word


def like_terms(paper: Paper, corpus: Corpus) -> dict[str, float]:
    """The paper's `LIKE_TERMS` most distinctive terms with their tf-idf, the best 1.0."""
    indexed = corpus.papers([paper.id]).get(paper.id)
    if indexed is None:
        return {}
    # The pieces of "Don't" and "isn't" are rare words, not what the paper is about.
    pieces = contraction_terms(paper.title) | contraction_terms(paper.abstract)
    counts = Counter(
        term
        for term in [*indexed.title, *indexed.title, *indexed.abstract]
        if term not in STOP_WORDS and not term.isdigit() and len(term) > 2 and term not in pieces
    )
    df = corpus.df(counts)
    # A term no other paper has finds nothing; one most papers have says nothing.
    scores = {
        term: (1 + math.log(n)) * corpus.idf(df[term])
        for term, n in counts.items()
        if 1 < df[term] < corpus.size.papers / 4
    }
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:LIKE_TERMS]
    top = best[0][1] if best else 1.0
    return {term: score / top for term, score in best}
