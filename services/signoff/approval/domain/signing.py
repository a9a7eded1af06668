"""Decision authenticity: a canonical byte form of a decision, and its HMAC-SHA256 signature per decision source.

Each decision source (``cli``, ``web``, ``slack``, another system) holds a key. The sender builds
``canonical_decision_bytes(...)`` from the decision's fields and sends ``sign(key, canonical)`` with it; the approval
service rebuilds the canonical bytes from the fields it received and calls ``verify``. The CLI and any other sender
must use these same functions (or reproduce the format byte for byte), so change the format only with a new
``DECISION_SIGNATURE_KIND``.

Canonical form: UTF-8 JSON, keys sorted, no whitespace, non-ASCII kept as is::

    {"approver":…,"comment":…,"decided_at":"2025-01-02T03:04:05.000000Z","decision_id":…,
     "gate":{"attempt":1,"execution":…,"pipeline":…,"stage":…,"step":…},
     "inputs":{…},"kind":"signoff.decision.v1","source":…,"status":"approve","token":…}

Why these fields: the gate key and token bind the signature to one gate's current request, so it cannot be replayed
against another gate or a later run; the decision id makes a replay a duplicate; ``source`` binds it to the key
that signed it; ``kind`` keeps a decision signature from being valid as any other message signed with the same key.
"""

import hashlib
import hmac
import json
import string
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from signoff.approval.domain.model import DecisionStatus, GateKey, require_aware
from signoff.approval.domain.refusals import RefusalReason

DECISION_SIGNATURE_KIND = "signoff.decision.v1"
"""Names the canonical format; part of the signed bytes."""

_HEX_DIGITS = frozenset(string.hexdigits)


def format_decided_at(decided_at: datetime) -> str:
    """A decision time as signed: UTC, microseconds, ``Z`` suffix (so every offset spelling signs the same)."""
    require_aware(decided_at, "decided_at")
    return decided_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canonical_decision_bytes(
    *,
    source: str,
    gate: GateKey,
    decision_id: str,
    approver: str,
    status: DecisionStatus | str,
    token: str,
    comment: str,
    inputs: Mapping[str, str],
    decided_at: datetime,
) -> bytes:
    """The deterministic bytes a decision's signature covers.

    ``approver`` is the user id exactly as sent (not case-folded: the signature covers what the sender wrote).
    ``status`` is ``approve`` or ``reject``. ``inputs`` are sorted by name. ``decided_at`` is the sender's time,
    normalised to UTC (see ``format_decided_at``).
    """
    document = {
        "kind": DECISION_SIGNATURE_KIND,
        "source": source,
        "gate": {
            "pipeline": gate.pipeline,
            "execution": gate.execution,
            "stage": gate.stage,
            "step": gate.step,
            "attempt": gate.attempt,
        },
        "decision_id": decision_id,
        "approver": approver,
        "status": DecisionStatus(status).value,
        "token": token,
        "comment": comment,
        "inputs": dict(inputs),
        "decided_at": format_decided_at(decided_at),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(key: bytes, canonical: bytes) -> str:
    """HMAC-SHA256 of ``canonical`` under ``key``, as 64 lowercase hex digits.

    Raises ``ValueError`` for an empty key: anyone could forge a signature made with it.
    """
    if not key:
        raise ValueError("a signing key must not be empty")
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def verify(
    keys_by_source: Mapping[str, bytes | Sequence[bytes]],
    source: str | None,
    signature: str | None,
    canonical: bytes,
) -> RefusalReason | None:
    """Check a decision's signature; ``None`` when authentic, else why not.

    ``keys_by_source`` maps each source to its key, or to several keys while a key is being rotated (any one
    verifies). Checked in order: no signature -> ``unsigned``; no (non-empty) key for ``source`` ->
    ``unknown_source``; no key reproduces the signature -> ``bad_signature``. Comparison is constant-time
    (``hmac.compare_digest``) so timing reveals nothing about how close a forgery came. Hex case is ignored.

    Raises ``TypeError`` when a configured key is ``str`` rather than bytes (a configuration bug, not a refusal).
    """
    if signature is None or not signature.strip():
        return RefusalReason.UNSIGNED
    configured = keys_by_source.get(source) if source else None
    if isinstance(configured, str) or (
        not isinstance(configured, bytes | bytearray) and any(isinstance(key, str) for key in configured or ())
    ):
        # A text key would otherwise be split into characters or encoded some unknown way; make the bug loud.
        raise TypeError(f"signing keys for source {source!r} must be bytes, not str")
    keys = [configured] if isinstance(configured, bytes | bytearray) else list(configured or ())
    # An empty key is a misconfiguration, not a key: treat the source as unknown rather than accept forgeries.
    keys = [key for key in keys if key]
    if not keys:
        return RefusalReason.UNKNOWN_SOURCE
    presented = signature.strip().lower()
    if len(presented) != hashlib.sha256().digest_size * 2 or not set(presented) <= _HEX_DIGITS:
        return RefusalReason.BAD_SIGNATURE
    matched = False
    for key in keys:
        # Check every key, not stopping at the first match, so timing does not reveal which key is current.
        matched |= hmac.compare_digest(sign(bytes(key), canonical).encode("ascii"), presented.encode("ascii"))
    return None if matched else RefusalReason.BAD_SIGNATURE
