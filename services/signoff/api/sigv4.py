"""AWS Signature Version 4 verification, as a CodePipeline endpoint checks it (the AWS CLI and the SDKs sign every
request so): the one place the api computes a signature itself.

The client signs a canonical form of the request -- method, path, query, the headers it lists in `SignedHeaders`
and the SHA-256 of the raw body -- under a key derived from its secret access key, the date, the region and the
service. The server rebuilds that form from what it received, derives the same key from the stored secret and
compares (constant time). Only HMAC-SHA256 and SHA-256 from the standard library are used; nothing is hand-made
beyond the byte layout AWS specifies (docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html).

Pure functions: the caller looks the access key up, passes its secret and the clock, and turns a `SignatureRefused`
into CodePipeline's error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "codepipeline"
MAX_SKEW = timedelta(minutes=5)
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[a-z0-9;._-]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)

# CodePipeline's error names for each way a signature can fail (HTTP 403).
MISSING = "MissingAuthenticationTokenException"
UNRECOGNIZED = "UnrecognizedClientException"
INVALID = "InvalidSignatureException"


class SignatureRefused(Exception):
    """The request is not signed by a known key. `error` is CodePipeline's exception name, `message` its text;
    `access_key_id` the key the request claimed (when it named one)."""

    def __init__(self, error: str, message: str, access_key_id: str | None = None) -> None:
        super().__init__(message)
        self.error, self.message, self.access_key_id = error, message, access_key_id


@dataclass(frozen=True)
class Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 …` header."""

    access_key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(headers: Iterable[tuple[str, str]]) -> Authorization:
    """The request's SigV4 authorization; SignatureRefused when it has none or it is malformed. Temporary
    credentials (`x-amz-security-token`) are refused: signoff issues only long-term access keys."""
    header_map = _header_map(headers)
    if "x-amz-security-token" in header_map:
        raise SignatureRefused(UNRECOGNIZED, "The security token included in the request is invalid.")
    values = header_map.get("authorization")
    if not values:
        raise SignatureRefused(MISSING, "Missing Authentication Token")
    if len(values) > 1:  # two signatures leave open whose request this is
        raise SignatureRefused(INVALID, "The request must carry one Authorization header, not several.")
    match = _AUTHORIZATION.match(values[0])
    if match is None:
        raise SignatureRefused(INVALID, "The Authorization header is not an AWS4-HMAC-SHA256 signature.")
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not re.fullmatch(r"\d{8}", parts[1]):
        raise SignatureRefused(INVALID, "Credential should be scoped to a valid region, service and date.")
    access_key_id, date, region, service, _ = parts
    if service != SERVICE:
        raise SignatureRefused(
            INVALID, f"Credential should be scoped to correct service: '{SERVICE}'.", access_key_id=access_key_id
        )
    signed = tuple(match["signed"].split(";"))
    if "host" not in signed or list(signed) != sorted(signed):
        raise SignatureRefused(
            INVALID, "SignedHeaders must list host, sorted and lower case.", access_key_id=access_key_id
        )
    return Authorization(access_key_id, date, region, service, signed, match["signature"])


def verify(
    authorization: Authorization,
    *,
    secret: str,
    method: str,
    raw_path: str,
    query_string: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    now: datetime,
) -> None:
    """Check the signature of the request as received (path and query exactly as on the wire) against `secret`.
    Raises SignatureRefused (InvalidSignatureException) when it does not match, when a signed header is missing,
    or when the request's time is more than MAX_SKEW from `now`."""
    header_map = _header_map(headers)
    refused = SignatureRefused(
        INVALID,
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
        "Access Key and signing method.",
        access_key_id=authorization.access_key_id,
    )
    amz_date = (header_map.get("x-amz-date") or [""])[0]
    try:
        signed_at = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureRefused(
            INVALID, "X-Amz-Date must be signed and in the form YYYYMMDDTHHMMSSZ.", authorization.access_key_id
        ) from None
    if "x-amz-date" not in authorization.signed_headers or amz_date[:8] != authorization.date:
        raise refused
    if abs(now - signed_at) > MAX_SKEW:
        raise SignatureRefused(
            INVALID,
            f"Signature expired: {amz_date} is now earlier than {(now - MAX_SKEW).strftime(_AMZ_DATE)} "
            f"or later than {(now + MAX_SKEW).strftime(_AMZ_DATE)}.",
            access_key_id=authorization.access_key_id,
        )
    if any(name not in header_map for name in authorization.signed_headers):
        raise refused
    canonical = canonical_request(
        method=method,
        raw_path=raw_path,
        query_string=query_string,
        header_map=header_map,
        signed_headers=authorization.signed_headers,
        body=body,
    )
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, authorization.scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    expected = hmac.new(
        signing_key(secret, authorization.date, authorization.region, authorization.service),
        string_to_sign.encode(),
        hashlib.sha256,
    ).hexdigest()
    if not hmac.compare_digest(expected, authorization.signature):
        raise refused


def canonical_request(
    *,
    method: str,
    raw_path: str,
    query_string: str,
    header_map: dict[str, list[str]],
    signed_headers: tuple[str, ...],
    body: bytes,
) -> str:
    """SigV4's canonical request: the path as sent URI-encoded once more (every service but S3 signs it so), the
    query pairs sorted as sent, each signed header `name:value` trimmed (repeats joined by commas), the body's
    SHA-256."""
    path = quote(raw_path or "/", safe="/~")
    pairs = sorted(pair.partition("=")[::2] for pair in query_string.split("&")) if query_string else []
    query = "&".join(f"{key}={value}" for key, value in pairs)
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(value.split()) for value in header_map[name])}\n" for name in signed_headers
    )
    return "\n".join(
        [
            method.upper(),
            path,
            query,
            canonical_headers,
            ";".join(signed_headers),
            hashlib.sha256(body).hexdigest(),
        ]
    )


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _header_map(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value)
    return found
