"""The Teams cards the notifier renders, parsed and validated by the Adaptive Cards JavaScript library itself
(the npm package `adaptivecards`, run under Node.js): the real parser a Teams client uses, not a stand-in."""

from __future__ import annotations

import pytest

from signoff.notifier.domain import render_teams
from tests.support.adaptive_cards import card_problems
from tests.unit.notifier.builders import hard_views

pytestmark = pytest.mark.integration


def test_every_rendered_teams_card_parses_as_a_valid_adaptive_card_1_5() -> None:
    cards = [render_teams(view)["attachments"][0]["content"] for view in hard_views()]
    assert all(card["version"] == "1.5" for card in cards)
    assert card_problems(cards) == [[] for _ in cards]


def test_the_validator_reports_what_teams_would_refuse() -> None:
    bad = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "x", "size": "Huge"}]}
    no_url = {"type": "AdaptiveCard", "version": "1.5", "actions": [{"type": "Action.OpenUrl", "title": "Go"}]}
    assert card_problems([bad, no_url]) == [
        ['Invalid value "Huge" for property "size".'],
        ['Property "url" must be set.'],
    ]
