"""Renderers: every channel names the CD metadata with links, labels unresolved items, and escapes user content."""

from __future__ import annotations

import html
import json
import re

import pytest

from signoff.contracts.base import format_utc
from signoff.contracts.events import GateRejected
from signoff.notifier.domain import (
    ApprovalView,
    OutcomeView,
    document,
    render,
    render_email,
    render_slack,
    render_teams,
    render_webhook,
    slack_escape,
    teams_escape,
    to_json,
)

from .builders import INJECTIONS, NOW, PAGE, catalog, example_data, hard_views, opened

NAMES = (
    "Checkout API",
    "Payments worker",
    "Storefront",
    "Staging",
    "PreProduction",
    "Production EU",
    "Production US",
    "Production",
    "All production regions",
    "Staging cluster",
    "EKS eu-west-1",
    "EKS us-east-1",
    "Argo CD production EU",
    "registry.example.com/checkout",
    "1.4.2",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "registry.example.com/payments-worker",
    "CHG-1042",
)
LINKS = (
    "https://git.example.com/shop/checkout",
    "https://runbooks.example.com/services/checkout",
    "https://status.example.com/environments/prod_us",
    "https://oncall.example.com/schedules/prod-eu",
    "https://argocd.prod-eu.example.com",
    "https://signoff.example.com/gates/gate-5d0c6f0e?action=approve",
    "https://signoff.example.com/gates/gate-5d0c6f0e?action=reject",
)


@pytest.fixture(scope="module")
def view() -> ApprovalView:
    return ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE)


def slack_text(payload: dict) -> str:
    return "\n".join(
        block["text"]["text"] for block in payload["blocks"] if block["type"] in ("section", "header")
    ).replace("\u200b", "")


def teams_text(payload: dict) -> str:
    card = payload["attachments"][0]["content"]
    return "\n".join(block["text"] for block in card["body"])


def unescape_teams(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def channel_texts(view: ApprovalView) -> dict[str, str]:
    """Each channel's human-readable text, with the channel's own escaping undone (to check names and links)."""
    mail = render_email(view)
    return {
        "slack": html.unescape(slack_text(render_slack(view))),
        "teams": unescape_teams(teams_text(render_teams(view))),
        "email_text": mail.text,
        "email_html": html.unescape(mail.html),
    }


def test_every_channel_names_services_environments_infrastructures_artifacts_and_gitops(view: ApprovalView) -> None:
    for channel, text in channel_texts(view).items():
        for name in NAMES:
            assert name in text, f"{channel} lacks {name!r}"
        links = (*LINKS, "https://grafana.example.com/d/k8s-workloads?var-cluster=prod-eu-1&var-namespace=shop")
        for link in links:
            if channel in ("slack", "teams") and "action=" in link:
                continue  # approve / reject are buttons there, checked below
            assert link in text, f"{channel} lacks {link!r}"


def test_no_raw_expression_in_prose_every_one_is_labelled(view: ApprovalView) -> None:
    for channel, text in channel_texts(view).items():
        for match in re.finditer(r"<\+", text):
            before = text[max(0, match.start() - 12) : match.start()]
            assert before.endswith("unresolved: "), f"{channel}: bare expression near {text[match.start() - 40 :]!r}"
        assert "unresolved: <+pipeline.variables.svc> (not known until stage Deploy to production runs)" in text
        assert "unresolved: ghost_service (service not in the catalog)" in text
        assert "(unresolved: <+pipeline.variables.region>)" in text


def test_slack_buttons_and_teams_actions_link_to_the_gate(view: ApprovalView) -> None:
    actions = render_slack(view)["blocks"][-1]
    assert [(e["text"]["text"], e["url"]) for e in actions["elements"]] == [
        ("Approve", "https://signoff.example.com/gates/gate-5d0c6f0e?action=approve"),
        ("Reject", "https://signoff.example.com/gates/gate-5d0c6f0e?action=reject"),
    ]
    card = render_teams(view)["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert [a["url"] for a in card["content"]["actions"]] == [
        "https://signoff.example.com/gates/gate-5d0c6f0e?action=approve",
        "https://signoff.example.com/gates/gate-5d0c6f0e?action=reject",
    ]


@pytest.fixture(scope="module")
def hostile() -> ApprovalView:
    payload = " ".join(INJECTIONS)
    base = opened()
    stage = base.upcoming_stages[0].model_copy(update={"custom_metadata": {"note": payload}})
    event = base.model_copy(
        update={
            "message": f"Please check {payload}",
            "custom_data": {"why": payload},
            "upcoming_stages": [stage, *base.upcoming_stages[1:]],
        }
    )
    return ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE)


def test_slack_escapes_injection(hostile: ApprovalView) -> None:
    raw = "\n".join(block["text"]["text"] for block in render_slack(hostile)["blocks"] if "text" in block)
    assert "<script>" not in raw and "<!channel>" not in raw and "<http://evil" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "&lt;!channel&gt;" in raw
    assert "&amp;amp;" in raw
    assert "*bold*" not in raw and "\u200b*\u200bbold\u200b*\u200b" in raw
    assert raw.count("&lt;script&gt;") == 3  # message, custom metadata, custom data
    assert "<!channel>" not in render_slack(hostile)["text"]


def test_teams_escapes_markdown(hostile: ApprovalView) -> None:
    raw = teams_text(render_teams(hostile))
    assert "<script>" not in raw and "[x](http://evil)" not in raw and "*bold*" not in raw
    assert r"\<script\>alert(1)\</script\>" in raw
    assert r"\[x\](http://evil)" in raw
    assert r"\*bold\*" in raw and r"\&amp;" in raw
    assert unescape_teams(raw).count("<script>alert(1)</script>") == 3


def test_html_email_escapes_and_text_email_keeps_content(hostile: ApprovalView) -> None:
    mail = render_email(hostile)
    assert "<script>" not in mail.html and "<!channel>" not in mail.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert "&amp;amp;" in mail.html
    assert "[x](http://evil)" in mail.html  # harmless in HTML: no link is made
    assert 'href="http://evil"' not in mail.html
    assert "<script>alert(1)</script>" in mail.text  # text/plain is not interpreted
    assert "\n" not in mail.subject


def test_hostile_names_in_subject_and_titles_are_escaped() -> None:
    event = opened(pipeline_name="<b>Pay</b> *now*", stage_name="Deploy & <!here>")
    view = ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE)
    assert "<!here>" not in to_json(render_slack(view))
    assert "<b>" not in render_email(view).html
    assert "<b>" not in teams_text(render_teams(view))


def test_a_line_break_in_a_bold_name_does_not_break_the_bold() -> None:
    """Bold cannot span lines in mrkdwn or Teams markdown: a pipeline name with CR/LF is bolded as one line."""
    event = opened(pipeline_name="Pay\r\nments\ndeploy")
    view = ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE)
    assert "*Pay ments deploy*" in slack_text(render_slack(view))
    assert "**Pay ments deploy**" in teams_text(render_teams(view))


def test_webhook_payload_is_the_event_data_with_the_resolved_notification(view: ApprovalView) -> None:
    message = render_webhook(view)
    body = json.loads(message.body)
    notification = body.pop("notification")
    assert body == opened().model_dump(mode="json")
    assert notification["title"] == document(view).title and notification["text"] == render_email(view).text
    assert set(notification["links"]) == {"approve", "reject"}
    assert all(url.startswith(PAGE) for url in notification["links"].values())
    headers = dict(message.headers)
    assert headers["ce-type"] == "io.signoff.gate.opened.v1" and headers["ce-subject"] == "gate-5d0c6f0e"
    assert headers["ce-id"] == view.event_id


def test_rendering_is_deterministic(view: ApprovalView) -> None:
    again = ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE)
    for channel in ("slack", "teams", "email", "webhook"):
        assert render(view, channel) == render(again, channel)
    assert render(view, "slack").body == to_json(render_slack(view))
    with pytest.raises(ValueError, match="unknown channel type"):
        render(view, "pager")  # type: ignore[arg-type]


def test_outcome_renders_on_every_channel() -> None:
    event = GateRejected.model_validate(example_data("io.signoff.gate.rejected.v1"))
    view = OutcomeView.from_event(event, approval_page_url=PAGE, opened=opened())
    assert "Rejected: Payments release" in render_email(view).subject
    assert "Error rate on staging is up." in render_email(view).text
    assert "by carol" in slack_text(render_slack(view))
    assert "Rejected" in teams_text(render_teams(view))
    assert json.loads(render_webhook(view).body)["cause"] == "approver"


def test_long_messages_split_into_slack_blocks_within_limits() -> None:
    event = opened(message="\n".join(f"line {i} " + "x" * 80 for i in range(200)))
    view = ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE)
    for block in render_slack(view)["blocks"]:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000


def test_escape_helpers() -> None:
    assert slack_escape("a & <b> payments_api") == "a &amp; &lt;b&gt; payments_api"
    assert teams_escape("# title\n- item\n1. one") == "\\# title\n\n\\- item\n\n1\\. one"


def test_slack_stays_within_block_limits_with_many_stages() -> None:
    base = opened()
    stages = [
        base.upcoming_stages[0].model_copy(update={"identifier": f"s{i}", "name": f"Stage {i}"}) for i in range(80)
    ]
    view = ApprovalView.from_gate_opened(
        base.model_copy(update={"upcoming_stages": stages}), catalog(), now=NOW, approval_page_url=PAGE
    )
    blocks = render_slack(view)["blocks"]
    assert len(blocks) <= 50
    assert blocks[-1]["type"] == "actions"
    assert "the gate page" in blocks[-2]["text"]["text"]


def test_a_single_huge_line_is_cut_without_half_entities() -> None:
    event = opened(custom_data={"blob": "<&>" * 2700})
    view = ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE)
    for block in render_slack(view)["blocks"]:
        if block["type"] == "section":
            text = block["text"]["text"]
            assert len(text) <= 3000
            assert re.search(r"&(?!amp;|lt;|gt;)", text) is None


def test_partly_known_values_mark_their_expressions() -> None:
    base = opened()
    stage = base.upcoming_stages[0].model_copy(update={"custom_metadata": {"note": "deploy <+env.name> now"}})
    view = ApprovalView.from_gate_opened(
        base.model_copy(update={"upcoming_stages": [stage]}), catalog(), now=NOW, approval_page_url=PAGE
    )
    item = dict(view.upcoming_stages[0].custom_metadata)["note"]
    assert not item.resolved
    assert item.display() == "deploy (unresolved: <+env.name>) now (not known until stage Deploy to production runs)"
    assert "deploy (unresolved: <+env.name>) now" in render_email(view).text


def test_approver_inputs_show_default_required_and_allowed_values() -> None:
    inputs = [{"name": "region", "default_value": "eu", "required": True, "allowed_values": ["eu", "us"]}]
    view = ApprovalView.from_gate_opened(opened(approver_inputs=inputs), catalog(), now=NOW, approval_page_url=PAGE)
    assert "region (default: eu; required; one of eu, us)" in render_email(view).text


def test_reminder_title(view: ApprovalView) -> None:
    reminder = view.restated(now=NOW, headline="Reminder: approval needed", purpose="reminder:1h")
    assert render_email(reminder).subject == "Reminder: approval needed: Payments release / Deploy to staging"


def test_a_reminders_webhook_is_a_cloudevent_of_its_own_not_a_repeat_of_the_request(view: ApprovalView) -> None:
    """Same source and id is a duplicate to a CloudEvents receiver: a reminder must not carry the request's id."""
    request = dict(render_webhook(view).headers)
    reminder_message = render_webhook(
        view.restated(now=NOW, headline="Reminder: approval needed", purpose="reminder:1h")
    )
    reminder = dict(reminder_message.headers)
    assert reminder["ce-id"] == f"{request['ce-id']}/reminder:1h" != request["ce-id"]
    assert reminder["ce-type"] == request["ce-type"]  # its data is still the gate's GateOpened
    notification = json.loads(reminder_message.body)["notification"]
    assert notification["purpose"] == "reminder:1h" and notification["title"].startswith("Reminder: ")
    assert "purpose" not in json.loads(render_webhook(view).body)["notification"]


# -- payloads Slack accepts ---------------------------------------------------------------------------------------


def assert_slack_accepts(payload: dict) -> None:
    """Every block passes slack_sdk's Block Kit model validation (lengths, counts, required fields) and survives
    its round trip unchanged (no field the models do not know)."""
    from slack_sdk.models.blocks import Block

    assert len(payload["blocks"]) <= 50 and payload["text"]
    for raw in payload["blocks"]:
        block = Block.parse(raw)
        assert block is not None, raw
        block.validate_json()
        assert block.to_dict() == raw


@pytest.mark.parametrize("index", range(8))
def test_every_rendered_slack_payload_passes_block_kit_validation(index: int) -> None:
    assert_slack_accepts(render_slack(hard_views()[index]))


def test_a_slack_header_is_escaped_then_cut_without_splitting_an_entity() -> None:
    event = opened().model_copy(update={"pipeline_name": "R&D " + "&" * 140})
    view = ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE)
    header = render_slack(view)["blocks"][0]["text"]["text"]
    assert len(header) <= 150
    assert header.startswith("Approval needed: R&amp;D &amp;&amp;")
    assert re.search(r"&(?!amp;|lt;|gt;)", header) is None and header.endswith("&amp;")


def test_webhooks_carry_ce_time() -> None:
    view = ApprovalView.from_gate_opened(opened(), catalog(), now=NOW, approval_page_url=PAGE)
    assert dict(render_webhook(view).headers)["ce-time"] == view.opened_at
    rejected = GateRejected.model_validate(example_data("io.signoff.gate.rejected.v1"))
    outcome = OutcomeView.from_event(rejected, approval_page_url=PAGE, opened=opened())
    assert dict(render_webhook(outcome).headers)["ce-time"] == format_utc(rejected.rejected_at)


def _teams_bytes(payload: dict) -> int:
    return len(to_json(payload).encode())


def test_teams_cards_stay_within_the_byte_budget() -> None:
    """16 upcoming stages, or large custom data, once gave cards Teams refuses (over ~28 KB)."""
    from signoff.notifier.domain.render import TEAMS_MAX_BYTES

    base = opened()
    stages = [
        base.upcoming_stages[0].model_copy(update={"identifier": f"s{i}", "name": f"Stage {i}"}) for i in range(16)
    ]
    for event, dropped in (
        (base.model_copy(update={"upcoming_stages": stages}), True),  # whole sections left to the gate page
        (opened(custom_data={f"k{i}": "v" * 2000 for i in range(120)}), False),  # one long block, cut
    ):
        view = ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE)
        payload = render_teams(view)
        assert _teams_bytes(payload) <= TEAMS_MAX_BYTES
        card = payload["attachments"][0]["content"]
        assert card["version"] == "1.5" and card["actions"]  # the buttons always stay
        texts = [block["text"] for block in card["body"]]
        assert texts[0].startswith("Approval needed")
        assert texts[-1].startswith("More on [the gate page](") is dropped
    # One huge value: its block is cut (never after a lone escaping backslash) and marked.
    view = ApprovalView.from_gate_opened(
        opened(custom_data={"blob": "*" * 8000}), catalog(), now=NOW, approval_page_url=PAGE
    )
    card = render_teams(view)["attachments"][0]["content"]
    (cut,) = [block["text"] for block in card["body"] if "\\*" * 100 in block["text"]]
    assert len(cut) <= 4002 and cut.endswith("\\* …")
    small = render_teams(ApprovalView.from_gate_opened(base, catalog(), now=NOW, approval_page_url=PAGE))
    assert "More on" not in to_json(small)  # a card that fits is whole


def test_a_refused_request_renders_on_every_channel_with_its_reasons() -> None:
    from signoff.contracts.events import RequestRefused

    refused = RequestRefused.model_validate(example_data("io.signoff.gate.request_refused.v1"))
    view = OutcomeView.from_event(refused, approval_page_url=PAGE)
    assert (view.kind, view.gate_id) == ("refused", refused.key.as_path())
    mail = render_email(view)
    assert "Approval request refused: Payments release" in mail.subject
    assert "policy.user_groups: unknown user group 'dosc'" in mail.text and "timeout: 30d is over" in mail.text
    assert_slack_accepts(render_slack(view))
    assert "unknown user group 'dosc'" in teams_text(render_teams(view))
    assert dict(render_webhook(view).headers)["ce-time"] == "2025-03-04T09:30:01Z"
