"""The approval page in a real browser (Debian's Chromium, driven by Playwright) against `signoff dev up`: the link
from the notification the webhook sink received, the dev sign-in, the decision form, and what the pipeline does
with the answer. Screenshots go to .screenshots/ (git-ignored); docs/images/ holds one of each."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import REPO, SHARED_STACK, System
from tests.support.waiting import eventually_sync

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group(SHARED_STACK)]  # the shared dev stack

OPENED = "io.signoff.gate.opened.v1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root in a container
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO / ".screenshots"
HOSTILE = (
    '<script>document.title="owned"</script> <img src=x onerror="document.title=\'owned\'"> '
    '<a href="javascript:alert(1)">click</a>\n' + "A very long line without breaks " * 640
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _start(system: System, path: Path, user: str = "alice") -> str:
    execution_id = system.signoff("run", str(path), "--var", "tag=2.0.0", user=user).stdout.strip()
    assert re.fullmatch(r"[\w.:-]+", execution_id), execution_id
    return execution_id


def _approve_link(system: System, gate_id: str) -> str:
    (opened,) = eventually_sync(
        lambda: system.sink.of_gate(gate_id, OPENED), timeout=90, what=f"the notification of {gate_id}"
    )
    return opened.body["notification"]["links"]["approve"]


def _gate(system: System, gate_id: str) -> dict:
    return json.loads(system.signoff("show", gate_id, "--json", user="eli").stdout)


def _sign_in(browser: Browser, url: str, user: str, width: int = 1024, audit: bool = False) -> Page:
    """A new browser context at `url`: sent to the sign-in page, signs in as `user`, back at `url` (`audit`: axe
    checks the sign-in page first)."""
    page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
    page.goto(url)
    expect(page).to_have_title(re.compile("Sign in"))
    if audit:
        assert _serious_violations(page) == []
    page.get_by_role("button", name=user, exact=True).click()
    page.wait_for_url(url)
    return page


def _serious_violations(page: Page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def _no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_the_notification_link_signs_dana_in_and_her_approval_with_an_input_reaches_the_pipeline(
    system: System, browser: Browser
):
    path = system.pipeline("page_journey", renames={"checkout_blue_green": "page_journey"})
    execution_id = _start(system, path)
    gate_id = system.waiting_approval("page_journey")["externalExecutionId"]
    link = _approve_link(system, gate_id)
    assert link.endswith(f"/gates/{gate_id}?action=approve")

    # A mail scanner fetches the link first: it gets the sign-in page, and nothing is decided.
    with urllib.request.urlopen(link, timeout=30) as scanned:  # noqa: S310 (the test's own http URL)
        assert scanned.status == 200 and "Sign in" in scanned.read().decode()
    page = _sign_in(browser, link, "dana", audit=True)
    assert _gate(system, gate_id)["status"] == "pending" and _gate(system, gate_id)["votes"] == []

    expect(page.locator("#message")).to_have_text("Test")
    expect(page.locator("#confirm")).to_contain_text("Nothing is decided yet")
    expect(page.get_by_role("button", name="Approve")).to_be_focused()
    foo = page.get_by_label("foo")
    expect(foo).to_have_value("bar")
    for name in ("Checkout API", "Staging", "PreProduction", "Payments worker", "Production EU"):
        expect(page.locator("main")).to_contain_text(name)
    expect(page.locator("#progress")).to_contain_text("0 of 1 approver (group docs)")
    assert _serious_violations(page) == []
    _shot(page, "gate-pending")

    page.set_viewport_size({"width": 375, "height": 800})
    assert _no_horizontal_scroll(page), "the gate page scrolls sideways at 375 px"
    page.set_viewport_size({"width": 1024, "height": 900})

    foo.fill("baz")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#answer")).to_contain_text(f"vote counted: dana approved gate {gate_id}")
    expect(page.locator("#gate-status")).to_contain_text("approved")
    expect(page.locator("#outcome")).to_contain_text("approved")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    _shot(page, "gate-approved")

    system.wait_status(execution_id, "SUCCEEDED")
    assert "foo is baz" in system.signoff("logs", execution_id).stdout

    page.goto(link.split("/gates/")[0] + "/")
    expect(page.get_by_role("heading", name="Gates", exact=True)).to_be_visible()
    assert _serious_violations(page) == []
    page.context.close()


def test_a_rejection_typed_with_the_keyboard_alone_fails_the_pipeline_and_bob_sees_no_form_and_is_refused(
    system: System, browser: Browser
):
    path = system.pipeline("page_reject", renames={"checkout_blue_green": "page_reject"})
    execution_id = _start(system, path)
    gate_id = system.waiting_approval("page_reject")["externalExecutionId"]
    page_url = _approve_link(system, gate_id).replace("?action=approve", "")

    bob = _sign_in(browser, page_url, "bob")
    expect(bob.locator("#not-yours")).to_contain_text("not one of this gate's approvers")
    expect(bob.get_by_role("button", name="Approve")).to_have_count(0)
    # Forced: the form he was not given, posted anyway with his own session and CSRF token.
    bob.evaluate(
        """([csrf]) => {
            const form = document.createElement('form');
            form.method = 'post';
            form.action = location.pathname;
            for (const [name, value] of [['csrf', csrf], ['decision', 'Approved']]) {
                const field = document.createElement('input');
                field.type = 'hidden'; field.name = name; field.value = value; form.appendChild(field);
            }
            document.body.appendChild(form);
            form.submit();
        }""",
        [bob.locator("input[name=csrf]").first.input_value()],
    )
    expect(bob.locator("#answer")).to_contain_text("Refused (not_eligible)")
    _shot(bob, "gate-refused")
    bob.context.close()

    dana = _sign_in(browser, page_url + "?action=reject", "dana")
    expect(dana.get_by_role("button", name="Reject")).to_be_focused()
    # Without the CSRF token, or with a wrong one: 403 and nothing recorded.
    for csrf in (None, "not-the-token"):
        form = {"decision": "Rejected"} | ({"csrf": csrf} if csrf else {})
        answer = dana.request.post(page_url, form=form)
        assert answer.status == 403 and "Nothing was recorded" in answer.text()
    assert _gate(system, gate_id)["votes"] == []

    # Keyboard only: from the focused Reject back to the comment, type it, forward to Reject, Enter.
    dana.keyboard.press("Shift+Tab")
    expect(dana.get_by_role("button", name="Approve")).to_be_focused()
    dana.keyboard.press("Shift+Tab")
    expect(dana.get_by_label("Comment")).to_be_focused()
    dana.keyboard.type("Not today: the <b>freeze</b> is on.")
    dana.keyboard.press("Tab")
    dana.keyboard.press("Tab")
    expect(dana.get_by_role("button", name="Reject")).to_be_focused()
    dana.keyboard.press("Enter")
    expect(dana.locator("#answer")).to_contain_text("rejected gate")
    expect(dana.locator("#gate-status")).to_contain_text("rejected")
    expect(dana.locator(".votes")).to_contain_text("Not today: the <b>freeze</b> is on.")
    system.wait_status(execution_id, "FAILED")
    (vote,) = _gate(system, gate_id)["votes"]
    assert (vote["approver"], vote["status"], vote["comment"]) == (
        "dana",
        "Rejected",
        "Not today: the <b>freeze</b> is on.",
    )
    dana.context.close()


def test_an_input_outside_its_allowed_values_comes_back_by_the_field_and_a_hostile_message_stays_inert(
    system: System, browser: Browser
):
    path = system.pipeline(
        "page_hostile",
        renames={"checkout_blue_green": "page_hostile"},
        approvalMessage=HOSTILE,
        approverInputs=[
            {"name": "region", "defaultValue": "eu", "allowedValues": ["eu", "us"]},
            {"name": "ticket", "required": True},
        ],
    )
    _start(system, path)
    gate_id = system.waiting_approval("page_hostile")["externalExecutionId"]
    page_url = _approve_link(system, gate_id).replace("?action=approve", "")

    page = _sign_in(browser, page_url, "dana", width=375)
    message = page.locator("#message")
    expect(message).to_contain_text('<script>document.title="owned"</script>')
    expect(message).to_contain_text('<a href="javascript:alert(1)">click</a>')
    assert page.locator("#message a, #message script, #message img").count() == 0
    assert page.title() != "owned"
    assert _no_horizontal_scroll(page), "a long message makes the page scroll sideways at 375 px"
    expect(page.get_by_label("region")).to_have_value("eu")
    assert _serious_violations(page) == []

    # A value the select does not offer (as a crafted POST would send) and the required input left empty.
    page.locator("select[name='input.region']").evaluate(
        "select => { const o = document.createElement('option'); o.value = 'mars'; o.text = 'mars';"
        " select.appendChild(o); select.value = 'mars'; }"
    )
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#input-1-error")).to_contain_text("'mars' is not one of: eu, us")
    expect(page.locator("#input-2-error")).to_contain_text("required")
    expect(page.get_by_label("region")).to_have_attribute("aria-invalid", "true")
    assert _gate(system, gate_id)["votes"] == []
    audit = json.loads(system.signoff("audit", gate_id, "--json", user="eli").stdout)
    assert [e for e in audit["entries"] if e["kind"] in ("vote", "refused")] == []
    page.context.close()
