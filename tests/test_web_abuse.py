"""The web front as an attacker and a careless user hit it (Flask's test client on a real
database, as tests/test_web.py): odd numbers in query strings, ids beyond the id columns,
errors whose log lines must not carry a subscriber's link."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from tests import test_web as web_tests
from tests.test_web import Site, active_subscriber, token_links

site = web_tests.site  # the same fixture: a fresh site on the seeds per test


@pytest.mark.parametrize("number", ["²", "①", "1²", "٣", "1" * 5000, "-1", "0", "9" * 30])
def test_a_page_number_that_is_not_a_page_is_the_first_page(site: Site, number: str) -> None:
    """`str.isdigit` lets "²" and "①" through to `int()`, which refuses them, and a
    5,000-digit number is past `int()`'s limit: each was a 500 from an anonymous GET."""
    client = site.client()
    first = client.get("/preview?topic=diffusion").get_data(as_text=True)
    response = client.get("/preview", query_string={"topic": "diffusion", "page": number})
    assert response.status_code == 200
    assert response.get_data(as_text=True) == first


def test_a_like_id_beyond_the_id_columns_names_no_paper(site: Site) -> None:
    """like:2147483648 fits the query syntax (12 digits) but not PostgreSQL's integer
    column: it is no such paper, never a database error."""
    client = site.client()
    for number in (2**31, 10**12 - 1):
        body = client.get(f"/api/match?q=like:{number}").get_json()
        assert body["count"] == 0
        assert body["error"].startswith(f"like:{number}: no such paper here.")
        page = client.get(f"/preview?topic=like:{number}")
        assert page.status_code == 400
        assert f"like:{number}: no such paper here." in page.get_data(as_text=True)


def test_an_unexpected_error_is_logged_without_the_link_token(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure on a token's page is logged by its route, not its path: a manage token
    in a log file would let whoever reads the logs change or end the subscription."""
    ada = active_subscriber(site)
    paths = token_links(site, ada)
    with site.wiring.engine().begin() as connection:
        connection.execute(text("ALTER TABLE subscribers RENAME TO subscribers_gone"))
    client = site.client()
    try:
        with caplog.at_level(logging.ERROR, logger="digest.web"):
            for path in (
                paths.manage,
                paths.unsubscribe,
                paths.unsubscribe.replace("unsubscribe", "u"),
            ):
                response = client.get(path)
                assert response.status_code == 500
                page = response.get_data(as_text=True)
                assert "Something went wrong" in page and "SELECT" not in page
    finally:
        with site.wiring.engine().begin() as connection:
            connection.execute(text("ALTER TABLE subscribers_gone RENAME TO subscribers"))
    logged = [record.getMessage() for record in caplog.records]
    assert logged == [
        "unexpected error on GET /manage/<token>",
        "unexpected error on GET /unsubscribe/<token>",
        "unexpected error on GET /u/<token>",
    ]
    for path in (paths.manage, paths.unsubscribe):
        assert path.rsplit("/", 1)[1] not in caplog.text
