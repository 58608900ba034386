"""End to end in a real browser: Debian's chromium, driven by Playwright, against `digest serve`
and `digest send` running as processes on a real SQLite file and Maildir outbox.

Set DIGEST_SCREENSHOTS=<folder> to also save every page at 1280 px, 390 px and in dark mode.
"""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from digest.web_forms import WEB_PAPER_HINT
from tests.processes import digest_env
from tests.smtp_server import free_port

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must install chromium (apt-get install chromium) for browser tests")
    pytest.skip(
        "chromium is not installed (apt-get install chromium); CI runs these tests",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = os.environ.get("DIGEST_SCREENSHOTS")


def run_digest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digest", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def service(tmp_path: Path, seeds: Path, db_url: str) -> Iterator[tuple[str, dict[str, str], Path]]:
    """`digest serve` on a free port over a database holding the seeds."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[site]
base_url = "{base}"
secret_key = "browser-test-key-0123456789abcdefghijklmnop"
[digest]
send_empty = true
[web]
subscribe_rate_limit = "100 per minute"
""",
        encoding="utf-8",
    )
    env = digest_env(tmp_path / "data", db_url, config)
    assert run_digest(env, "ingest", str(seeds)).returncode == 0
    control = run_digest(env, "subscribe", "control@example.org", "--topic", "*")
    assert control.returncode == 0, control.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "digest", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "digest serve did not come up"
                time.sleep(0.2)
        yield base, env, tmp_path / "data" / "outbox"
    finally:
        server.terminate()
        server.communicate(timeout=15)


def outbox(folder: Path) -> list[EmailMessage]:
    # The server creates the Maildir with its first message: tmp, new, cur one by one.
    if not all((folder / sub).is_dir() for sub in ("tmp", "new", "cur")):
        return []
    box = mailbox.Maildir(folder, create=False)
    messages = [message_from_bytes(bytes(m), policy=policy.default) for m in box]
    return sorted(messages, key=lambda m: m["Date"].datetime)  # type: ignore[no-any-return]


def wait_for_mail(folder: Path, to: str, subject: str) -> EmailMessage:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for message in outbox(folder):
            if message["To"] == to and subject in message["Subject"]:
                return message
        time.sleep(0.2)
    raise AssertionError(f"no {subject!r} email to {to}")


def link(message: EmailMessage, label: str) -> str:
    text = message.get_body(("plain",)).get_content()
    found = re.search(rf"{label}:?\s*\n?\s*(https?://\S+)", text)
    assert found, f"no {label!r} link in:\n{text}"
    return found.group(1)


def snap(browser: Browser, url: str, name: str) -> None:
    """Screenshots of `url` at desktop and phone width, light and dark (when asked for)."""
    if not SCREENSHOTS:
        return
    folder = Path(SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    for width, scheme in ((1280, "light"), (390, "light"), (390, "dark")):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        page = context.new_page()
        page.goto(url)
        page.wait_for_timeout(500)
        page.screenshot(path=str(folder / f"{name}-{width}-{scheme}.png"), full_page=True)
        context.close()


def test_subscribe_confirm_receive_manage_unsubscribe_in_a_browser(service) -> None:
    base, env, maildir = service
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page: Page = browser.new_page(timezone_id="Europe/Berlin")

        # 1. Subscribe with two topics, seeing what each matches as it is typed.
        page.goto(base + "/")
        snap(browser, base + "/", "subscribe")
        expect(page.locator("#timezone")).to_have_value("Europe/Berlin")  # detected
        page.get_by_label("Email address").fill("ada@example.org")
        page.get_by_label("Topic 1 (required)").fill("diffusion model")
        expect(page.locator("#topic-1-matches")).to_contain_text("papers match")
        page.get_by_label("Topic 2").fill("RLHF=rlhf OR dpo")
        expect(page.locator("#topic-2-matches")).to_contain_text("papers match")
        page.get_by_label("Send at").select_option("6")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()

        # 2. The confirmation email's link, then its button.
        confirmation = wait_for_mail(maildir, "ada@example.org", "Confirm your subscription")
        confirm_url = link(confirmation, "Confirm subscription")
        snap(browser, confirm_url, "confirm")
        page.goto(confirm_url)
        page.get_by_role("button", name="Confirm subscription").click()
        expect(page.get_by_role("heading", name="You're subscribed")).to_be_visible()

        # 3. A send delivers the first digest.
        sent = run_digest(env, "send")
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("sent 2,"), sent.stdout
        digest = wait_for_mail(maildir, "ada@example.org", "Daily Papers")

        # 4. "View in browser" and "Manage" from the delivered email.
        view_url = link(digest, "View in browser")
        page.goto(view_url)
        snap(browser, view_url, "digest")
        expect(page.locator(".paper").first).to_be_visible()
        assert "ada@example.org" not in page.content()
        manage_url = link(digest, "Manage preferences")
        page.goto(manage_url)
        snap(browser, manage_url, "manage")
        expect(page.get_by_label("Topic 1 (required)")).to_have_value("diffusion model")
        expect(page.get_by_label("Topic 2")).to_have_value("RLHF=rlhf OR dpo")

        # 5. Change a topic.
        page.get_by_label("Topic 2").fill("robot")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text("Saved.")).to_be_visible()
        expect(page.get_by_label("Topic 2")).to_have_value("robot")
        assert page.url == manage_url  # no flag in the address to bookmark
        page.reload()  # says it once: not again on reload
        expect(page.get_by_label("Topic 2")).to_have_value("robot")
        expect(page.get_by_text("Saved.")).to_have_count(0)

        # The unsubscribe page asks first (screenshot only; the email's one-click does it).
        unsubscribe_url = str(digest["List-Unsubscribe"]).split(",")[0].strip("<> ")
        snap(browser, unsubscribe_url, "unsubscribe")
        snap(browser, base + "/preview?topic=diffusion", "preview")
        browser.close()

    # 6. RFC 8058 one-click: a POST with no cookie and no CSRF token.
    request = urllib.request.Request(
        unsubscribe_url,
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    # 7. The next send delivers nothing to ada (the control reader still gets theirs).
    before = len(outbox(maildir))
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    again = run_digest(env, "send", "--date", tomorrow)
    assert again.returncode == 0, again.stderr
    after = outbox(maildir)
    assert [m["To"] for m in after[before:]] == ["control@example.org"]


def test_every_bad_field_shows_its_error_at_once_in_a_browser(service) -> None:
    """Three bad fields, three messages by their fields and in the summary, on one submit;
    fixing two leaves exactly one; nothing is stored or sent until the form is right."""
    base, env, maildir = service
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page: Page = browser.new_page(timezone_id="Europe/Berlin")
        page.goto(base + "/")
        page.get_by_label("Email address").fill("ada@")
        page.get_by_label("Topic 1 (required)").fill("diffusion model")
        page.get_by_label("Topic 2").fill("like:99999")
        # The menu offers 0-23 only: a forged 25, as a hand-made request would send.
        page.locator("#hour").evaluate("s => { s.add(new Option('25', '25')); s.value = '25'; }")
        page.get_by_role("button", name="Subscribe").click()

        summary = page.locator("#error-summary li")
        expect(summary).to_have_text(
            [
                "Email address: Enter a valid email address, like ada@example.org.",
                f"Topic 2: like:99999: no such paper {WEB_PAPER_HINT}",
                "Send at: hour must be between 0 and 23, got 25",
            ]
        )
        for field in ("email", "topic-2", "hour"):
            expect(page.locator(f"#{field}")).to_have_attribute("aria-invalid", "true")
            expect(page.locator(f"#{field}-error")).to_be_visible()
        expect(page.locator("#topic-2")).to_have_accessible_description(
            re.compile(r"like:99999: no such paper")
        )
        expect(page.locator("[aria-invalid=true]")).to_have_count(3)
        expect(page.get_by_label("Email address")).to_have_value("ada@")
        expect(page.get_by_label("Topic 1 (required)")).to_have_value("diffusion model")
        expect(page.get_by_label("Topic 2")).to_have_value("like:99999")
        expect(page.locator("#hour")).to_have_value("25")
        expect(page.locator("#timezone")).to_have_value("Europe/Berlin")
        page.get_by_role("link", name="Topic 2").click()
        expect(page.locator("#topic-2")).to_be_focused()

        # Fix two: exactly one message is left, on the topic.
        page.get_by_label("Email address").fill("ada@example.org")
        page.get_by_label("Send at").select_option("6")
        page.get_by_role("button", name="Subscribe").click()
        expect(summary).to_have_text([f"Topic 2: like:99999: no such paper {WEB_PAPER_HINT}"])
        expect(page.locator("[aria-invalid=true]")).to_have_count(1)
        expect(page.locator(".error-text")).to_have_count(1)
        # The live checker does not repeat the server's message for the value it was sent,
        # but speaks again once the value changes.
        page.wait_for_load_state("networkidle")
        expect(page.locator("#topic-2-matches")).to_have_text("")
        page.get_by_label("Topic 2").fill("like:88888")
        expect(page.locator("#topic-2-matches")).to_contain_text("like:88888: no such paper")
        page.get_by_label("Topic 2").fill("like:99999")
        expect(page.get_by_label("Send at")).to_have_value("6")
        listed = run_digest(env, "subscribers")
        assert listed.returncode == 0 and "ada@example.org" not in listed.stdout, listed.stdout
        assert outbox(maildir) == []

        page.get_by_label("Topic 2").fill("robot")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
        browser.close()
    wait_for_mail(maildir, "ada@example.org", "Confirm your subscription")


# Everything wider than the viewport, as "tag.class: right edge" (the page must not scroll
# sideways or cut text off on a phone).
OVERFLOWING = """(width) => {
  const wide = [];
  if (document.documentElement.scrollWidth > width) {
    wide.push(`page: ${document.documentElement.scrollWidth}`);
  }
  for (const element of document.body.querySelectorAll("*")) {
    const right = Math.ceil(element.getBoundingClientRect().right);
    if (right > width) wide.push(`${element.tagName.toLowerCase()}.${element.className}: ${right}`);
  }
  return wide;
}"""


def test_notice_emails_fit_a_phone() -> None:
    """The confirmation email at 375 px: the container shrinks and the long link breaks."""
    from digest.render import Notice, Renderer

    token = "WzEyMzQ1LDE3OTU1OTcyNjAsNjc4OSwiYzQ2MDFhZTRmMWI3NGZhNSJd.2-IA5y8Qa2C2B-Ek31SqFGn9WJE"
    notice = Notice(
        subject="Confirm your subscription to papers digest",
        heading="Confirm your subscription",
        paragraphs=(
            "Someone, hopefully you, asked papers digest to send a daily digest to this "
            "address, on: large language model; Today's top papers.",
            "Nothing will be sent until you confirm.",
        ),
        action_label="Confirm subscription",
        action_url=f"https://papers.example-university.org/confirm/{token}",
        footnote="The link works for 48 hours. Didn't ask for this? Ignore this email.",
    )
    html, _ = Renderer().render_notice(notice)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            for width in (375, 320):
                page = browser.new_page(viewport={"width": width, "height": 800})
                page.set_content(html)
                assert page.evaluate(OVERFLOWING, width) == [], width
                # The whole URL is still there to copy, and the button to press.
                assert page.get_by_role("link", name="Confirm subscription").is_visible()
                assert page.locator(f"a[href$='{token}']").count() == 2
                page.close()
        finally:
            browser.close()
