"""The approval pages' pure helpers: which URLs become links, where a sign-in may send a browser back to, when a
cookie must be Secure."""

from __future__ import annotations

import pytest

from signoff.api.pages import _local_path, _loopback, safe_url


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
