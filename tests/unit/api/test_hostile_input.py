"""The api's parsing of what a client sends, without a server: NUL characters and JSON nested deeper than the
parser goes are refused in each endpoint's own terms, and two credentials in one request prove nobody."""

from __future__ import annotations

import base64

import pytest

from signoff.api import codepipeline, models, sigv4
from signoff.api.app import _parse_cursor
from signoff.api.identity import _text_claim
from signoff.api.problems import ApiProblem, refuse_nul

DEEP = b"[" * 5000 + b"]" * 5000


def test_deep_or_broken_json_is_not_json_to_the_codepipeline_endpoint() -> None:
    assert codepipeline._params(DEEP) is codepipeline._NOT_JSON
    assert codepipeline._params(b"{not json") is codepipeline._NOT_JSON
    assert codepipeline._params(b"") == {}
    assert codepipeline._params(b"null") is None  # JSON, just not an object


@pytest.mark.parametrize("decoded", [b"a\x00b", b"\xff"])
def test_a_next_token_holding_a_nul_or_no_text_is_invalid(decoded: bytes) -> None:
    with pytest.raises(codepipeline.AwsError) as refused:
        codepipeline._page_token({"nextToken": base64.urlsafe_b64encode(decoded).decode()})
    assert refused.value.error == "InvalidNextTokenException"
    assert codepipeline._page_token({"nextToken": codepipeline._next_token("p1")}) == "p1"


@pytest.mark.parametrize("value", ["a\x00b", "abc\n", ""])
def test_codepipeline_names_match_whole(value: str) -> None:
    with pytest.raises(codepipeline.AwsError) as refused:
        codepipeline._string({"name": value}, "name", codepipeline._NAME)
    assert refused.value.error == "ValidationException" and "'name'" in refused.value.message


def test_a_validation_message_survives_a_value_too_deep_to_show() -> None:
    value: list = []
    for _ in range(100_000):
        value = [value]
    assert "too deeply nested" in codepipeline._invalid("name", value, "be a string").message


def test_two_signatures_are_refused() -> None:
    authorization = (
        "AWS4-HMAC-SHA256 Credential=SGFKAAAAAAAAAAAAAAAA/20260101/us-east-1/codepipeline/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
    )
    assert sigv4.parse_authorization([("Authorization", authorization)]).access_key_id == "SGFKAAAAAAAAAAAAAAAA"
    with pytest.raises(sigv4.SignatureRefused) as refused:
        sigv4.parse_authorization([("Authorization", authorization), ("authorization", authorization)])
    assert refused.value.error == sigv4.INVALID


@pytest.mark.parametrize("text", ["2026-01-01T00:00:00+00:00|a\x00b", "2026-01-01T00:00:00\x00|g"])
def test_a_cursor_holding_a_nul_is_invalid(text: str) -> None:
    with pytest.raises(ApiProblem) as refused:
        _parse_cursor(base64.urlsafe_b64encode(text.encode()).decode())
    assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")


def test_a_bulk_request_names_the_item_holding_a_nul() -> None:
    items = [
        models.BulkItem(gate_id="g1", status="Approved"),
        models.BulkItem(gate_id="g2", status="Approved", inputs={"k": "v\x00"}),
    ]
    with pytest.raises(ApiProblem) as refused:
        refuse_nul(models.BulkRequest.model_construct(decisions=items), "invalid_decision")
    assert refused.value.errors[0]["field"] == "decisions[1].inputs.k"


def test_a_claim_holding_a_nul_names_nobody() -> None:
    assert _text_claim({"preferred_username": "dana\x00"}, "preferred_username") is None
    assert _text_claim({"preferred_username": "dana"}, "preferred_username") == "dana"
