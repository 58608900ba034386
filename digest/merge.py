"""Merge stage of an ingest: records from several sources become one stored paper row each.

`store_records(session, entries, now, analyser)` stores the records of one input
(`Entry`: a parsed `PaperRecord`, or a `RawRecord` not parsed yet) `BATCH_SIZE` at a
time, in the caller's transaction, and counts them new, updated, unchanged or skipped.
digest.ingest reads and parses the inputs and calls it.

Each paper has one row, found by its arXiv id, else by its normalized title. An
input's copies of one paper from one source are first folded into one record
(`fold_repeats`: the last copy wins, its empty fields filled from earlier ones).
Merging keeps the richest metadata: a field is filled when it is empty, and
replaced when the new source ranks higher (`SOURCE_PRIORITY`: arXiv API >
arXiv listing > HF API > HF page); author names beat a bare count; categories
are united. An upvote count that differs from the paper's latest observation
is recorded with the ingest time, which is what trending is computed from.

Each stored paper also gets its analysed terms (`digest.text`), which the
full-text index reads, and the acronyms its abstract defines ("Mixture-of-Experts
(MoE)"), which expand queries both ways.

In each batch, the papers its records may belong to are read with one statement
per 500 arXiv ids (and, for records no stored arXiv id claims, per 500 titles),
each with its sources and latest upvote observation; the records are merged in
memory in input order, and the changes are written with a few bulk statements.
Each paper source keeps the hash of the record it last gave: a record with that
hash again was merged already, so only its upvote count is looked at, and terms
and acronyms are computed again only when a paper's text changed. A parser that
can (HF JSON) hashes each raw entry without parsing it (`RawRecord`), so an entry
seen before is never parsed; other records are hashed once parsed (`record_hash`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from digest import db
from digest.analysis import Analyser, Texts
from digest.models import Paper
from digest.sources import PaperRecord
from digest.sources.records import SOURCE_PRIORITY, RawRecord, normalize_title

# Records are stored BATCH_SIZE at a time: a few bulk statements per batch, and no more
# than one batch of papers held in memory, however large the input.
BATCH_SIZE = 1000

# The columns of a stored paper (papers.search_vector, on PostgreSQL, is generated).
_COLUMNS = tuple(column.key for column in Paper.__table__.columns if column.key != "id")
_TEXT_COLUMNS = ("title", "abstract", "authors", "categories")
_TERM_COLUMNS = ("title_terms", "abstract_terms", "author_terms", "category_terms")

# Paper column <- PaperRecord attribute, for the fields merged one to one.
_FILLED_FIELDS = {
    "abstract": "abstract",
    "organization": "organization",
    "published_on": "published_on",
    "source_url": "url",
    "pdf_link": "pdf_url",
    "github_url": "github_url",
    "project_url": "project_url",
}


def record_hash(record: PaperRecord) -> str:
    """What a record says about its paper, hashed: everything but its source and upvotes.

    Merging is idempotent, so a record whose hash its source already stored changes
    nothing but (maybe) the upvote history.
    """
    content = (
        record.title,
        record.arxiv_id,
        record.abstract,
        record.authors,
        record.author_count,
        record.organization,
        record.published_on,
        record.categories,
        record.url,
        record.pdf_url,
        record.github_url,
        record.project_url,
    )
    return hashlib.blake2b(repr(content).encode(), digest_size=16).hexdigest()


def _new_row(record: PaperRecord, title_key: str, now: datetime) -> dict[str, Any]:
    return {
        "key": record.arxiv_id or f"title:{title_key}",
        "arxiv_id": record.arxiv_id,
        "title_key": title_key,
        "title": record.title,
        "abstract": record.abstract,
        "authors": "\n".join(record.authors),
        "author_count": len(record.authors) or record.author_count,
        "organization": record.organization,
        "published_on": record.published_on,
        "categories": " ".join(record.categories),
        "source_url": record.url,
        "pdf_link": record.pdf_url,
        "github_url": record.github_url,
        "project_url": record.project_url,
        "upvotes": None,
        "first_seen_at": now,
        "updated_at": now,
    } | dict.fromkeys(_TERM_COLUMNS, "")


def _merge(row: dict[str, Any], sources: Iterable[str], record: PaperRecord) -> None:
    """Fold `record` into a paper's columns, keeping the richest metadata."""
    seen = max((SOURCE_PRIORITY.get(source, 0) for source in sources), default=0)
    better = SOURCE_PRIORITY.get(record.source, 0) > seen
    if record.arxiv_id and not row["arxiv_id"]:
        row["arxiv_id"] = record.arxiv_id
        row["key"] = record.arxiv_id
    if better and record.title:
        row["title"] = record.title
        row["title_key"] = normalize_title(record.title)
    for column, attribute in _FILLED_FIELDS.items():
        value = getattr(record, attribute)
        if value and (better or not row[column]):
            row[column] = value
    if record.authors and (better or not row["authors"]):
        row["authors"] = "\n".join(record.authors)
    names = sum(1 for name in row["authors"].split("\n") if name)
    row["author_count"] = names or max(row["author_count"] or 0, record.author_count or 0) or None
    categories = row["categories"].split()
    merged = (
        list(record.categories) + categories if better else categories + list(record.categories)
    )
    row["categories"] = " ".join(dict.fromkeys(merged))


# "No observation yet".
_NONE: tuple[datetime, int] = (datetime.min, -1)

# What a batch stores: records, and entries not parsed yet (`RawRecord`).
Entry = PaperRecord | RawRecord


def _known(entry: RawRecord, sources: dict[str, str | None] | None) -> bool:
    """Whether the stored paper with the entry's arXiv id has this entry from its source."""
    return bool(sources and entry.content_hash and sources.get(entry.source) == entry.content_hash)


class _Stored:
    """A paper while a batch merges records into it."""

    __slots__ = (
        "arxiv_id",
        "changes",
        "id",
        "latest",
        "loaded",
        "order",
        "row",
        "sources",
        "stored_sources",
    )

    def __init__(
        self,
        paper_id: int | None,
        arxiv_id: str | None,
        order: int,
        sources: dict[str, str | None],
    ) -> None:
        self.id = paper_id  # None until a new paper is inserted
        self.arxiv_id = arxiv_id
        self.order = order  # title matches go to the oldest paper: stored ids, then new ones
        self.row: dict[str, Any] | None = None  # every column, once needed (a new paper's)
        self.changes: dict[str, Any] = {}  # columns set while `row` was not loaded
        self.loaded: dict[str, Any] | None = None  # a stored paper's columns as loaded
        self.sources = sources  # source -> hash of the record it last gave
        self.stored_sources = dict(sources)
        self.latest: tuple[datetime, int] = _NONE  # the latest upvote observation


class _Batch:
    """Merges one batch of records into the papers they belong to, then writes it in bulk."""

    def __init__(
        self, session: Session, entries: Sequence[Entry], now: datetime, analyser: Analyser
    ) -> None:
        self.session = session
        self.analyser = analyser
        self.now = now
        self.by_arxiv: dict[str, _Stored] = {}
        self.by_title: dict[str, list[_Stored]] = {}
        # One upvote observation per paper per ingest: a feed that gives a paper twice
        # (the same arXiv id or title) must not record a gain between its two counts.
        self.observations: dict[_Stored, int] = {}
        self.observed_before: dict[_Stored, tuple[datetime, int]] = {}
        self.new: list[_Stored] = []
        self.papers: list[_Stored] = []
        self.skipped: list[str] = []  # entries that turned out unparseable, reported
        found = db.stored_papers(session, "arxiv_id", [e.arxiv_id for e in entries if e.arxiv_id])
        known = {paper.arxiv_id: paper.sources for paper in found.values()}
        # An unparsed entry whose source gave this very entry before stays unparsed.
        records: list[Entry] = []
        for entry in entries:
            if isinstance(entry, RawRecord) and not _known(entry, known.get(entry.arxiv_id)):
                try:
                    entry = entry.parse()
                except ValueError as exc:
                    self.skipped.append(str(exc))
                    continue
            records.append(entry)
        self.records = records
        self.title_keys = [
            normalize_title(r.title) if isinstance(r, PaperRecord) else "" for r in records
        ]
        self.hashes = [
            r.content_hash if r.content_hash or isinstance(r, RawRecord) else record_hash(r)
            for r in records
        ]
        titles = [
            key
            for r, key in zip(records, self.title_keys, strict=True)
            if isinstance(r, PaperRecord) and r.arxiv_id not in known
        ]
        found.update(db.stored_papers(session, "title_key", titles))
        self.stored: dict[int, _Stored] = {}
        for paper_id in sorted(found):
            stored = found[paper_id]
            paper = _Stored(paper_id, stored.arxiv_id, paper_id, stored.sources)
            if stored.latest is not None:
                paper.latest = stored.latest
            self.stored[paper_id] = paper
            self.papers.append(paper)
            self._index(paper, stored.title_key)
        self._prefetch()

    def _index(self, paper: _Stored, title_key: str) -> None:
        if paper.arxiv_id:
            self.by_arxiv[paper.arxiv_id] = paper
        candidates = self.by_title.setdefault(title_key, [])
        candidates.append(paper)
        if len(candidates) > 1:
            candidates.sort(key=lambda candidate: candidate.order)

    def _find(self, arxiv_id: str | None, title_key: str) -> _Stored | None:
        """The paper with this arXiv id, else the oldest one with this normalized title."""
        if arxiv_id and arxiv_id in self.by_arxiv:
            return self.by_arxiv[arxiv_id]
        for paper in self.by_title.get(title_key, ()):
            # A title match with a *different* arXiv id is another paper of the same name.
            if not arxiv_id or paper.arxiv_id in (None, arxiv_id):
                return paper
        return None

    def _prefetch(self) -> None:
        """Load, in bulk, the columns of the stored papers that records will change.

        A record its source gave before needs none. (Merges inside the batch can still
        send a record elsewhere: `_load` then fetches that one paper.)
        """
        rows: set[int] = set()
        for record, title_key, content_hash in zip(
            self.records, self.title_keys, self.hashes, strict=True
        ):
            if isinstance(record, RawRecord):
                continue
            paper = self._find(record.arxiv_id, title_key)
            if (
                paper is not None
                and paper.id is not None
                and (paper.sources.get(record.source) != content_hash)
            ):
                rows.add(paper.id)
        for paper_id, row in db.paper_rows(self.session, rows).items():
            self.stored[paper_id].row = row
            self.stored[paper_id].loaded = dict(row)

    def _load(self, paper: _Stored) -> dict[str, Any]:
        if paper.row is None:
            assert paper.id is not None
            paper.row = db.paper_rows(self.session, [paper.id])[paper.id]
            paper.loaded = dict(paper.row)
            paper.row.update(paper.changes)
            paper.changes = {}
        return paper.row

    def _set(self, paper: _Stored, column: str, value: object) -> None:
        """Set a column without loading the paper's other columns."""
        if paper.row is None:
            paper.changes[column] = value
        else:
            paper.row[column] = value

    def store(self, index: int) -> str:
        """Merge the batch's record `index`; 'new', 'updated', 'unchanged' or 'skipped'."""
        entry, content_hash = self.records[index], self.hashes[index]
        if isinstance(entry, PaperRecord):
            return self._store(entry, self.title_keys[index], content_hash)
        paper = self.by_arxiv.get(entry.arxiv_id or "")
        if paper is None or paper.sources.get(entry.source) != content_hash:
            # The batch merged another record of this source into its paper before.
            try:
                record = entry.parse()
            except ValueError as exc:
                self.skipped.append(str(exc))
                return "skipped"
            return self._store(record, normalize_title(record.title), content_hash)
        # Merged already: only its upvote count may be news.
        if entry.upvotes is not None and self._observe(paper, entry.upvotes):
            self._set(paper, "updated_at", self.now)
            return "updated"
        return "unchanged"

    def _store(self, record: PaperRecord, title_key: str, content_hash: str | None) -> str:
        paper = self._find(record.arxiv_id, title_key)
        outcome = "unchanged"
        if paper is None:
            paper = _Stored(None, record.arxiv_id, 2**62 + len(self.new), {})
            paper.row = _new_row(record, title_key, self.now)
            self.new.append(paper)
            self.papers.append(paper)
            self._index(paper, title_key)
            outcome = "new"
        elif paper.sources.get(record.source) != content_hash:
            row = self._load(paper)
            before = dict(row)
            _merge(row, paper.sources, record)
            if row != before:
                outcome = "updated"
                if row["arxiv_id"] != before["arxiv_id"] or row["title_key"] != before["title_key"]:
                    self._reindex(paper, before)
        grew = record.source not in paper.sources
        paper.sources[record.source] = content_hash
        if record.upvotes is not None:
            grew = self._observe(paper, record.upvotes) or grew
        if grew and outcome == "unchanged":
            outcome = "updated"
        if outcome == "updated":
            self._set(paper, "updated_at", self.now)
        return outcome

    def _reindex(self, paper: _Stored, before: dict[str, Any]) -> None:
        assert paper.row is not None
        if before["arxiv_id"]:
            self.by_arxiv.pop(before["arxiv_id"], None)
        old = self.by_title.get(before["title_key"], [])
        if paper in old:
            old.remove(paper)
        paper.arxiv_id = paper.row["arxiv_id"]
        self._index(paper, paper.row["title_key"])

    def _observe(self, paper: _Stored, upvotes: int) -> bool:
        """Record an upvote count that differs from the latest observation.

        A second count for the paper in this batch replaces the first (the later record
        wins), and is dropped when it is the count observed before the batch.
        """
        if paper in self.observations:
            latest = self.observed_before[paper]
            del self.observations[paper]
        else:
            latest = paper.latest
            self.observed_before[paper] = latest
        if latest is not _NONE and latest[1] == upvotes:
            if paper.latest != latest:
                paper.latest = latest
                self._set(paper, "upvotes", upvotes)
            return False
        self.observations[paper] = upvotes
        if latest is _NONE or latest[0] <= self.now:
            self._set(paper, "upvotes", upvotes)
            paper.latest = (self.now, upvotes)
        return True

    def write(self) -> None:
        """Write what the batch changed: new and updated papers, their terms, acronyms,
        sources and observations, a few statements in all."""
        papers = self.papers
        analysed: list[_Stored] = []
        texts: list[Texts] = []
        for paper in papers:
            row, loaded = paper.row, paper.loaded
            if row is not None and (
                loaded is None or any(row[c] != loaded[c] for c in _TEXT_COLUMNS)
            ):
                analysed.append(paper)
                texts.append((row["title"], row["abstract"], row["authors"], row["categories"]))
        analyses = self.analyser.analyse(texts)
        for paper, (terms, _) in zip(analysed, analyses, strict=True):
            paper.row.update(terms)  # type: ignore[union-attr]
        ids = db.insert_papers(self.session, [{c: p.row[c] for c in _COLUMNS} for p in self.new])  # type: ignore[index]
        for paper in self.new:
            paper.id = ids[paper.row["key"]]  # type: ignore[index]
        updates = []
        for paper in papers:
            changed = dict(paper.changes)
            if paper.loaded is not None and paper.row is not None:
                changed.update((c, v) for c, v in paper.row.items() if paper.loaded[c] != v)
            if changed:
                updates.append({"id": paper.id} | changed)
        db.update_papers(self.session, updates)
        db.replace_acronyms(
            self.session,
            [p.id for p in analysed if p.loaded is not None],  # type: ignore[misc]
            [
                row | {"paper_id": p.id}
                for p, (_, acronyms) in zip(analysed, analyses, strict=True)
                for row in acronyms
            ],
        )
        new_sources, changed_hashes = [], []
        for paper in papers:
            for source, content_hash in paper.sources.items():
                if source not in paper.stored_sources:
                    new_sources.append(
                        {
                            "paper_id": paper.id,
                            "source": source,
                            "first_seen_at": self.now,
                            "content_hash": content_hash,
                        }
                    )
                elif paper.stored_sources[source] != content_hash:
                    changed_hashes.append(
                        {"paper_id": paper.id, "source": source, "content_hash": content_hash}
                    )
        observations = [
            {"paper_id": paper.id, "observed_at": self.now, "upvotes": upvotes}
            for paper, upvotes in self.observations.items()
        ]
        db.store_paper_links(self.session, new_sources, changed_hashes, observations)


def _identity(entry: Entry) -> tuple[str, str] | None:
    """What makes two entries of one input the same paper from the same source: its arXiv
    id, else its normalized title (None: an entry not parsed yet that has no id)."""
    if entry.arxiv_id:
        return entry.source, entry.arxiv_id
    if isinstance(entry, PaperRecord):
        return entry.source, "title:" + normalize_title(entry.title)
    return None


_FOLDED = tuple(
    f.name for f in dataclasses.fields(PaperRecord) if f.name not in ("source", "content_hash")
)


def _fold(copies: list[PaperRecord]) -> PaperRecord:
    """One record of a paper an input gives several times: the last copy, each field it
    leaves empty (None, "" or no items; a count of 0 is a count) taken from the latest
    copy before it that has one."""
    last = copies[-1]
    filled: dict[str, Any] = {}
    for name in _FOLDED:
        if getattr(last, name) in (None, "", ()):
            given = [
                getattr(c, name) for c in copies[:-1] if getattr(c, name) not in (None, "", ())
            ]
            if given:
                filled[name] = given[-1]
    # Hashed from what it says (`record_hash`): the same copies fold the same way again.
    return dataclasses.replace(last, **filled, content_hash=None)


def fold_repeats(entries: Sequence[Entry]) -> tuple[list[Entry], int, list[str]]:
    """The entries of one input with each paper once per source: the entries, how many
    repeats were folded away, and the lines reporting copies that did not parse.

    A feed or page that gives a paper twice (`_identity`) with different contents would
    otherwise store one copy over the other at every ingest, so that an unchanged input
    always counted an update. Copies that say the same but their upvote counts stay
    unparsed: the last is kept, its count being the input's last word, as for any count.
    Others are folded into one record (`_fold`: the last copy wins, empty fields are
    filled from the earlier ones), in the place of the first.
    """
    places: dict[tuple[str, str], list[int]] = {}
    for index, entry in enumerate(entries):
        identity = _identity(entry)
        if identity is not None:
            places.setdefault(identity, []).append(index)
    repeated = [indexes for indexes in places.values() if len(indexes) > 1]
    if not repeated:
        return list(entries), 0, []
    kept: dict[int, Entry | None] = dict(enumerate(entries))
    folded, skipped = 0, []
    for indexes in repeated:
        copies = [entries[index] for index in indexes]
        for index in indexes:
            kept[index] = None
        hashes = {c.content_hash if isinstance(c, RawRecord) else None for c in copies}
        if len(hashes) == 1 and None not in hashes:
            kept[indexes[0]] = copies[-1]
            folded += len(copies) - 1
            continue
        records: list[PaperRecord] = []
        for copy in copies:
            try:
                records.append(copy.parse() if isinstance(copy, RawRecord) else copy)
            except ValueError as exc:
                skipped.append(str(exc))
        if records:
            kept[indexes[0]] = _fold(records)
            folded += len(records) - 1
    return [entry for entry in kept.values() if entry is not None], folded, skipped


def store_records(
    session: Session, records: Sequence[Entry], now: datetime, analyser: Analyser
) -> tuple[dict[str, int], list[str]]:
    """Insert or merge records, BATCH_SIZE at a time, each paper once per source
    (`fold_repeats`): how many were new, updated, unchanged, skipped or folded into
    another copy of their paper ("repeated"), and the lines reporting entries skipped
    (unparseable)."""
    records, repeated, skipped = fold_repeats(records)
    counts = {
        "new": 0,
        "updated": 0,
        "unchanged": 0,
        "skipped": len(skipped),
        "repeated": repeated,
    }
    for start in range(0, len(records), BATCH_SIZE):
        batch = _Batch(session, records[start : start + BATCH_SIZE], now, analyser)
        for index in range(len(batch.records)):
            counts[batch.store(index)] += 1
        batch.write()
        skipped += batch.skipped
    return counts, skipped
