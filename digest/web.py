"""Web stage: the Flask app behind every link in a digest, and the subscribe form.

`create_app(config=None)` builds the app from the same wiring as the CLI and
the scheduler (`digest.app.App`); `digest serve` runs it under waitress
(`digest.web_server`).
Pages (Jinja templates in templates/web/, with the email's look):

* `/` subscribe: email, optional name, topics (the query syntax of the CLI, with
  match counts and example titles from `/api/match` as you type), timezone
  (detected in the browser), send hour, daily or weekly. Submitting makes the
  address *pending* and emails a confirmation link; the answer is the same page
  whatever the address's state, so addresses cannot be enumerated. A submit with
  bad fields (here and on /manage) answers with every field's message at once,
  each by its field and all in a summary, and the values sent kept in the form.
* `/confirm/<token>` (expires after `web.confirm_hours`): a button that activates
  the subscription. Opening a link never changes anything: mail scanners fetch
  links with GET.
* `/manage/<token>`: topics, timezone, hour, frequency, a preview of the next
  digest, and unsubscribe (or subscribe again).
* `/unsubscribe/<token>` (and the older `/u/<token>`): GET asks, POST does it;
  the RFC 8058 one-click POST (`List-Unsubscribe=One-Click`, no cookie, no CSRF
  token) unsubscribes and answers 200.
* `/digest/<ref>`: the web copy of a sent digest, with no personal data (the
  older per-subscriber `/view/<token>` links redirect there).
* `/preview?topic=...`: a topic's page, where an email's "N more matched" leads: every
  paper its digest counts (`select.SelectionRun.topic_listing`, the count `/api/match`
  gives too), PAGE_SIZE per page, and a button to subscribe to it.

Security: tokens signed with itsdangerous and each subscriber's secret (see
`digest.links`); CSRF tokens on every form but the one-click POST; per-IP rate
limits (Flask-Limiter) and at most one email per address per
`web.resend_minutes`, fewer while they go unanswered. The security headers on
every response and the error pages (a bad, expired or revoked token gets the
same friendly 404 whether or not the address exists) are `digest.web_guard`'s.
Emails go out from a background thread (`digest.notices.Outbox`), so a form
answers at once and in the same time whether or not it sent one. The forms'
fields and their checks are `digest.web_forms`'.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Flask,
    Response,
    abort,
    flash,
    g,
    get_flashed_messages,
    redirect,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect, validate_csrf
from sqlalchemy.orm import Session
from werkzeug.middleware.proxy_fix import ProxyFix
from wtforms import ValidationError

from digest import db, links, web_guard
from digest.app import App
from digest.config import Config
from digest.config_values import canonical_timezones, iana_timezones
from digest.days import local_date
from digest.errors import SubscriberError
from digest.models import WEEKDAYS, Delivery, Digest, Subscriber, SubscriptionRequest
from digest.notices import WEEKDAY_NAMES, Outbox, frequency, topics_text
from digest.preferences import parse_topic, split_label
from digest.query import QueryError, parse_query
from digest.resources import resource_dir
from digest.schedule import NextDigest, upcoming_digest
from digest.select import SelectionRun, TopicListing
from digest.subscribers import (
    apply_preferences,
    confirm,
    find_request,
    purge_pending,
    request_subscription,
    requested,
)
from digest.views import (
    DigestView,
    build_view,
    liked_titles,
    paper_title,
    paper_view,
    quoted,
    topic_title,
)
from digest.web_forms import (
    TOPIC_FIELDS,
    FormValues,
    check_form,
    error_summary,
    form_from_request,
    form_from_subscriber,
    unknown_paper,
)
from digest.web_guard import csrf_error, error_page, page

log = logging.getLogger("digest.web")

MATCH_EXAMPLES = 3
PAGE_SIZE = 25  # papers per page of a topic's page
MAX_FORM_BYTES = 64 * 1024
FOREVER = timedelta(days=365 * 100)
SAVED = "saved"  # the flash category of a manage page's "Saved." (the message: whose page)


def when(coming: NextDigest | None, timezone: str, now: datetime) -> str:
    """When a digest goes out, in the subscriber's words: "at 07:00 on Friday 27 November
    (UTC)", or "shortly (it was due at ...)" once its send time has come."""
    if coming is None:
        return ""
    local = f"{coming.at.astimezone(ZoneInfo(timezone)):%H:%M on %A %d %B} ({timezone})"
    return f"shortly (it was due at {local})" if coming.at <= now else f"at {local}"


def status_text(subscriber: Subscriber) -> str:
    return {
        "unsubscribed": "you unsubscribed",
        "bounced": "your mail server refused our last email",
        "pending": "waiting for confirmation",
    }.get(subscriber.status, subscriber.status)


def create_app(config: Config | None = None, *, wiring: App | None = None) -> Flask:
    """The web front, built from `config` (default: loaded as the CLI loads it)."""
    wiring = wiring or (App.from_config(config) if config is not None else App())
    settings = wiring.config
    web = settings.web
    grace = timedelta(hours=settings.schedule.grace_hours)
    site_key = wiring.secret_key()
    wiring.engine()  # fail at start-up, not on the first request

    folder = resource_dir("templates") / "web"
    app = Flask(__name__, template_folder=str(folder), static_folder=str(folder / "static"))
    # "/manage//x" is not a token path: a 404, not a redirect to "/manage/x".
    app.url_map.merge_slashes = False
    app.jinja_env.filters["quoted"] = quoted
    app.config.update(
        SECRET_KEY=hmac.new(site_key.encode(), b"flask-session", hashlib.sha256).hexdigest(),
        SESSION_COOKIE_NAME="digest_session",
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.site.base_url.lower().startswith("https://"),
        MAX_CONTENT_LENGTH=MAX_FORM_BYTES,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session cookie
        TEMPLATES_AUTO_RELOAD=False,
    )
    if web.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=web.proxy_hops, x_proto=web.proxy_hops, x_host=web.proxy_hops
        )
    csrf = CSRFProtect(app)
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri="memory://",
        default_limits=[],
        headers_enabled=True,
    )
    outbox = Outbox(wiring)
    app.extensions["digest"] = wiring
    app.extensions["digest.outbox"] = outbox
    listed = list(canonical_timezones())

    def timezones_with(chosen: str) -> list[str]:
        """The listed zones, plus a chosen valid alias (a stored Asia/Calcutta) so it
        shows; a refused value is shown by the form beside its error."""
        if chosen in listed or chosen not in iana_timezones():
            return listed
        return sorted([*listed, chosen])

    weekdays = [
        {"key": key, "name": name} for key, name in zip(WEEKDAYS, WEEKDAY_NAMES, strict=True)
    ]
    confirm_for = timedelta(hours=web.confirm_hours)

    if warning := links.insecure_base_url(settings.site.base_url):
        log.warning("%s", warning)

    @app.before_request
    def read_clock() -> None:
        g.now = wiring.clock()

    @app.context_processor
    def site() -> dict[str, Any]:
        return {"site_name": settings.site.name, "postal_address": settings.mail.postal_address}

    web_guard.install(app)

    def sessions() -> Session:
        return wiring.sessions()()

    def find(session: Session, token: str, purpose: str) -> Subscriber | None:
        """The subscriber a token is for, if its signature holds (unknown ids look the same)."""
        subscriber_id = links.token_subscriber_id(token)
        subscriber = session.get(Subscriber, subscriber_id) if subscriber_id else None
        if subscriber is None:
            return None
        valid = links.verify_token(site_key, subscriber.secret, purpose, token) is not None
        return subscriber if valid else None

    def find_confirmation(
        session: Session, token: str
    ) -> tuple[Subscriber, SubscriptionRequest | None] | None:
        """The subscriber and the open request a confirmation token confirms, if it holds."""
        subscriber_id = links.token_subscriber_id(token)
        subscriber = session.get(Subscriber, subscriber_id) if subscriber_id else None
        if subscriber is None:
            return None
        claim = links.verify_confirm_token(site_key, subscriber.secret, token, g.now, confirm_for)
        if claim is None or claim.subscriber_id != subscriber.id:
            return None
        if claim.request is None:  # a link from before requests were kept apart
            return (subscriber, None) if subscriber.status in ("pending", "active") else None
        request = find_request(session, subscriber, claim.request)
        return None if request is None else (subscriber, request)

    def manage_url(subscriber: Subscriber) -> str:
        return links.subscriber_links(
            settings.site.base_url, site_key, subscriber.id, subscriber.secret
        ).manage

    def next_digest(session: Session, subscriber: Subscriber) -> NextDigest | None:
        """When `subscriber` gets their next digest (`schedule.next_digest`)."""
        return upcoming_digest(session, subscriber, g.now, grace)

    def next_digest_view(
        session: Session, subscriber: Subscriber, coming: NextDigest | None
    ) -> DigestView:
        """The digest `coming` (an ad hoc subscriber's: today's), as `digest preview` shows it."""
        day = coming.day if coming is not None else None
        mailer = wiring.mailer()
        view = mailer.rendered_for(session, subscriber, day, g.now, settings.digest)[1].view
        # "Nothing new today" only for today: the next digest may be another day's.
        return replace(view, today=local_date(g.now, subscriber.timezone))

    @app.get("/robots.txt")
    def robots() -> ResponseReturnValue:
        """Crawlers may read the subscribe and topic pages, never a token's page."""
        hidden = ("/confirm/", "/manage/", "/unsubscribe/", "/u/", "/digest/", "/view/", "/api/")
        lines = ["User-agent: *", *(f"Disallow: {path}" for path in hidden)]
        return Response("\n".join(lines) + "\n", 200, mimetype="text/plain")

    # --- subscribe --------------------------------------------------------------------

    def subscribe_form(
        values: FormValues, errors: dict[str, str], status: int
    ) -> ResponseReturnValue:
        return page(
            "subscribe.html",
            status,
            form=values.padded(),
            errors=errors,
            summary=error_summary(errors),
            timezones=timezones_with(values.timezone),
            weekdays=weekdays,
        )

    @app.get("/")
    def subscribe_page() -> ResponseReturnValue:
        values = FormValues(
            topics=[t.strip() for t in request.args.getlist("topic") if t.strip()][:TOPIC_FIELDS],
            timezone=settings.digest.default_timezone,
            hour=str(settings.digest.default_hour),
        )
        return subscribe_form(values, {}, 200)

    @app.post("/")
    @limiter.limit(web.subscribe_rate_limit)
    def subscribe_submit() -> ResponseReturnValue:
        values = form_from_request(request.form, settings.digest.default_timezone)
        with sessions() as session:
            preferences, errors = check_form(session, values, email=True)
        if preferences is None:
            return subscribe_form(values, errors, 400)
        with db.transaction(wiring.sessions()) as session:
            purge_pending(session, g.now, timedelta(days=web.pending_days))
            subscriber, kind, pending = request_subscription(
                session,
                values.email,
                preferences,
                now=g.now,
                resend_after=timedelta(minutes=web.resend_minutes),
                default_timezone=settings.digest.default_timezone,
                default_hour=settings.digest.default_hour,
            )
            subscriber_id = subscriber.id
            request_id = None if pending is None else pending.id
        if kind is not None:
            outbox.post(subscriber_id, kind, g.now, request_id)
        return page(
            "check_inbox.html",
            confirm_hours=f"{web.confirm_hours:g}",
            resend_minutes=f"{web.resend_minutes:g}",
        )

    def topic_listing(session: Session, query: str, label: str | None = None) -> TopicListing:
        """Every match of `query` that a digest counts, as of now (see `SelectionRun`)."""
        return SelectionRun(session, g.now, settings.digest).topic_listing(query, label)

    @app.get("/api/match")
    @limiter.limit(web.api_rate_limit)
    def match_api() -> ResponseReturnValue:
        # What the topic box holds: a label before '=' names the topic, it is not searched.
        _, text = split_label(request.args.get("q", ""))
        try:
            query = parse_query(text)
        except QueryError as exc:
            return {
                "query": None,
                "count": 0,
                "capped": False,
                "examples": [],
                "error": str(exc),
            }, 200
        with sessions() as session:
            if error := unknown_paper(session, query.canonical()):
                return {
                    "query": None,
                    "count": 0,
                    "capped": False,
                    "examples": [],
                    "error": error,
                }, 200
            listing = topic_listing(session, query.canonical())
            shown = listing.items.paper_ids[:MATCH_EXAMPLES]
            papers = db.papers_by_id(session, shown)
            examples = [paper_title(papers[pid]) for pid in shown]
        return {
            "query": query.canonical(),
            "count": len(listing.items),
            "capped": listing.capped,
            "days": listing.days,
            "examples": examples,
            "error": None,
        }

    # --- confirm ----------------------------------------------------------------------

    def confirm_page(
        session: Session, subscriber: Subscriber, request: SubscriptionRequest | None
    ) -> ResponseReturnValue:
        state = "active" if subscriber.status == "active" else "pending"
        coming = next_digest(session, subscriber) if state == "active" else None
        if state == "pending" and request is not None:
            subscriber = requested(subscriber, request)
        topics = topics_text(subscriber, session)
        return page(
            "confirm.html",
            state=state,
            email=subscriber.email,
            frequency=frequency(subscriber),
            topics=topics,
            next_send=when(coming, subscriber.timezone, g.now),
            manage_url=manage_url(subscriber),
        )

    def expired(session: Session, token: str) -> bool:
        """Whether `token` is a genuine confirmation link of a still pending request, too old."""
        subscriber_id = links.token_subscriber_id(token)
        subscriber = session.get(Subscriber, subscriber_id) if subscriber_id else None
        if subscriber is None or subscriber.status == "active":
            return False

        def holds(max_age: timedelta) -> bool:
            claim = links.verify_confirm_token(site_key, subscriber.secret, token, g.now, max_age)
            return claim is not None and claim.subscriber_id == subscriber.id

        return holds(FOREVER) and not holds(confirm_for)  # genuine, only too old

    @app.route("/confirm/<token>", methods=["GET", "POST"])
    def confirm_link(token: str) -> ResponseReturnValue:
        with db.transaction(wiring.sessions(), write=request.method == "POST") as session:
            found = find_confirmation(session, token)
            if found is None and expired(session, token):
                return error_page(
                    410,
                    "Link expired",
                    f"This confirmation link has expired (links work for "
                    f"{web.confirm_hours:g} hours). Subscribe again to get a new link.",
                )
            if found is None:
                abort(404)
            subscriber, pending = found
            if request.method == "POST":
                confirm(session, subscriber, pending, g.now)
            return confirm_page(session, subscriber, pending)

    # --- manage -----------------------------------------------------------------------

    def saved_redirect(subscriber: Subscriber, token: str) -> ResponseReturnValue:
        """Back to the manage page, which says "Saved." once: the mark is flashed in the
        session cookie (the CSRF token's), so a reload or a bookmark of the page does not
        say it again."""
        flash(str(subscriber.id), SAVED)
        return redirect(url_for("manage_page", token=token), 303)

    @app.route("/manage/<token>", methods=["GET", "POST"])
    def manage_page(token: str) -> ResponseReturnValue:
        errors: dict[str, str] = {}
        if request.method == "POST":
            with db.transaction(wiring.sessions()) as session:
                subscriber = find(session, token, "manage")
                if subscriber is None:
                    abort(404)
                # A post from the emailed link answers the notice emails: a new run.
                subscriber.unanswered_since = None
                if request.form.get("action") == "resubscribe":
                    if subscriber.status in ("unsubscribed", "bounced", "pending"):
                        subscriber.status = "active"
                        subscriber.confirmed_at = subscriber.confirmed_at or g.now
                        subscriber.updated_at = g.now
                    return saved_redirect(subscriber, token)
                values = form_from_request(request.form, subscriber.timezone)
                values.email = subscriber.email
                preferences, errors = check_form(session, values, email=False)
                if preferences is not None:
                    apply_preferences(session, subscriber, preferences, g.now)
                    return saved_redirect(subscriber, token)
        with sessions() as session:
            subscriber = find(session, token, "manage")
            if subscriber is None:
                abort(404)
            saved = str(subscriber.id) in get_flashed_messages(category_filter=[SAVED])
            if errors:
                values.email = subscriber.email
            else:
                values = form_from_subscriber(subscriber)
            coming = next_digest(session, subscriber)  # what they would get, when active
            active = subscriber.status == "active"
            view = next_digest_view(session, subscriber, coming) if subscriber.topics else None
            # A relative action: CSP form-action 'self' blocks a post to base_url's host
            # when the page was opened under another name (localhost, 127.0.0.1).
            unsubscribe = url_for(
                "unsubscribe_link",
                token=links.make_token(site_key, subscriber.secret, "unsubscribe", subscriber.id),
            )
            return page(
                "manage.html",
                400 if errors else 200,
                form=values.padded(),
                errors=errors,
                summary=error_summary(errors),
                saved=saved and not errors,
                timezones=timezones_with(values.timezone),
                weekdays=weekdays,
                email=subscriber.email,
                status=subscriber.status,
                status_text=status_text(subscriber),
                frequency=frequency(subscriber),
                view=view,
                next_send=when(coming, subscriber.timezone, g.now) if active else "",
                due=coming is not None and coming.at <= g.now,
                unsubscribe_url=unsubscribe,
            )

    # --- unsubscribe ------------------------------------------------------------------

    # The older /u/ path is registered second, so url_for builds /unsubscribe/.
    @app.route("/u/<token>", methods=["GET", "POST"])
    @app.route("/unsubscribe/<token>", methods=["GET", "POST"])
    def unsubscribe_link(token: str) -> ResponseReturnValue:
        one_click = request.method == "POST" and (
            request.form.get("List-Unsubscribe") == "One-Click"
        )
        if request.method == "POST" and not one_click:
            try:
                validate_csrf(request.form.get("csrf_token"))
            except ValidationError:
                return csrf_error(CSRFError())
        with db.transaction(wiring.sessions(), write=request.method == "POST") as session:
            subscriber = find(session, token, "unsubscribe")
            if subscriber is None:
                abort(404)
            if request.method == "POST" and subscriber.status in ("active", "pending"):
                subscriber.status = "unsubscribed"
                subscriber.updated_at = g.now
            if one_click:
                return Response("unsubscribed\n", 200, mimetype="text/plain")
            return page(
                "unsubscribe.html",
                done=request.method == "POST" or subscriber.status == "unsubscribed",
                email=subscriber.email,
                frequency=frequency(subscriber),
                manage_url=manage_url(subscriber),
                # One step back: the manage page's "subscribe again" action, same origin.
                resubscribe_action=url_for(
                    "manage_page",
                    token=links.make_token(site_key, subscriber.secret, "manage", subscriber.id),
                ),
            )

    csrf.exempt(unsubscribe_link)  # RFC 8058: the one-click POST carries no token

    # --- digests ----------------------------------------------------------------------

    @app.get("/digest/<ref>")
    def digest_page(ref: str) -> ResponseReturnValue:
        digest_id = links.digest_id_from_ref(site_key, ref)
        with sessions() as session:
            digest = session.get(Digest, digest_id) if digest_id else None
            if digest is None:
                abort(404)
            weekly = db.digest_is_weekly(session, digest.id)
            rendered = wiring.mailer().render_items(
                session,
                digest.content_hash,
                list(digest.items),
                digest.digest_date,
                weekly,
                json.loads(digest.more_matched or "{}"),
            )
            return page("digest.html", view=rendered.view)

    @app.get("/view/<token>")
    def old_view_link(token: str) -> ResponseReturnValue:
        with sessions() as session:
            subscriber = find(session, token, "view")
            payload = links.token_payload(token)
            if subscriber is None or not isinstance(payload, list) or len(payload) != 2:
                abort(404)
            try:
                day = date.fromisoformat(str(payload[1]))
            except ValueError:
                abort(404)
            delivery: Delivery | None = db.find_delivery(session, subscriber.id, day)
            if delivery is None or delivery.digest_id is None:
                abort(404)
            ref = links.digest_ref(site_key, delivery.digest_id)
        return redirect(url_for("digest_page", ref=ref), 301)

    @app.get("/preview")
    @limiter.limit(web.api_rate_limit)
    def preview_page() -> ResponseReturnValue:
        text = request.args.get("topic", "").strip()
        if not text:
            return page("preview.html", topic="", listing=None, error=None)
        try:
            spec = parse_topic(text)
        except SubscriberError as exc:
            # Shown by the topic's field, like a form's errors: the reason alone.
            return page("preview.html", 400, topic=text, listing=None, error=exc.reason)
        number = request.args.get("page", "1")
        with sessions() as session:
            if error := unknown_paper(session, spec.query):
                return page("preview.html", 400, topic=text, listing=None, error=error)
            liked = liked_titles(session, [spec.query])
            listing = topic_listing(session, spec.query, spec.label)
            pages = max(1, -(-len(listing.items) // PAGE_SIZE))
            # ASCII digits only: "²" is a digit to `isdigit` but not to `int()`, and
            # a page number past `pages` (or past int()'s 4300 digits) is the first page.
            asked = int(number) if number.isascii() and number.isdigit() and len(number) < 10 else 0
            current = asked if 0 < asked <= pages else 1
            chunk = listing.items[(current - 1) * PAGE_SIZE : current * PAGE_SIZE]
            papers = db.papers_by_id(session, [item.paper_id for item in chunk])
            view = build_view(
                chunk,
                papers,
                digest_date=local_date(g.now, settings.digest.default_timezone),
                weekly=False,
                site_name=settings.site.name,
                postal_address=settings.mail.postal_address,
                views=functools.partial(paper_view, base_url=settings.site.base_url),
                liked=liked,
            )

        def page_url(number: int) -> str | None:
            if not 0 < number <= pages:
                return None
            return url_for("preview_page", topic=text, page=number if number > 1 else None)

        return page(
            "preview.html",
            topic=text,
            title=topic_title(spec.query, spec.label, liked=liked),
            listing=listing,
            papers=[paper for section in view.sections for paper in section.papers],
            first=(current - 1) * PAGE_SIZE + 1,
            page_number=current,
            pages=pages,
            previous_url=page_url(current - 1),
            next_url=page_url(current + 1),
            error=None,
        )

    return app
