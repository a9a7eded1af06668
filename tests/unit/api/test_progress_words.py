"""A rule's progress in words, as `show`, the pages and a decision's answer print it."""

from __future__ import annotations

import pytest

from signoff.api.gates import progress_words


@pytest.mark.parametrize(
    ("approvals", "minimum", "words"),
    [
        (0, 1, "0 of 1 approver"),
        (1, 1, "1 of 1 approver"),
        (1, 2, "1 of 2 approvers"),
        (2, 2, "2 of 2 approvers"),
        # Two votes counted together as the gate closed: never "2 of 1 approver".
        (2, 1, "2 approvers, 1 needed"),
        (3, 2, "3 approvers, 2 needed"),
    ],
)
def test_progress_in_words(approvals: int, minimum: int, words: str) -> None:
    assert progress_words(approvals, minimum) == words
