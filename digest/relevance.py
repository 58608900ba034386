"""Relevance: which papers a topic query matches, and how well, the same on every backend.

The database only finds candidates (`db.match_candidates`, through its full-text
index over the analysed terms of `digest.text`); the scoring is done here, in
Python, on the candidates' terms.

What a query means in this corpus (acronym expansions, spellings, like:ID terms)
is decided by `digest.query_plan.plan_query`.

Scoring (`rank`), for a candidate paper d:

    lexical(d) = sum over the query's word groups of BM25F(group)
                 + BM25F(the whole query as a phrase) + 0.5 * BM25F(its words within 10 words)
    BM25F(x)   = idf(x) * tf * (k1 + 1) / (tf + k1),  k1 = 1.2
    tf         = 3 * tf_title / (0.5 + 0.5 * len_title / avg_title)
                 + tf_abstract / (0.25 + 0.75 * len_abstract / avg_abstract)
                 + tf_authors_and_categories
    idf(x)     = ln(1 + (N - df + 0.5) / (df + 0.5))   (df, N: the whole corpus)

Each occurrence counts 1 in tf, except that a word the query typed, found through its
Snowball stem but written in the paper as a derivation of it, counts DERIVED_WEIGHT =
0.5 (a phrase: the product over its words): for `optimizer`, "optimal" and
"optimization" count half, "optimizers" and "optimiser" in full. The same word is
`text.same_word`: an inflection (plural, -ed/-ing, -ise/-ize), or a verb and its action
noun (segmented, segmentation); agent nouns, adjectives and the like are derivations,
and so is the action noun of a typed participle (`text.counts_as_typed`: "distribution"
for `distributed training`).
The written words come from the candidates' stored titles and abstracts, so the
database index (stems only) and the candidates are the same on every backend.

so an exact phrase beats words close together, which beat words anywhere, and
the title weighs three times the abstract. A paper that names the query only in
passing, its title not at all and its abstract each time as one example in a
list or as future work ("such as", "including", "e.g.", "for example", "future
work" a few words before its most distinctive word), has lexical(d) multiplied by
0.3. Then pseudo-relevance feedback: the
tf-idf centroid of the 10 best papers by `lexical` (weighted by it; each of
them compared with the other nine) describes what the topic is about here, and

    relevance(d) = lexical(d) * cosine(d, centroid), divided by its maximum

in (0, 1], the best match scoring 1: papers that merely mention the words, far from what the best
matches are about, fall behind (and below the selection's cutoff). Matches are
ordered by

    weight(d) = relevance(d) * (1.5 if d's title names every word group of the query)

(`Match.weight`; a derivation of a typed word does not name it): a paper whose
title names the topic is nearly always about it, so it goes ahead of papers whose
abstracts merely use the words more; the
selection's cutoff compares relevance(d), so the bonus reorders what is shown,
never adds to it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from sys import intern

from sqlalchemy.orm import Session

from digest import db
from digest.cache import BoundedCache
from digest.models import Paper
from digest.query import Query
from digest.query_plan import Plan, plan_query
from digest.text import (
    STOP_WORDS,
    Phrase,
    counts_as_typed,
    fold,
    words,
    written_forms,
)

K1 = 1.2
TITLE_WEIGHT = 3.0
TITLE_B = 0.5
ABSTRACT_B = 0.75
PHRASE_WEIGHT = 1.0
NEAR_WEIGHT = 0.5
NEAR_WINDOW = 10
FEEDBACK_PAPERS = 10
FEEDBACK_EXPONENT = 1.0
TITLE_BONUS = 1.5  # Match.weight
# A paper whose abstract names the query only in passing (each time in a list or as
# future work: after "such as", "including", "e.g.", "for example", "future work" a
# few words before) and whose title does not name it weighs PASSING_WEIGHT.
PASSING_WEIGHT = 0.3
PASSING_REACH = 6
PASSING_CUES = frozenset({"includ"})
PASSING_PAIRS = frozenset(
    {("such", "as"), ("e", "g"), ("for", "exampl"), ("futur", "work"), ("futur", "direct")}
)
# An occurrence of a typed query word written only as a derivation of it (the same
# Snowball stem, another derivational ending: "optimal" or "optimization" for the query
# `optimizer`) counts DERIVED_WEIGHT of one written as the word, an inflection of it
# (optimizers, optimiser), or its verb or action noun (segmented for segmentation):
# `text.counts_as_typed`.
DERIVED_WEIGHT = 0.5
CANDIDATE_LIMIT = 400  # candidates rescored per query, the index's best first
PAPER_CACHE = 1024  # papers whose analysis a run keeps (`Corpus`; about 25 KB each)


@dataclass
class Corpus:
    """Corpus statistics for one run: size, average lengths, document frequencies.

    Also caches the term positions and tf-idf vectors of the `PAPER_CACHE` papers used
    last, so a run that evaluates many topics analyses a paper they share once, in
    memory that does not grow with the corpus.
    """

    session: Session
    _size: db.CorpusSize | None = None
    _df: dict[str, int] = field(default_factory=dict)
    _papers: BoundedCache[int, _Indexed] = field(default_factory=lambda: BoundedCache(PAPER_CACHE))
    _vectors: BoundedCache[int, dict[str, float]] = field(
        default_factory=lambda: BoundedCache(PAPER_CACHE)
    )

    @property
    def size(self) -> db.CorpusSize:
        if self._size is None:
            self._size = db.corpus_size(self.session)
        return self._size

    def df(self, terms: Iterable[str]) -> dict[str, int]:
        wanted = set(terms)
        missing = [term for term in wanted if term not in self._df]
        if missing:
            self._df.update(db.document_frequencies(self.session, missing))
        return {term: self._df[term] for term in wanted}

    def idf(self, df: int) -> float:
        n = max(self.size.papers, df)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def papers(self, ids: Sequence[int]) -> dict[int, _Indexed]:
        found = self._papers.get_many(
            ids,
            lambda missing: {
                paper_id: _Indexed(stored)
                for paper_id, stored in db.indexed_papers(self.session, missing).items()
            },
        )
        return {paper_id: found[paper_id] for paper_id in ids if paper_id in found}

    def prepare_vectors(self, papers: dict[int, _Indexed]) -> None:
        """Fetch, in one go, the document frequencies the papers' vectors need."""
        missing = [pid for pid in papers if self._vectors.lookup(pid) is None]
        self.df({t for pid in missing for t in (*papers[pid].title, *papers[pid].abstract)})

    def vector(self, paper_id: int, paper: _Indexed) -> dict[str, float]:
        """The paper's normalized tf-idf vector (title counted twice, no stop words)."""
        if (vector := self._vectors.lookup(paper_id)) is None:
            counts = Counter(
                term
                for term in [*paper.title, *paper.title, *paper.abstract]
                if term not in STOP_WORDS and not term.isdigit()
            )
            df = self.df(counts)
            weights = {t: (1 + math.log(n)) * self.idf(df[t]) for t, n in counts.items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            vector = {t: w / norm for t, w in weights.items()}
            self._vectors.put(paper_id, vector)
        return vector


class _Indexed:
    """A paper's terms with their positions, per field, and its title and abstract as
    written (their words, `written`, are worked out when first asked for)."""

    def __init__(self, paper: db.IndexedPaper) -> None:
        self.title = paper.title
        self.abstract = paper.abstract
        self.other = paper.other
        self.fields = {"title": _positions(paper.title), "abstract": _positions(paper.abstract)}
        self.fields["other"] = _positions(paper.other)
        self._texts = {"title": paper.title_text, "abstract": paper.abstract_text}
        self._words: dict[str, list[str]] = {}

    def written(self, where: str) -> list[str] | None:
        """The words of field `where` as written, folded, one for each term (None for a
        field without text, or whose text no longer gives its terms one for one)."""
        if where not in self._words:
            if where not in self._texts:
                return None
            # Interned, and the text let go: a cached paper keeps a list of pointers to
            # words every paper shares (about 2 KB), not its own copies (about 12 KB).
            self._words[where] = [intern(fold(word)) for word in words(self._texts.pop(where))]
        found = self._words[where]
        return found if len(found) == len(getattr(self, where)) else None


def _positions(terms: list[str]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for position, term in enumerate(terms):
        found.setdefault(term, []).append(position)
    return found


# --- scoring ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """A paper a query matches: relevance in (0, 1] (what a cutoff compares), the index
    terms that matched, and whether its title names every word of the query."""

    paper_id: int
    relevance: float
    matched: tuple[tuple[str, ...], ...]
    titled: bool = False

    @property
    def weight(self) -> float:
        """What orders matches: relevance, raised by TITLE_BONUS when the title names the
        query (reordering what a cutoff keeps, never keeping more or fewer)."""
        return self.relevance * (TITLE_BONUS if self.titled else 1.0)


class Ranking(list[Match]):
    """`rank`'s matches, the most relevant first; `capped` when the index had more
    candidates than were rescored (`limit`), so the count is a lower bound."""

    capped: bool = False


def _starts(paper: _Indexed, phrase: Phrase, where: str) -> list[int]:
    """Where `phrase` occurs in the field `where` (the positions of its first terms)."""
    positions = paper.fields[where]
    if phrase.prefix:
        return [i for term, p in positions.items() if term.startswith(phrase.terms[0]) for i in p]
    first = positions.get(phrase.terms[0], [])
    if len(phrase.terms) == 1:
        return first
    rest = [set(positions.get(term, ())) for term in phrase.terms[1:]]
    return [i for i in first if all(i + j + 1 in r for j, r in enumerate(rest))]


class _Forms:
    """How much each occurrence of a term in a paper's field counts: 1, or DERIVED_WEIGHT
    when the term stands for a typed query word and the paper writes a derivation of it."""

    def __init__(self, paper: _Indexed, where: str, typed: dict[str, frozenset[str]]) -> None:
        self.terms: list[str] = getattr(paper, where)
        self.typed = typed
        self.written = paper.written(where) if typed else None

    def weight(self, at: int) -> float:
        if self.written is None:
            return 1.0
        meant = self.typed.get(self.terms[at])
        if meant is None or any(counts_as_typed(self.written[at], word) for word in meant):
            return 1.0
        return DERIVED_WEIGHT

    def run(self, at: int, size: int) -> float:
        """The weight of the `size` terms from `at` on, together."""
        return math.prod(self.weight(i) for i in range(at, at + size))


def _occurrences(
    paper: _Indexed, phrase: Phrase, where: str, typed: dict[str, frozenset[str]]
) -> list[tuple[int, float]]:
    """Where `phrase` occurs in field `where` and what each occurrence weighs (`_Forms`)."""
    starts = _starts(paper, phrase, where)
    if not starts or phrase.prefix or typed.keys().isdisjoint(phrase.terms):
        return [(i, 1.0) for i in starts]
    forms = _Forms(paper, where, typed)
    return [(i, forms.run(i, len(phrase.terms))) for i in starts]


def _in_passing(paper: _Indexed, phrases: Iterable[Phrase]) -> bool:
    """Whether the abstract names `phrases` only in passing: every occurrence a few words
    after a cue of a list or of future work ("such as", "including", "future work")."""
    spots = [
        i
        for phrase in phrases
        if phrase.field in (None, "abstract")
        for i in _starts(paper, phrase, "abstract")
    ]
    return bool(spots) and all(_after_cue(paper.abstract, i) for i in spots)


def _after_cue(terms: list[str], at: int) -> bool:
    before = terms[max(0, at - PASSING_REACH) : at]
    return bool(PASSING_CUES.intersection(before)) or bool(
        PASSING_PAIRS.intersection(pairwise(before))
    )


def _field_counts(
    paper: _Indexed, phrases: Iterable[Phrase], typed: dict[str, frozenset[str]] | None = None
) -> tuple[float, float, float, float]:
    """The weighed occurrences of `phrases` in the title, the abstract and the rest, and
    how many in the title count in full (`_occurrences`).

    An occurrence inside a longer phrase's occurrence counts once, as the longer one:
    "neural architecture search" is not also "architecture search" (a definition and
    its shortening, `query_plan._shortened`)."""
    typed = typed or {}
    counts = {"title": [0.0, 0.0], "abstract": [0.0, 0.0], "other": [0.0, 0.0]}
    fields = {None: ("title", "abstract", "other"), "title": ("title",)}
    fields.update({"abstract": ("abstract",), "authors": ("other",), "categories": ("other",)})
    longest_first = sorted(phrases, key=lambda p: -len(p.terms))
    for where, total in counts.items():
        covered: set[int] = set()
        for phrase in longest_first:
            if where not in fields.get(phrase.field, ()):
                continue
            size = len(phrase.terms)
            for at, weight in _occurrences(paper, phrase, where, typed if where != "other" else {}):
                span = range(at, at + size)
                if not covered.issuperset(span):
                    total[0] += weight
                    total[1] += weight >= 1.0
                    covered.update(span)
    return counts["title"][0], counts["abstract"][0], counts["other"][0], counts["title"][1]


def _sequence_counts(
    paper: _Indexed, where: str, plan: Plan, blocked: frozenset[str]
) -> tuple[float, float, tuple[str, ...] | None]:
    """Occurrences of the query's words as an exact phrase and within NEAR_WINDOW words,
    each weighed by its words (`_Forms`), and the terms of the first exact occurrence
    (`blocked` acronyms left out)."""
    terms: list[str] = getattr(paper, where)
    positions = paper.fields[where]
    spots = [
        sorted({i for t in words - blocked for i in positions.get(t, ())})
        for words in plan.sequence
    ]
    wholes = [i for t in plan.whole if t not in blocked for i in positions.get(t, ())]
    first: tuple[str, ...] | None = (terms[min(wholes)],) if wholes else None
    exact: float = len(wholes)
    if any(not s for s in spots):
        return exact, exact, first
    forms = _Forms(paper, where, plan.typed)
    sets = [set(s) for s in spots]
    starts = [i for i in spots[0] if all(i + j in sets[j] for j in range(1, len(sets)))]
    exact += sum(forms.run(i, len(sets)) for i in starts)
    if starts:
        first = tuple(terms[starts[0] : starts[0] + len(sets)])
    content = [s for s, words in zip(spots, plan.sequence, strict=True) if words - STOP_WORDS]
    words = content or spots
    anchor = min(words, key=len)
    near = 0.0
    for i in anchor:
        nearby = [[j for j in s if abs(j - i) <= NEAR_WINDOW] for s in words if s is not anchor]
        if all(nearby):  # each other word weighed at its best occurrence nearby
            near += forms.weight(i) * math.prod(max(map(forms.weight, js)) for js in nearby)
    return exact, max(near, exact), first


class _Scorer:
    def __init__(self, corpus: Corpus) -> None:
        self.size = corpus.size

    def bm25f(
        self, paper: _Indexed, counts: tuple[float, float, float, float], idf: float
    ) -> float:
        title, abstract, other, _ = counts
        if not (title or abstract or other):
            return 0.0
        avg_title, avg_abstract = self.size.title_terms, self.size.abstract_terms
        tf = (
            TITLE_WEIGHT * title / (1 - TITLE_B + TITLE_B * len(paper.title) / avg_title)
            + abstract / (1 - ABSTRACT_B + ABSTRACT_B * len(paper.abstract) / avg_abstract)
            + other
        )
        return idf * tf * (K1 + 1) / (tf + K1)


def _phrase_df(phrase: Phrase, df: dict[str, int]) -> int:
    return min(df.get(term, 0) for term in phrase.terms) if not phrase.prefix else 0


def rank(
    session: Session,
    plan: Plan,
    corpus: Corpus,
    *,
    window: db.Window | None = None,
    limit: int = CANDIDATE_LIMIT,
) -> Ranking:
    """The papers `plan` matches (within `window`, if given), the most relevant first."""
    if plan.everything:
        return Ranking(Match(paper_id, 1.0, ()) for paper_id in db.window_papers(session, window))
    if plan.empty:
        return Ranking()
    ids = db.match_candidates(
        session, plan.retrieval_groups(), plan.excluded, window=window, limit=limit
    )
    ranking = Ranking()
    ranking.capped = len(ids) >= limit
    ids = [paper_id for paper_id in ids if paper_id not in plan.like_ids]
    papers = corpus.papers(ids)
    all_terms = {t for g in plan.groups for p in g.phrases for t in p.terms}
    all_terms |= set(plan.like) | set(plan.whole)
    df = corpus.df(all_terms)
    group_idf = [
        corpus.idf(max((_phrase_df(p, df) for p in g.phrases), default=0) or len(ids))
        for g in plan.groups
    ]
    sequence_idf = sum(group_idf[: len(plan.sequence)]) if plan.sequence else 0.0
    if plan.sequence:
        # The sequence's groups are the single-word ones: weigh the phrase by their idf.
        words = [corpus.idf(max(df.get(t, 0) for t in terms)) for terms in plan.sequence]
        sequence_idf = sum(words)
    definitions = db.defined_acronyms(session, plan.meanings, ids) if plan.meanings else {}
    scorer = _Scorer(corpus)
    lexical: dict[int, float] = {}
    matched: dict[int, list[tuple[str, ...]]] = {}
    titled: set[int] = set()
    for paper_id in ids:
        paper = papers.get(paper_id)
        if paper is None:
            continue
        blocked = _other_meanings(plan, definitions.get(paper_id, {}))
        score, found, named = _lexical(
            paper, plan, scorer, group_idf, sequence_idf, corpus, df, blocked
        )
        if score > 0:
            lexical[paper_id] = score
            matched[paper_id] = found
        if named:
            titled.add(paper_id)
    if not lexical:
        return ranking
    relevance = _feedback(lexical, papers, corpus)
    found_matches = [
        Match(pid, relevance[pid], tuple(matched[pid]), pid in titled) for pid in relevance
    ]
    found_matches.sort(key=lambda m: (-m.weight, -lexical[m.paper_id], -m.paper_id))
    ranking.extend(found_matches)
    return ranking


def _other_meanings(plan: Plan, defined: dict[str, set[str]]) -> frozenset[str]:
    """The query's acronyms that are another word in this paper: it defines them only as
    something the query does not mean, or does not define them and the corpus mostly
    means something else by them."""
    return frozenset(
        acronym
        for acronym, meant in plan.meanings.items()
        if (acronym in defined and not defined[acronym] & meant)
        or (acronym not in defined and acronym in plan.foreign)
    )


def _lexical(
    paper: _Indexed,
    plan: Plan,
    scorer: _Scorer,
    group_idf: list[float],
    sequence_idf: float,
    corpus: Corpus,
    df: dict[str, int],
    blocked: frozenset[str] = frozenset(),
) -> tuple[float, list[tuple[str, ...]], bool]:
    """The paper's lexical score, the terms that matched, and whether its title names
    every word group of the query."""
    score = 0.0
    found: list[tuple[str, ...]] = []
    in_title = False  # the title names one of the word groups
    titled = bool(plan.groups)  # ... every one of them
    rarest: tuple[float, list[Phrase]] = (-1.0, [])  # the most distinctive group
    for group, idf in zip(plan.groups, group_idf, strict=True):
        phrases = [p for p in group.phrases if len(p.terms) > 1 or p.terms[0] not in blocked]
        counts = _field_counts(paper, phrases, plan.typed)
        value = scorer.bm25f(paper, counts, idf)
        if value == 0:
            return 0.0, [], False
        score += value
        in_title = in_title or counts[0] > 0
        titled = titled and counts[3] > 0  # the word or an inflection, not a derivation
        if idf > rarest[0]:
            rarest = (idf, phrases)
        found.extend(p.terms for p in phrases if any(_field_counts(paper, [p])))
    if plan.like:
        similar = 0.0
        for term, weight in plan.like.items():
            counts = _field_counts(paper, [Phrase((term,))])
            if any(counts):
                similar += weight * scorer.bm25f(paper, counts, corpus.idf(df.get(term, 0)))
                found.append((term,))
        if similar == 0:
            return 0.0, [], False
        score += similar
    if plan.sequence:
        title = _sequence_counts(paper, "title", plan, blocked)
        abstract = _sequence_counts(paper, "abstract", plan, blocked)
        exact = (title[0], abstract[0], 0, 0)
        score += PHRASE_WEIGHT * scorer.bm25f(paper, exact, sequence_idf)
        phrase = title[2] or abstract[2]
        if phrase:
            found.insert(0, phrase)
        near = (title[1], abstract[1], 0, 0)
        score += NEAR_WEIGHT * scorer.bm25f(paper, near, sequence_idf)
    if not in_title and _in_passing(paper, rarest[1]):
        score *= PASSING_WEIGHT
    return score, list(dict.fromkeys(t for t in found if t[0] not in STOP_WORDS)), titled


def _feedback(
    lexical: dict[int, float], papers: dict[int, _Indexed], corpus: Corpus
) -> dict[int, float]:
    """relevance = lexical * cosine to the best papers' centroid, relative to the best."""
    best = max(lexical.values())
    if len(lexical) == 1:
        return dict.fromkeys(lexical, 1.0)
    top = sorted(lexical, key=lambda pid: (-lexical[pid], -pid))[:FEEDBACK_PAPERS]
    corpus.prepare_vectors({pid: papers[pid] for pid in lexical})
    centroid: dict[str, float] = {}
    for pid in top:
        for term, weight in corpus.vector(pid, papers[pid]).items():
            centroid[term] = centroid.get(term, 0.0) + weight * lexical[pid] / best
    similarity = {
        pid: sum(w * centroid.get(t, 0.0) for t, w in corpus.vector(pid, papers[pid]).items())
        for pid in lexical
    }
    # Leave one out: a feedback paper is compared with the others, not with itself (its own
    # contribution is its weight, its vector being unit length); every similarity is then
    # the weighted mean over the papers it was compared with.
    total = sum(lexical[pid] / best for pid in top)
    for pid in lexical:
        own = lexical[pid] / best if pid in top else 0.0
        similarity[pid] = (similarity[pid] - own) / ((total - own) or 1.0)
    combined = {
        pid: lexical[pid] * max(similarity[pid], 0.0) ** FEEDBACK_EXPONENT for pid in lexical
    }
    top_score = max(combined.values())
    if top_score <= 0:
        return {pid: score / best for pid, score in lexical.items()}
    # Relative to the best match, which scores 1.
    return {pid: score / top_score for pid, score in combined.items()}


def search(session: Session, query: Query) -> tuple[Plan, list[Match]]:
    """What `query` matches in the whole database, the most relevant first (no cutoff)."""
    corpus = Corpus(session)
    plan = plan_query(session, query, corpus)
    return plan, rank(session, plan, corpus)


def written_words(paper: Paper, matched: Sequence[tuple[str, ...]]) -> list[str]:
    """The matched terms as the paper writes them ("Video Generation", "RAG"), title first."""
    return written_forms((paper.title, paper.abstract), matched)
