"""The one http(s) URL rule (digest.urls): what it keeps, what it refuses and why."""

import pytest

from digest.urls import (
    MAX_FETCHED,
    MAX_LINK,
    UrlRefused,
    http_url,
    is_url,
    mask_password,
    safe_http_url,
)


@pytest.mark.parametrize(
    "url",
    [
        "https://arxiv.org/pdf/2602.23229v1",
        "http://arxiv.org/pdf/astro-ph/9904306v1",
        "HTTPS://GitHub.com/Org/Repo",
        "https://circle-lmm.github.io/",
        "https://example.org:8443/a?b=c&d=e#f",
        "http://example.org:65535/",
        "http://example.org:1/",
        "http://example.org:/",  # an empty port is the scheme's default (RFC 3986)
        "http://127.0.0.1:8000/x",
        "http://[::1]:8080/x",
        "http://[2001:db8::1]/",
        "https://my_site.example.org./path",  # underscore and the root's trailing dot
        "https://bücher.example/straße",  # an international name, kept as written
        "https://xn--bcher-kva.example/",
        "https://example.org/" + "a" * (MAX_LINK - len("https://example.org/")),
    ],
)
def test_urls_kept_as_written(url: str) -> None:
    assert http_url(url) == url
    assert safe_http_url(url) == url


def test_surrounding_whitespace_is_trimmed() -> None:
    assert http_url("  https://example.org/x \n") == "https://example.org/x"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # header injection and other invisible characters
        ("https://example.org/\r\nBcc: x@y.org", "the URL has a space or control character"),
        ("https://example.org/a\nb", "the URL has a space or control character"),
        ("https://example.org/a b", "the URL has a space or control character"),
        ("https://example.org/a\tb", "the URL has a space or control character"),
        ("https://example.org/\x00", "the URL has a space or control character"),
        ("https://example.org/a\x85b", "the URL has a space or control character"),
        ("https://example.org/a\u00a0b", "the URL has a space or control character"),
        ("https://example.org/a\u2028b", "the URL has a space or control character"),
        ("https://exa\u200bmple.org/", "the URL has a space or control character"),
        ("https://example.org/\u202egpj.exe", "the URL has a space or control character"),
        ("https://example.org/\ud800", "the URL has a space or control character"),
        # schemes
        ("javascript:alert(1)", "not an http or https URL"),
        ("JaVaScRiPt:alert(1)//http://x", "not an http or https URL"),
        ("data:text/html,<script>alert(1)</script>", "not an http or https URL"),
        ("ftp://example.org/file", "not an http or https URL"),
        ("file:///etc/passwd", "not an http or https URL"),
        ("//example.org/relative", "not an http or https URL"),
        ("/relative/path", "not an http or https URL"),
        ("", "not an http or https URL"),
        # no host
        ("http://", "the URL has no host"),
        ("http:example.org", "the URL has no host"),
        ("http:///path", "the URL has no host"),
        ("http://:80/", "the URL has no host"),
        # user names and passwords
        ("https://github.com@evil.example/", "the URL carries a user name or password"),
        ("https://user:secret@example.org/", "the URL carries a user name or password"),
        ("https://@example.org/", "the URL carries a user name or password"),
        ("https://evil.example\\@good.example/", "the URL carries a user name or password"),
        # ports
        ("http://example.org:0/", "port 0 is not a TCP port"),
        ("http://example.org:65536/", "not a valid URL"),
        ("http://example.org:99999/", "not a valid URL"),
        ("http://example.org:-1/", "not a valid URL"),
        ("http://example.org:abc/", "not a valid URL"),
        ("http://example.org:８０/", "not a valid URL"),  # fullwidth digits
        ("http://example.org:80:81/", "not a valid URL"),
        # IPv6 literals
        ("http://[::1/", "not a valid URL"),
        ("http://::1/", "not a valid URL"),
        ("http://[1.2.3.4]/", "not a valid URL"),
        ("http://[::1]junk/", "host '[::1]' is not an IPv6 address"),
        ("http://[fe80::1%eth0]/", "host '[fe80::1%eth0]' is not an IPv6 address"),
        ("http://[v1.future]/", "host '[v1.future]' is not an IPv6 address"),
        # host names
        ("https://good.example\\.evil.example/", "host 'good.example\\\\.evil.example' is not"),
        ("http://exa<mple.org/", "host 'exa<mple.org' is not a host name"),
        ("http://%65xample.org/", "host '%65xample.org' is not a host name"),
        ("http://a..b/", "host 'a..b' is not a host name"),
        ("http://" + "a" * 64 + ".org/", "is not a host name"),
        ("http://" + "a." * 127 + "org/", "is not a host name"),  # 258 characters
        # international names IDNA 2008 refuses
        ("http://☃.example/", "host '☃.example' is not a valid international domain name"),
        ("http://\u0300a.example/", "is not a valid international domain name"),
        # length
        (
            "https://example.org/" + "a" * (MAX_LINK + 1 - len("https://example.org/")),
            "the URL is longer than 2048 characters",
        ),
    ],
)
def test_refused_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        http_url(url)
    assert why in str(refused.value)
    assert safe_http_url(url) is None


def test_the_length_bound_is_per_use() -> None:
    long_query = "https://export.arxiv.org/api/query?id_list=" + ",".join(["2602.23229"] * 600)
    assert len(long_query) == 6_642
    with pytest.raises(UrlRefused, match="longer than 2048"):
        http_url(long_query)
    assert http_url(long_query, max_length=MAX_FETCHED) == long_query
    with pytest.raises(UrlRefused, match="longer than 8000"):
        http_url(long_query + "," + "2602.23229" * 150, max_length=MAX_FETCHED)


def test_a_long_hostile_host_is_cut_in_the_reason() -> None:
    with pytest.raises(UrlRefused) as refused:
        http_url("http://" + "<" * 1000 + "/")
    assert str(refused.value) == f"host '{'<' * 60}…' is not a host name"


@pytest.mark.parametrize(
    "url", ["https://example.org?a=1", "https://example.org/#top", "https://example.org/?"]
)
def test_a_base_url_has_no_query_or_fragment(url: str) -> None:
    assert http_url(url) == url
    with pytest.raises(UrlRefused, match=r"^the URL has a query or fragment$"):
        http_url(url, base=True)


@pytest.mark.parametrize(
    ("url", "ascii"),
    [
        ("https://example.org/a?b#c", "https://example.org/a?b#c"),
        ("https://Bücher.Example:8443/x", "https://xn--bcher-kva.example:8443/x"),
        ("https://faß.de/", "https://xn--fa-hia.de/"),  # IDNA 2008: ß is kept, not "ss"
        (
            "https://example.org/café?q=ünï#ä",
            "https://example.org/caf%C3%A9?q=%C3%BCn%C3%AF#%C3%A4",
        ),
        ("https://例え.jp/パス", "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9"),
        ("http://[::1]:80/é", "http://[::1]:80/%C3%A9"),
    ],
)
def test_ascii_form(url: str, ascii: str) -> None:
    assert http_url(url, ascii=True) == ascii
    assert http_url(ascii, ascii=True) == ascii  # already ASCII: unchanged


def test_non_strings_are_not_links() -> None:
    assert [safe_http_url(v) for v in (None, 1, ["https://x.org/"], b"https://x.org/")] == [
        None,
        None,
        None,
        None,
    ]


def test_is_url_and_mask_password() -> None:
    assert [is_url(n) for n in ("http://x", "https://x", "HTTP://x", "feed.xml", "")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert mask_password("https://me:pa:ss@h.org/") == "https://me:***@h.org/"
    assert mask_password("postgresql://me:s3cret@db/x") == "postgresql://me:***@db/x"
    assert mask_password("https://h.org/a:b@c") == "https://h.org/a:b@c"
