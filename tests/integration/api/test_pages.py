"""The approval pages over real HTTP (the api and approval roles on the real broker and PostgreSQL): sessions and
their cookie, sign-in (a dev stack's, and OIDC's authorization code with PKCE against a local identity provider),
sign-out (a copy of the cookie is refused after it), CSRF, what a GET may not do, and what the page shows. The
browser journeys are in tests/e2e/test_approval_page.py."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey

from signoff import contracts as wire
from signoff.api.pages import COOKIE, ECHO_MAX, MAX_SESSION_LIFETIME
from signoff.api.repository import SCHEMA as API_SCHEMA
from tests.integration.api.conftest import FrontDoor, pipeline_name, running_front_door
from tests.integration.approval.conftest import request
from tests.support.oidc import AUDIENCE, IdentityProvider

pytestmark = pytest.mark.integration

SECRET = "session-secret-of-the-page-tests-0123456789"
CATALOG = """\
services:
  - identifier: evil
    name: "<script>alert('catalog')</script>Evil service"
    links:
      - {name: Real runbook, url: "https://runbooks.example.com/evil"}
"""


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


@contextlib.asynccontextmanager
async def _sign_in(door: FrontDoor, user: str, back_to: str = "/") -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client signed in through the dev sign-in as `user`."""
    async with httpx.AsyncClient(base_url=door.url, timeout=60) as client:
        form = await client.get("/sign-in", params={"next": back_to})
        signed = await client.post("/sign-in/dev", data={"csrf": _csrf(form.text), "user": user, "next": back_to})
        assert signed.status_code == 303 and signed.headers["location"] == back_to, signed.text
        yield client


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _revoked(door: FrontDoor) -> list[dict]:
    async with door.pool.acquire() as conn:
        rows = await conn.fetch(f'SELECT session_id, expires_at FROM "{API_SCHEMA}".revoked_sessions')  # noqa: S608
    return [dict(row) for row in rows]


async def _votes(door: FrontDoor, gate_id: str) -> list[dict]:
    async with await door.client("eli") as eli:
        return (await eli.get(f"/gates/{gate_id}")).json()["votes"]


@pytest.fixture
async def page_door(settings, names, tmp_path: Path) -> AsyncIterator[FrontDoor]:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    async with running_front_door(
        settings,
        names,
        tmp_path,
        api_session_secret=SECRET,
        api_dev_mode=True,
        api_session_minutes=60,
        catalog_file=tmp_path / "catalog.yaml",
    ) as door:
        yield door


async def test_a_page_sets_a_strict_csp_refuses_framing_and_its_cookie_is_httponly_lax_and_bounded(
    page_door: FrontDoor,
) -> None:
    async with httpx.AsyncClient(base_url=page_door.url, timeout=60) as client:
        first = await client.get("/gates/anything?action=approve")
        sign_in = await client.get(first.headers["location"])
        css = await client.get("/static/signoff.css")
    assert first.status_code == 303
    assert first.headers["location"] == "/sign-in?next=%2Fgates%2Fanything%3Faction%3Dapprove"
    csp = sign_in.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
    assert sign_in.headers["x-frame-options"] == "DENY"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Max-Age=3600" in cookie and "Secure" not in cookie  # loopback: a dev stack has no TLS
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_the_index_lists_my_gates_first_and_the_ones_waiting_on_others_apart(page_door: FrontDoor) -> None:
    mine, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    theirs, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("sre",), timeout="1d"))
    async with _sign_in(page_door, "dana") as dana:
        index = (await dana.get("/")).text
    yours, _, others = index.partition('id="others"')
    assert f'href="/gates/{mine}"' in yours and f'href="/gates/{theirs}"' not in yours
    assert f'href="/gates/{theirs}"' in others and f'href="/gates/{mine}"' not in others
    assert re.search(r"2[0-3]h \d+m left", yours) and "started by alice" in yours


async def test_a_get_of_the_approve_link_decides_nothing_and_focuses_approve(page_door: FrontDoor) -> None:
    gate_id, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with _sign_in(page_door, "dana") as dana:
        for _ in range(2):
            page = await dana.get(f"/gates/{gate_id}", params={"action": "approve"})
            assert page.status_code == 200
    assert re.search(r'value="Approved" class="approve" autofocus', page.text)
    assert "Nothing is decided yet" in page.text
    assert await _votes(page_door, gate_id) == []


async def test_a_missing_or_wrong_csrf_token_is_403_and_nothing_is_recorded(page_door: FrontDoor) -> None:
    gate_id, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with _sign_in(page_door, "dana") as dana:
        missing = await dana.post(f"/gates/{gate_id}", data={"decision": "Approved"})
        wrong = await dana.post(f"/gates/{gate_id}", data={"decision": "Approved", "csrf": "x" * 43})
        # Another browser's valid token is still the wrong one.
        async with _sign_in(page_door, "eli") as eli:
            theirs = _csrf((await eli.get("/")).text)
        crossed = await dana.post(f"/gates/{gate_id}", data={"decision": "Approved", "csrf": theirs})
    assert [r.status_code for r in (missing, wrong, crossed)] == [403, 403, 403]
    assert "Nothing was recorded" in missing.text
    assert await _votes(page_door, gate_id) == []
    async with await page_door.client("eli") as eli:
        audit = (await eli.get(f"/gates/{gate_id}/audit")).json()
    assert [e["kind"] for e in audit["entries"]] == ["requested"]


async def test_an_approval_from_the_form_is_counted_for_the_signed_in_user_and_the_gate_shows_its_outcome(
    page_door: FrontDoor,
) -> None:
    gate_id, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with _sign_in(page_door, "dana") as dana:
        form = await dana.get(f"/gates/{gate_id}")
        nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
        data = {"csrf": _csrf(form.text), "decision": "Approved", "comment": "ship it", "nonce": nonce}
        answer = await dana.post(f"/gates/{gate_id}", data=data)
        again = await dana.post(f"/gates/{gate_id}", data=data)  # a double submit of the same form
    assert answer.status_code == 200, answer.text
    assert f"vote counted: dana approved gate {gate_id}" in answer.text and 'id="outcome"' in answer.text
    assert 'name="decision"' not in answer.text  # closed: no form
    assert again.status_code == 200 and f"vote counted: dana approved gate {gate_id}" in again.text
    (vote,) = await _votes(page_door, gate_id)
    assert (vote["approver"], vote["comment"], vote["source"]) == ("dana", "ship it", "api")


async def test_an_input_an_earlier_approver_gave_is_prefilled_so_approving_unchanged_keeps_it(
    page_door: FrontDoor,
) -> None:
    """The last approval that gives an input wins: prefilled with the default alone, eli's unchanged approval
    would have replaced dana's value with it."""
    asked = request(pipeline=pipeline_name(), groups=("docs",), minimum_count=2, timeout="1d").model_copy(
        update={"approver_inputs": [wire.ApproverInput(name="foo", default_value="bar")]}
    )
    gate_id, _ = await page_door.open_gate(asked)

    async def approve_with_the_form_as_shown(user: str, **inputs: str) -> str:
        async with _sign_in(page_door, user) as client:
            form = await client.get(f"/gates/{gate_id}")
            shown = re.search(r'name="input\.foo" value="([^"]*)"', form.text).group(1)
            nonce = re.search(r'name="nonce" value="([^"]+)"', form.text).group(1)
            data = {"csrf": _csrf(form.text), "decision": "Approved", "nonce": nonce, "input.foo": shown}
            data.update({f"input.{name}": value for name, value in inputs.items()})
            answer = await client.post(f"/gates/{gate_id}", data=data)
            assert answer.status_code == 200, answer.text
            return form.text

    first = await approve_with_the_form_as_shown("dana", foo="baz")
    assert "Default: bar" in first
    second = await approve_with_the_form_as_shown("eli")
    assert "Set by dana when approving (default: bar)" in second
    assert [(vote["approver"], vote["inputs"]) for vote in await _votes(page_door, gate_id)] == [
        ("dana", {"foo": "baz"}),
        ("eli", {"foo": "baz"}),
    ]


async def test_an_expired_session_goes_back_to_sign_in_and_then_to_the_same_gate(page_door: FrontDoor) -> None:
    gate_id, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    link = f"/gates/{gate_id}?action=approve"
    context = page_door.api.context
    real_clock = context.clock
    async with _sign_in(page_door, "dana") as dana:
        assert (await dana.get(link)).status_code == 200
        later = datetime.now(UTC) + timedelta(minutes=61)
        context.clock = lambda: later
        try:
            expired = await dana.get(link)
            assert expired.status_code == 303 and expired.headers["location"].startswith("/sign-in?next=")
            again = await dana.get(expired.headers["location"])
            assert "Your session has ended" in again.text
            back_to = parse_qs(urlsplit(expired.headers["location"]).query)["next"][0]
            assert back_to == link
            signed = await dana.post("/sign-in/dev", data={"csrf": _csrf(again.text), "user": "dana", "next": back_to})
            assert signed.headers["location"] == link
            page = await dana.get(link)
            assert "Signed in as <strong>dana</strong>" in page.text
            # A form posted once the session has run out: back to the sign-in (then the gate), nothing recorded.
            much_later = later + timedelta(minutes=61)
            context.clock = lambda: much_later
            posted = await dana.post(f"/gates/{gate_id}", data={"csrf": _csrf(page.text), "decision": "Approved"})
            assert posted.status_code == 303
            assert posted.headers["location"] == f"/sign-in?next=%2Fgates%2F{gate_id}&ended=1"
            assert await _votes(page_door, gate_id) == []
            page = await dana.get(posted.headers["location"])
            await dana.post("/sign-in/dev", data={"csrf": _csrf(page.text), "user": "dana", "next": "/"})
            page = await dana.get("/")
            refused = await dana.post("/sign-out", data={"csrf": "forged"})
            out = await dana.post("/sign-out", data={"csrf": _csrf(page.text)})
            assert refused.status_code == 403 and out.headers["location"] == "/sign-in"
            assert (await dana.get(link)).status_code == 303  # signed out: back to the sign-in
        finally:
            context.clock = real_clock


async def test_a_sign_out_revokes_the_session_so_a_copy_of_its_cookie_grants_nothing(page_door: FrontDoor) -> None:
    gate_id, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    link = f"/gates/{gate_id}"
    async with _sign_in(page_door, "dana") as dana, _sign_in(page_door, "dana") as elsewhere:
        page = await dana.get(link)
        assert page.status_code == 200
        copied = dana.cookies[COOKIE]
        out = await dana.post("/sign-out", data={"csrf": _csrf(page.text)})
        assert out.status_code == 303 and out.headers["location"] == "/sign-in"
        assert (await dana.get(link)).status_code == 303
        # Only that session ended: dana's other browser is still signed in.
        assert "Signed in as <strong>dana</strong>" in (await elsewhere.get(link)).text
    async with httpx.AsyncClient(base_url=page_door.url, timeout=60) as thief:
        thief.cookies.set(COOKIE, copied)
        stolen = await thief.get(link)
        thief.cookies.set(COOKIE, copied)
        posted = await thief.post(link, data={"csrf": _csrf(page.text), "decision": "Approved"})
    assert stolen.status_code == 303 and stolen.headers["location"].startswith("/sign-in?next=")
    assert posted.status_code == 303 and posted.headers["location"].startswith("/sign-in?next=")
    assert await _votes(page_door, gate_id) == []
    (first,) = await _revoked(page_door)

    # A revoked id is kept only while its session could still be valid, for the longest lifetime the setting
    # allows (raising it must not bring the session back): the next sign-out after that prunes it.
    context = page_door.api.context
    real_clock = context.clock
    later = datetime.now(UTC) + MAX_SESSION_LIFETIME + timedelta(minutes=1)
    context.clock = lambda: later
    try:
        async with _sign_in(page_door, "eli") as eli:
            page = await eli.get("/")
            await eli.post("/sign-out", data={"csrf": _csrf(page.text)})
    finally:
        context.clock = real_clock
    (second,) = await _revoked(page_door)
    assert second["session_id"] != first["session_id"]
    assert abs(second["expires_at"] - (later + MAX_SESSION_LIFETIME)) < timedelta(seconds=5)


async def test_an_approval_refused_for_its_inputs_or_by_the_decision_says_why(page_door: FrontDoor) -> None:
    gate_id, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with _sign_in(page_door, "dana") as dana:
        form = await dana.get(f"/gates/{gate_id}")
        sent = {"csrf": _csrf(form.text), "decision": "Approved"}
        # An input the gate does not have (a tampered form, or one of another attempt): the form has no field for it.
        unknown = await dana.post(f"/gates/{gate_id}", data=sent | {"input.colour": "red", "input." + "z" * 500: "x"})
        # A 422 of the decision itself (a NUL character no role could store).
        nul = await dana.post(f"/gates/{gate_id}", data=sent | {"comment": "ship\x00it"})
    assert unknown.status_code == 422, unknown.text
    errors = re.search(r'<div class="notice notice-bad" role="alert" id="errors">(.*?)</div>', unknown.text, re.S)
    assert errors, unknown.text
    assert "Nothing was recorded" in errors.group(1) and "colour: this gate has no such input" in errors.group(1)
    assert "z" * (ECHO_MAX - 1) + "…: this gate has no such input" in errors.group(1)
    assert "z" * ECHO_MAX not in unknown.text
    assert nul.status_code == 422, nul.text
    assert "Refused (invalid_decision)" in nul.text and "comment: " in nul.text
    assert await _votes(page_door, gate_id) == []


async def test_the_404_page_repeats_a_bounded_part_of_the_gate_id(page_door: FrontDoor) -> None:
    asked = "g" * 5000
    async with _sign_in(page_door, "dana") as dana:
        shown = await dana.get(f"/gates/{asked}")
        posted = await dana.post(f"/gates/{asked}", data={"csrf": _csrf(shown.text), "decision": "Rejected"})
    for page in (shown, posted):
        assert page.status_code == 404, page.text[:500]
        assert f"There is no gate {'g' * (ECHO_MAX - 1)}…." in page.text and "g" * ECHO_MAX not in page.text


async def test_a_comment_over_the_limit_comes_back_by_its_field_and_nothing_is_recorded(page_door: FrontDoor) -> None:
    gate_id, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with _sign_in(page_door, "dana") as dana:
        form = await dana.get(f"/gates/{gate_id}")
        data = {"csrf": _csrf(form.text), "decision": "Rejected", "comment": "x" * 5000}
        again = await dana.post(f"/gates/{gate_id}", data=data)
    assert again.status_code == 422
    assert 'id="comment-error">at most 4096 characters (this one has 5000)' in again.text
    assert "x" * 5000 in again.text  # what was typed is kept
    assert await _votes(page_door, gate_id) == []


async def test_bob_sees_the_gate_without_a_form_and_a_forced_post_is_refused_not_eligible(
    page_door: FrontDoor,
) -> None:
    gate_id, _ = await page_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    async with _sign_in(page_door, "bob") as bob:
        page = await bob.get(f"/gates/{gate_id}")
        forced = await bob.post(f"/gates/{gate_id}", data={"csrf": _csrf(page.text), "decision": "Approved"})
    assert 'id="not-yours"' in page.text and 'name="decision"' not in page.text
    assert forced.status_code == 403 and "Refused (not_eligible)" in forced.text
    assert await _votes(page_door, gate_id) == []


async def test_catalog_names_are_escaped_and_their_links_are_links(page_door: FrontDoor) -> None:
    # (The catalog refuses a `javascript:` link when it loads; the page would show one as text: tests/unit/api.)
    req = request(pipeline=pipeline_name(), groups=("docs",), timeout="1d")
    stage = req.current_stage.model_copy(update={"service_refs": ["evil"]})
    gate_id, _ = await page_door.open_gate(req.model_copy(update={"current_stage": stage}))
    async with _sign_in(page_door, "dana") as dana:
        page = (await dana.get(f"/gates/{gate_id}")).text
    assert "&lt;script&gt;alert(&#39;catalog&#39;)&lt;/script&gt;Evil service" in page
    assert "<script>" not in page and 'href="javascript:' not in page
    assert '<a href="https://runbooks.example.com/evil" rel="noopener noreferrer">Real runbook</a>' in page


async def test_without_dev_mode_nobody_is_listed_the_dev_sign_in_is_refused_and_the_cookie_is_secure(
    settings, names, tmp_path: Path
) -> None:
    async with (
        running_front_door(settings, names, tmp_path, api_session_secret=SECRET) as door,
        httpx.AsyncClient(base_url=door.url, timeout=60) as client,
    ):
        page = await client.get("/sign-in")
        refused = await client.post("/sign-in/dev", data={"csrf": "no form offers one", "user": "dana"})
        home = await client.get("/")
    assert "dana" not in page.text and "directory user" not in page.text
    # No SIGNOFF_API_PUBLIC_URL is no proof of a loopback-only api: behind an ingress it is reached over TLS.
    assert "Secure" in page.headers["set-cookie"]
    assert refused.status_code == 403 and "only in a dev stack" in refused.text
    assert home.status_code == 303 and home.headers["location"].startswith("/sign-in")


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.keys = [RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})]
    await provider.start()
    yield provider
    await provider.stop()


async def test_oidc_sign_in_uses_the_code_flow_with_pkce_and_its_user_decides(
    settings, names, tmp_path: Path, idp: IdentityProvider
) -> None:
    port = _free_port()  # a plain-http loopback public URL: the one case besides dev mode without a Secure cookie
    async with running_front_door(
        settings,
        names,
        tmp_path,
        api_port=port,
        api_public_url=f"http://127.0.0.1:{port}",
        api_session_secret=SECRET,
        oidc_issuer=idp.issuer,
        oidc_audience=AUDIENCE,
        oidc_client_id="signoff-pages",
    ) as door:
        gate_id, _ = await door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
        idp.signing_in = "dana"
        async with httpx.AsyncClient(base_url=door.url, timeout=60) as browser:
            sign_in = await browser.get("/sign-in", params={"next": f"/gates/{gate_id}"})
            assert "Sign in with your identity provider" in sign_in.text and "directory user" not in sign_in.text
            to_idp = await browser.get("/auth/login", params={"next": f"/gates/{gate_id}"})
            assert to_idp.status_code == 303 and to_idp.headers["location"].startswith(idp.issuer + "/auth?")
            assert "Secure" not in to_idp.headers["set-cookie"]
            back = await browser.get(to_idp.headers["location"])  # the identity provider signs dana in
            callback = back.headers["location"]
            landed = await browser.get(callback)
            assert landed.status_code == 303 and landed.headers["location"] == f"/gates/{gate_id}", landed.text
            page = await browser.get(f"/gates/{gate_id}")
            assert "Signed in as <strong>dana</strong>" in page.text
            decided = await browser.post(f"/gates/{gate_id}", data={"csrf": _csrf(page.text), "decision": "Approved"})
            assert f"vote counted: dana approved gate {gate_id}" in decided.text
            replayed = await browser.get(callback)  # the same answer again: no sign-in is under way any more
            assert replayed.status_code == 400
        (authorization,) = idp.authorizations
        assert authorization["code_challenge_method"] == "S256" and authorization["client_id"] == "signoff-pages"
        assert authorization["redirect_uri"] == f"{door.url}/auth/callback" and authorization["nonce"]
        (token_request,) = idp.token_requests
        assert token_request["code_verifier"] and "client_secret" not in token_request

        # A refusal at the identity provider, and an answer whose state is not this sign-in's: nobody signed in.
        idp.signing_in = None
        async with httpx.AsyncClient(base_url=door.url, timeout=60) as browser:
            to_idp = await browser.get("/auth/login", params={"next": "/"})
            refused = await browser.get((await browser.get(to_idp.headers["location"])).headers["location"])
            assert refused.status_code == 403 and "access_denied" in refused.text
            to_idp = await browser.get("/auth/login", params={"next": "/"})
            forged = await browser.get("/auth/callback", params={"code": "stolen", "state": "not-mine"})
            assert forged.status_code == 400
            assert (await browser.get("/")).status_code == 303
