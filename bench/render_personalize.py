"""Per-recipient cost of a digest email: render once + personalize, against re-rendering.

Loads the bundled seeds into a temporary SQLite file, selects a 20-paper digest,
then times, side by side and interleaved in rounds so machine noise hits both:

* encoded: the message's bytes assembled from pieces encoded once (what
  `digest send` does per recipient over SMTP);
* personalize: the shared rendering's placeholders substituted, plus the MIME
  message built and serialized (what a preview does);
* re-render: Jinja + premailer for each recipient, plus the same message;
* substitute / render: the same two without building the MIME message.

Run: .venv/bin/python bench/render_personalize.py [--recipients 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from digest import db
from digest.config import DigestSettings, MailConfig
from digest.ingest import ingest_inputs
from digest.message import DigestMailer
from digest.models import Subscriber, Topic
from digest.render import Renderer
from digest.resources import resource_dir
from digest.select import SelectionRun

NOW = datetime(2026, 11, 25, 7, tzinfo=UTC)
DAY = date(2026, 11, 25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        factory = db.session_factory(db.open_database(f"sqlite:///{Path(folder) / 'b.sqlite3'}"))
        ingest_inputs(
            factory, [str(resource_dir("seeds"))], now=NOW - timedelta(hours=1), max_bytes=10**8
        )
        session = factory()
        topics = [
            Topic(position=0, query="diffusion", label="Diffusion"),
            Topic(position=1, query="*"),
        ]
        probe = Subscriber(id=0, weekday=None, topics=topics)
        selection = SelectionRun(session, NOW, DigestSettings()).select(probe, DAY)
        papers = db.papers_by_id(session, [item.paper_id for item in selection.items])
        recipients = [
            Subscriber(id=n, email=f"user{n}@example.org", secret=f"secret{n}", topics=topics)
            for n in range(1, args.recipients + 1)
        ]
        mail = MailConfig("digest@example.org", "Papers Digest", None, "1 Rue Example, Paris")

        def mailer() -> DigestMailer:
            return DigestMailer(Renderer(), mail, "https://digest.example.org", "k" * 32)

        def personalize() -> None:
            m = mailer()
            for subscriber in recipients:
                rendered = m.rendered("content", selection.items, papers, DAY, False)
                m.message(subscriber, rendered, DAY, NOW).as_bytes()

        def encoded() -> None:
            m = mailer()
            for subscriber in recipients:
                rendered = m.rendered("content", selection.items, papers, DAY, False)
                m.encoded(subscriber, rendered, DAY, NOW)

        def rerender() -> None:
            m = mailer()
            for subscriber in recipients:
                rendered = m.renderer.render(selection.items, papers, digest_date=DAY)
                m.message(subscriber, rendered, DAY, NOW).as_bytes()

        def substitute_only() -> None:
            m = mailer()
            rendered = m.rendered("content", selection.items, papers, DAY, False)
            for subscriber in recipients:
                rendered.personalize(m.recipient(subscriber))

        def render_only() -> None:
            m = mailer()
            for subscriber in recipients:
                m.renderer.render(selection.items, papers, digest_date=DAY).personalize(
                    m.recipient(subscriber)
                )

        jobs = {
            "encoded": encoded,
            "personalize": personalize,
            "re-render": rerender,
            "substitute": substitute_only,
            "render": render_only,
        }
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.rounds):
            for name, job in jobs.items():
                start = time.perf_counter()
                job()
                times[name].append((time.perf_counter() - start) / len(recipients))

    print(f"{len(selection.items)} papers, {args.recipients} recipients, {args.rounds} rounds")
    for name, values in times.items():
        print(f"{name:>12}: {statistics.median(values) * 1000:8.2f} ms per recipient (median)")

    def ratio(slow: str, fast: str) -> float:
        return statistics.median(times[slow]) / statistics.median(times[fast])

    print(f"whole message: re-rendering costs {ratio('re-render', 'personalize'):.1f}x")
    print(f"message bytes: re-rendering costs {ratio('re-render', 'encoded'):.0f}x")
    print(f"HTML and text only: re-rendering costs {ratio('render', 'substitute'):.0f}x")


if __name__ == "__main__":
    main()
