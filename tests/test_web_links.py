"""Every link and form of the web front leads somewhere that works: topic pages that list
every match the email counts, `like:ID` topics shown by title, relative form actions,
plain 404s for unknown paths (Flask's test client on a real database)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_web import Site, active_subscriber, make_site, token_links


@pytest.fixture
def site(tmp_path: Path, seeds: Path, db_url: str) -> Iterator[Site]:
    site = make_site(tmp_path, seeds, db_url, subscribe_rate_limit="1000 per minute")
    yield site
    site.app.extensions["digest.postman"].drain()
    site.wiring.dispose()


def form_actions(page: str) -> list[str]:
    return re.findall(r'<form[^>]*action="([^"]*)"', page)


def test_every_form_on_the_manage_page_posts_to_the_same_origin(site: Site) -> None:
    """An absolute action to base_url is blocked by CSP form-action 'self' when the page
    was opened under another host name (localhost vs 127.0.0.1)."""
    ada = active_subscriber(site)
    paths = token_links(site, ada)
    page = site.client().get(paths.manage).get_data(as_text=True)
    actions = form_actions(page)
    assert actions == [paths.manage, paths.unsubscribe]
    assert all(action.startswith("/") and "//" not in action for action in actions)
