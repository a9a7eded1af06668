"""Whether a request can be served at all: the approval domain's one set of rules (RequestRefused)."""

from __future__ import annotations

from datetime import timedelta

from signoff.approval.domain.model import Member
from signoff.approval.domain.requests import RequestedRule, refusal_reasons
from signoff.kernel import ApproverInput, TimeoutAction

DOCS = {"docs": [Member("dana"), Member("Dave")]}


def reasons(*rules: RequestedRule, **overrides) -> dict[str, str]:
    arguments = {
        "directory": DOCS,
        "known_users": ["dana", "Dave", "alice"],
        "disallow_pipeline_executor": False,
        "pipeline_executor": "alice",
        "inputs": (),
        "timeout_action": TimeoutAction.FAIL,
        "requested_timeout": timedelta(hours=1),
        "maximum_timeout": timedelta(days=14),
    } | overrides
    return refusal_reasons(rules, **arguments)


def test_a_servable_request_has_no_reasons() -> None:
    assert reasons(RequestedRule("policy", ("docs",), ("alice",), 3)) == {}


def test_a_typo_in_a_group_and_an_unknown_user_are_refused_by_field() -> None:
    assert reasons(RequestedRule("policy", ("dosc",), ("bob",), 1)) == {
        "policy.user_groups": "unknown user group 'dosc'",
        "policy.users": "unknown user 'bob'",
        "policy.minimum_count": "1 approvals needed but only 0 eligible people",
    }


def test_a_quorum_over_the_eligible_people_is_refused_and_case_folds_like_votes() -> None:
    assert reasons(RequestedRule("policy.rules[1]", ("docs",), (), 3)) == {
        "policy.rules[1].minimum_count": "3 approvals needed but only 2 eligible people"
    }
    # Alice and alice are one person, as they are when votes are counted.
    assert reasons(RequestedRule("policy", (), ("Alice", "alice"), 2)) == {
        "policy.users": "'Alice' and 'alice' are the same user",
        "policy.minimum_count": "2 approvals needed but only 1 eligible person",
    }
    # DAVE in the users list is the directory's Dave, and the executor is not eligible when disallowed.
    assert reasons(RequestedRule("policy", ("docs",), ("DAVE", "alice"), 3), disallow_pipeline_executor=True) == {
        "policy.minimum_count": "3 approvals needed but only 2 eligible people (the pipeline executor may not approve)"
    }


def test_auto_approve_without_a_default_for_a_required_input_is_refused() -> None:
    inputs = (ApproverInput("ticket", required=True), ApproverInput("foo", default_value="bar", required=True))
    assert reasons(RequestedRule("policy", ("docs",)), inputs=inputs, timeout_action=TimeoutAction.APPROVE) == {
        "approver_inputs": "timeout action 'approve' needs a default for required input(s): ticket"
    }


def test_a_timeout_over_the_maximum_is_refused_and_none_leaves_it_to_the_default() -> None:
    rule = RequestedRule("policy", ("docs",))
    assert reasons(rule, requested_timeout=timedelta(days=30)) == {"timeout": "30d is over the maximum of 14d"}
    assert reasons(rule, requested_timeout=timedelta(0)) == {"timeout": "must be a positive duration"}
    assert reasons(rule, requested_timeout=None) == {}


def test_hundreds_of_unknown_names_are_listed_up_to_twenty_so_the_refusal_fits_the_wire() -> None:
    groups = tuple(f"group-{n:03}-of-a-long-name" for n in range(400))
    users = tuple(f"user-{n:03}@example.com" for n in range(400))
    found = reasons(RequestedRule("policy", groups, users, 1))
    assert found["policy.user_groups"].endswith("'group-019-of-a-long-name', and 380 more")
    assert found["policy.users"].startswith("unknown users 'user-000@example.com', ")
    assert found["policy.users"].endswith(", and 380 more")
    assert all(len(reason) <= 4096 for reason in found.values())  # RequestRefused's reason field
