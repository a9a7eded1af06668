"""The approval pages' pure helpers: which URLs become links, where a sign-in may send a browser back to, when a
cookie must be Secure, how much of a request a page repeats."""

from __future__ import annotations

from datetime import timedelta

import pytest

from signoff.api.pages import ECHO_MAX, PageSettings, _local_path, _loopback, bounded, safe_url


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", " JavaScript:alert(1)", "data:text/html,hi", "vbscript:x", "//evil.example", "/x", ""],
)
def test_only_absolute_http_urls_become_links(url: str) -> None:
    assert safe_url(url) is None


def test_http_and_https_urls_are_links() -> None:
    assert safe_url("https://runbooks.example.com/a?b=c") == "https://runbooks.example.com/a?b=c"
    assert safe_url("http://127.0.0.1:8000/x") == "http://127.0.0.1:8000/x"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "gates/x", None])
def test_sign_in_only_returns_to_a_path_of_this_site(target: str | None) -> None:
    assert _local_path(target) == "/"


def test_a_path_of_this_site_is_kept_with_its_query() -> None:
    assert _local_path("/gates/g-1?action=approve") == "/gates/g-1?action=approve"


def test_cookies_are_secure_except_on_loopback() -> None:
    assert _loopback("http://127.0.0.1:8000") and _loopback("http://localhost:8000") and _loopback("http://[::1]:80")
    assert not _loopback("https://signoff.example.com") and not _loopback("http://10.0.0.5:8000")


def _settings(public_url: str | None, *, dev_mode: bool = False) -> PageSettings:
    lifetime = timedelta(hours=8)
    return PageSettings(session_secret="x" * 32, session_lifetime=lifetime, dev_mode=dev_mode, public_url=public_url)


@pytest.mark.parametrize("public_url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_the_cookie_is_not_secure_on_a_plain_http_loopback_public_url(public_url: str) -> None:
    assert not _settings(public_url).secure_cookies


@pytest.mark.parametrize(
    "public_url",
    [None, "https://signoff.example.com", "http://signoff.example.com", "http://10.0.0.5:8000", "https://127.0.0.1"],
)
def test_the_cookie_is_secure_otherwise_even_without_a_public_url(public_url: str | None) -> None:
    # Unset is the case that matters: a production api behind a TLS ingress, itself reached over plain http.
    assert _settings(public_url).secure_cookies


def test_a_dev_stack_cookie_is_not_secure() -> None:
    assert not _settings(None, dev_mode=True).secure_cookies
    assert not _settings("https://signoff.example.com", dev_mode=True).secure_cookies


def test_what_a_page_repeats_of_a_request_is_bounded() -> None:
    assert bounded("g-1") == "g-1" and bounded("x" * ECHO_MAX) == "x" * ECHO_MAX
    cut = bounded("x" * 10_000)
    assert len(cut) == ECHO_MAX and cut.endswith("…") and cut.startswith("x" * (ECHO_MAX - 1))
