"""The console log format prints a multi-line text (a notification in the dev stack's log) as readable lines."""

from __future__ import annotations

from signoff.runtime.logging import MultilineConsoleRenderer

NOTIFICATION = "Approval needed: checkout\n\nService: Checkout API\nApprove: http://127.0.0.1/approve\n"


def test_a_multi_line_value_is_printed_below_the_line_indented() -> None:
    event = {"event": "notification", "channel": "log", "text": NOTIFICATION}
    rendered = MultilineConsoleRenderer()(None, "info", event)
    lines = rendered.splitlines()
    assert "notification" in lines[0] and "channel=log" in lines[0] and "text=" not in lines[0]
    assert lines[1:] == [
        "  text:",
        "    Approval needed: checkout",
        "",
        "    Service: Checkout API",
        "    Approve: http://127.0.0.1/approve",
    ]
    assert "\\n" not in rendered


def test_single_line_values_stay_on_the_line() -> None:
    rendered = MultilineConsoleRenderer()(None, "info", {"event": "sent", "subject": "gate-1", "attempt": 2})
    assert "\n" not in rendered and "subject=gate-1" in rendered and "attempt=2" in rendered
