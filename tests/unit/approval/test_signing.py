"""Decision authenticity: canonical bytes, HMAC-SHA256 signatures, and the refusals verify() returns."""

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from signoff.approval.domain import (
    DECISION_SIGNATURE_KIND,
    DecisionStatus,
    GateKey,
    InvalidDefinition,
    RefusalReason,
    canonical_decision_bytes,
    sign,
    verify,
)
from tests.unit.approval.builders import KEY

CLI_KEY = b"cli-secret-key-for-tests"
SLACK_KEY = b"slack-secret-key-for-tests"
KEYS = {"cli": CLI_KEY, "slack": SLACK_KEY}
DECIDED_AT = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)

FIELDS = {
    "source": "cli",
    "gate": KEY,
    "decision_id": "dec-1",
    "approver": "alice",
    "status": DecisionStatus.APPROVE,
    "token": "tok-123",
    "comment": "Looks good — ship it",
    "inputs": {"window": "tonight", "env": "prod"},
    "decided_at": DECIDED_AT,
}


def canonical(**changes) -> bytes:
    return canonical_decision_bytes(**{**FIELDS, **changes})


class TestCanonicalForm:
    def test_exact_bytes(self):
        # Pinned: the CLI and other senders must produce exactly these bytes. Changing them is a contract change.
        expected = (
            '{"approver":"alice","comment":"Looks good — ship it","decided_at":"2025-03-01T12:30:15.123456Z",'
            '"decision_id":"dec-1","gate":{"attempt":1,"execution":"exec-1","pipeline":"shop","stage":"prod",'
            '"step":"approve"},"inputs":{"env":"prod","window":"tonight"},"kind":"signoff.decision.v1",'
            '"source":"cli","status":"approve","token":"tok-123"}'
        )
        assert canonical() == expected.encode("utf-8")

    def test_is_json_with_the_kind(self):
        document = json.loads(canonical())
        assert document["kind"] == DECISION_SIGNATURE_KIND
        gate = {"pipeline": "shop", "execution": "exec-1", "stage": "prod", "step": "approve", "attempt": 1}
        assert document["gate"] == gate

    def test_input_order_does_not_matter(self):
        assert canonical(inputs={"a": "1", "b": "2"}) == canonical(inputs={"b": "2", "a": "1"})

    def test_time_offset_spelling_does_not_matter(self):
        paris = DECIDED_AT.astimezone(timezone(timedelta(hours=1)))
        assert canonical(decided_at=paris) == canonical()

    def test_whole_seconds_still_carry_microseconds(self):
        assert b'"decided_at":"2025-03-01T12:30:15.000000Z"' in canonical(decided_at=DECIDED_AT.replace(microsecond=0))

    def test_status_as_string(self):
        assert canonical(status="approve") == canonical()
        assert b'"status":"reject"' in canonical(status=DecisionStatus.REJECT)

    def test_unknown_status_refused(self):
        with pytest.raises(ValueError, match="Approved"):
            canonical(status="Approved")

    def test_naive_time_refused(self):
        with pytest.raises(InvalidDefinition):
            canonical(decided_at=DECIDED_AT.replace(tzinfo=None))

    def test_json_special_characters_cannot_forge_structure(self):
        # A comment containing JSON must not be confusable with other fields.
        tricky = canonical(comment='x","token":"other')
        assert json.loads(tricky)["token"] == "tok-123"
        assert tricky != canonical(comment="x", token="other")


class TestSignAndVerify:
    def test_sign_is_hmac_sha256_hex(self):
        data = canonical()
        assert sign(CLI_KEY, data) == hmac.new(CLI_KEY, data, hashlib.sha256).hexdigest()
        assert len(sign(CLI_KEY, data)) == 64

    def test_empty_key_cannot_sign(self):
        with pytest.raises(ValueError, match="empty"):
            sign(b"", canonical())

    def test_valid(self):
        data = canonical()
        assert verify(KEYS, "cli", sign(CLI_KEY, data), data) is None

    def test_upper_case_hex_and_surrounding_blanks_accepted(self):
        data = canonical()
        assert verify(KEYS, "cli", f"  {sign(CLI_KEY, data).upper()} ", data) is None

    @pytest.mark.parametrize("signature", [None, "", "   "])
    def test_unsigned(self, signature):
        assert verify(KEYS, "cli", signature, canonical()) is RefusalReason.UNSIGNED

    def test_unsigned_wins_over_unknown_source(self):
        assert verify(KEYS, "nobody", None, canonical()) is RefusalReason.UNSIGNED

    @pytest.mark.parametrize("source", ["nobody", "", None, "CLI"])
    def test_unknown_source(self, source):
        data = canonical()
        assert verify(KEYS, source, sign(CLI_KEY, data), data) is RefusalReason.UNKNOWN_SOURCE

    def test_source_with_an_empty_key_is_unknown(self):
        data = canonical()
        assert verify({"cli": b""}, "cli", "00" * 32, data) is RefusalReason.UNKNOWN_SOURCE
        assert verify({"cli": [b""]}, "cli", "00" * 32, data) is RefusalReason.UNKNOWN_SOURCE

    def test_forged_with_another_key(self):
        data = canonical()
        assert verify(KEYS, "cli", sign(b"attacker", data), data) is RefusalReason.BAD_SIGNATURE

    def test_signed_by_another_source_key(self):
        # Slack's key does not vouch for a decision claiming to come from the CLI.
        data = canonical()
        assert verify(KEYS, "cli", sign(SLACK_KEY, data), data) is RefusalReason.BAD_SIGNATURE

    def test_signature_bound_to_the_source_field(self):
        signed = sign(CLI_KEY, canonical(source="cli"))
        assert verify(KEYS, "cli", signed, canonical(source="slack")) is RefusalReason.BAD_SIGNATURE

    @pytest.mark.parametrize("signature", ["zz" * 32, "ab" * 31, "ab" * 33, "é" * 64, "sha256=" + "ab" * 32])
    def test_malformed_signature(self, signature):
        assert verify(KEYS, "cli", signature, canonical()) is RefusalReason.BAD_SIGNATURE

    @pytest.mark.parametrize(
        "changes",
        [
            {"gate": replace(KEY, execution="exec-2")},
            {"gate": replace(KEY, attempt=2)},
            {"gate": GateKey("shop", "exec-1", "prod", "approve-2", 1)},
            {"decision_id": "dec-2"},
            {"approver": "mallory"},
            {"approver": "Alice"},
            {"status": DecisionStatus.REJECT},
            {"token": "tok-456"},
            {"comment": "Looks good — ship it!"},
            {"comment": ""},
            {"inputs": {"window": "now", "env": "prod"}},
            {"inputs": {"window": "tonight"}},
            {"inputs": {"window": "tonight", "env": "prod", "extra": "1"}},
            {"decided_at": DECIDED_AT + timedelta(microseconds=1)},
        ],
    )
    def test_tampered_field(self, changes):
        signature = sign(CLI_KEY, canonical())
        assert verify(KEYS, "cli", signature, canonical(**changes)) is RefusalReason.BAD_SIGNATURE

    def test_rotation_accepts_any_configured_key(self):
        data = canonical()
        keys = {"cli": [b"old-key", b"new-key"]}
        assert verify(keys, "cli", sign(b"old-key", data), data) is None
        assert verify(keys, "cli", sign(b"new-key", data), data) is None
        assert verify(keys, "cli", sign(b"other", data), data) is RefusalReason.BAD_SIGNATURE

    def test_bytearray_key(self):
        data = canonical()
        assert verify({"cli": bytearray(CLI_KEY)}, "cli", sign(CLI_KEY, data), data) is None


@pytest.mark.parametrize("keys", [{"cli": "text-key"}, {"cli": ["text-key"]}])
def test_text_keys_are_a_configuration_error(keys):
    with pytest.raises(TypeError, match="bytes"):
        verify(keys, "cli", "ab" * 32, canonical())
