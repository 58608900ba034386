"""SQLAlchemy 2 typed models. The schema itself is created by the Alembic migrations.

All timestamps are aware UTC datetimes in Python (`UTCDateTime`): `timestamptz`
on PostgreSQL, naive UTC text on SQLite, so both backends behave alike.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from urllib.parse import quote

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ARXIV_ABS = "https://arxiv.org/abs/"
ARXIV_PDF = "https://arxiv.org/pdf/"
HF_PAPERS = "https://huggingface.co/papers/"
HF_SEARCH = "https://huggingface.co/papers?q="


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime: `timestamptz` on PostgreSQL, naive UTC on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime")
        utc = value.astimezone(UTC)
        return utc if dialect.name == "postgresql" else utc.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Paper(Base):
    """One paper, whatever sources it came from.

    `key` is the stable identity: the arXiv id without version when known,
    otherwise ``title:`` plus the normalized title. `authors` holds one name
    per line and `categories` is space-separated. The `*_terms` columns hold
    the same fields analysed by `digest.text` (space-separated index terms),
    which is what the full-text index reads.
    """

    __tablename__ = "papers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(512), unique=True)
    arxiv_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    title_key: Mapped[str] = mapped_column(String(512), index=True)
    title: Mapped[str] = mapped_column(Text)
    abstract: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[str] = mapped_column(Text, default="")
    author_count: Mapped[int | None] = mapped_column(Integer)
    organization: Mapped[str | None] = mapped_column(Text)
    published_on: Mapped[date | None]
    categories: Mapped[str] = mapped_column(Text, default="")
    source_url: Mapped[str | None] = mapped_column(Text)
    pdf_link: Mapped[str | None] = mapped_column(Text)
    github_url: Mapped[str | None] = mapped_column(Text)
    project_url: Mapped[str | None] = mapped_column(Text)
    upvotes: Mapped[int | None] = mapped_column(Integer)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    title_terms: Mapped[str] = mapped_column(Text, default="")
    abstract_terms: Mapped[str] = mapped_column(Text, default="")
    author_terms: Mapped[str] = mapped_column(Text, default="")
    category_terms: Mapped[str] = mapped_column(Text, default="")

    sources: Mapped[list[PaperSource]] = relationship(
        back_populates="paper", cascade="all, delete-orphan", order_by="PaperSource.source"
    )
    observations: Mapped[list[UpvoteObservation]] = relationship(
        back_populates="paper",
        cascade="all, delete-orphan",
        order_by="UpvoteObservation.observed_at",
    )
    acronyms: Mapped[list[Acronym]] = relationship(cascade="all, delete-orphan")

    @property
    def author_names(self) -> list[str]:
        return [name for name in self.authors.split("\n") if name]

    @property
    def category_list(self) -> list[str]:
        return self.categories.split()

    @property
    def hf_url(self) -> str | None:
        return f"{HF_PAPERS}{self.arxiv_id}" if self.arxiv_id else None

    @property
    def abs_url(self) -> str | None:
        return f"{ARXIV_ABS}{self.arxiv_id}" if self.arxiv_id else self.source_url

    @property
    def pdf_url(self) -> str | None:
        return f"{ARXIV_PDF}{self.arxiv_id}" if self.arxiv_id else self.pdf_link

    @property
    def search_url(self) -> str:
        """A Hugging Face search for the title as stored (LaTeX and all): the last resort."""
        return f"{HF_SEARCH}{quote(self.title)}"

    @property
    def page_url(self) -> str:
        """The page a title links to: HF, else arXiv abs, else the source, else an HF search."""
        return self.hf_url or self.abs_url or self.search_url


class Acronym(Base):
    """An acronym a paper's abstract defines: "Mixture-of-Experts (MoE)"."""

    __tablename__ = "acronyms"

    paper_id: Mapped[int] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    term: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)  # qqmoe
    expansion_terms: Mapped[str] = mapped_column(String(300), primary_key=True, index=True)
    acronym: Mapped[str] = mapped_column(String(64))  # as written: MoE
    expansion: Mapped[str] = mapped_column(String(300))  # mixture of experts


class PaperSource(Base):
    """A kind of source a paper was seen in (hf_page, hf_api, arxiv_api, arxiv_rss)."""

    __tablename__ = "paper_sources"

    paper_id: Mapped[int] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The hash of the record this source last gave (of its raw entry, `RawRecord`, or else
    # digest.merge.record_hash): the same record again is merged already, so ingest only
    # compares its upvotes.
    content_hash: Mapped[str | None] = mapped_column(String(32))

    paper: Mapped[Paper] = relationship(back_populates="sources")


class UpvoteObservation(Base):
    """An upvote count seen at a time; recorded only when the count changed."""

    __tablename__ = "upvote_observations"
    __table_args__ = (Index("ix_upvote_observations_paper_time", "paper_id", "observed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[int] = mapped_column(ForeignKey("papers.id", ondelete="CASCADE"))
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    upvotes: Mapped[int] = mapped_column(Integer)

    paper: Mapped[Paper] = relationship(back_populates="observations")


# --- subscribers and what they receive -------------------------------------------

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Subscriber(Base):
    """A person who receives digests. `secret` keys their signed links (unsubscribe, manage)."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), index=True)
    timezone: Mapped[str] = mapped_column(String(64))
    send_hour: Mapped[int] = mapped_column(Integer)
    weekday: Mapped[int | None] = mapped_column(Integer)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirm_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the first of the notice emails since the address last answered went out
    # (`subscribers.request_subscription` waits longer after each).
    unanswered_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    topics: Mapped[list[Topic]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", order_by="Topic.position"
    )
    requests: Mapped[list[SubscriptionRequest]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="SubscriptionRequest.id"
    )

    @property
    def frequency(self) -> str:
        return "daily" if self.weekday is None else f"weekly ({WEEKDAYS[self.weekday]})"


class Topic(Base):
    """One of a subscriber's topics: a query in canonical form, with an optional label.

    `added_at` is when the subscriber started following this query (a new label keeps it,
    a changed query is a new topic): the topic's first digest after that looks back like
    a first digest (`digest.select`).
    """

    __tablename__ = "topics"
    __table_args__ = (UniqueConstraint("subscriber_id", "query"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    query: Mapped[str] = mapped_column(String(600), index=True)
    label: Mapped[str | None] = mapped_column(String(100))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)

    subscriber: Mapped[Subscriber] = relationship(back_populates="topics")

    @property
    def title(self) -> str:
        return self.label or self.query


class SubscriptionRequest(Base):
    """A subscription asked for on the public form, waiting for the address to confirm it.

    `preferences` is the request as JSON (`digest.preferences.Preferences`); nothing of it
    reaches the subscriber's row until the link in its own confirmation email is used.
    `sent_at` is set once that email went out (which retires the older requests).
    """

    __tablename__ = "subscription_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    preferences: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Digest(Base):
    """The content of one digest on one date, shared by every subscriber who gets the same."""

    __tablename__ = "digests"
    __table_args__ = (UniqueConstraint("digest_date", "content_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest_date: Mapped[date]
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # JSON {topic query: papers that matched beyond the caps}, for "N more matched".
    more_matched: Mapped[str] = mapped_column(Text, default="{}")

    items: Mapped[list[DigestItem]] = relationship(
        back_populates="digest", cascade="all, delete-orphan", order_by="DigestItem.position"
    )


class DigestItem(Base):
    """One paper in a digest, with the reason it is there."""

    __tablename__ = "digest_items"

    digest_id: Mapped[int] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[int] = mapped_column(ForeignKey("papers.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(String(600))
    topic_label: Mapped[str | None] = mapped_column(String(100))
    relevance: Mapped[float]
    score: Mapped[float]
    upvotes: Mapped[int | None] = mapped_column(Integer)
    upvote_gain: Mapped[int] = mapped_column(Integer)
    matched: Mapped[str] = mapped_column(Text, default="")  # the words that matched, ", "-joined

    digest: Mapped[Digest] = relationship(back_populates="items")
    paper: Mapped[Paper] = relationship()


class DeliveryStatus(StrEnum):
    """Where a delivery stands. Stored as these strings; `digest.ledger` moves rows
    between them (its transitions are the only writers of `Delivery.status`)."""

    QUEUED = "queued"  # planned, waiting for a sender
    EMPTY = "empty"  # planned, nothing to send (and send_empty is off)
    SENDING = "sending"  # claimed by a sender until its lease runs out
    SENT = "sent"  # the server accepted it
    DEFERRED = "deferred"  # a temporary failure: retried at next_attempt_at
    UNKNOWN = "unknown"  # may have been delivered (a crash, a lost reply): never resent alone
    FAILED = "failed"  # refused, or could not be made: not retried
    SKIPPED = "skipped"  # not sent on purpose (subscriber gone, send window missed)


# Deliveries whose papers count as received: never send those papers again.
RECEIVED_STATUSES = (DeliveryStatus.SENDING, DeliveryStatus.SENT, DeliveryStatus.UNKNOWN)
# Deliveries a sender may claim (when due), as SQL: literal, so that the planners of
# both backends can match it with the partial index on claimable rows.
CLAIMABLE_STATUSES = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)
CLAIMABLE_SQL = f"status IN ({', '.join(repr(str(status)) for status in CLAIMABLE_STATUSES)})"


class Delivery(Base):
    """The ledger: one row per subscriber per digest date, pointing at the shared digest."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "digest_date"),
        # The rows a sender may claim, in claim order (db.claim_delivery): the next
        # one is the first due entry.
        Index(
            "ix_deliveries_claimable",
            "digest_date",
            text("(next_attempt_at IS NOT NULL)"),
            "next_attempt_at",
            "id",
            sqlite_where=text(CLAIMABLE_SQL),
            postgresql_where=text(CLAIMABLE_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    digest_date: Mapped[date] = mapped_column(index=True)
    digest_id: Mapped[int | None] = mapped_column(ForeignKey("digests.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    selected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_reply: Mapped[str | None] = mapped_column(Text)
    # The latest `Topic.added_at` of the topics this digest was chosen with (None before
    # 0010_lookback: then `created_at`): a topic added later was not in it.
    topics_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    subscriber: Mapped[Subscriber] = relationship()
    digest: Mapped[Digest | None] = relationship()


class Lease(Base):
    """A named lease held by one process until `expires_at` (e.g. the one dispatcher)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobRun(Base):
    """One run of a scheduled job (ingest, dispatch), for `digest status`."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(32), index=True)
    holder: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool]
    summary: Mapped[str] = mapped_column(Text)
