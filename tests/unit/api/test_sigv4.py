"""SigV4 verification against requests signed by botocore's own signer (the one the AWS CLI and boto3 use)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from signoff.api import sigv4

KEY_ID, SECRET = "SGFKTESTKEY000000001", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BODY = b'{"pipelineName": "MyFirstPipeline", "stageName": "MyApprovalStage"}'


def signed(
    *,
    secret: str = SECRET,
    service: str = "codepipeline",
    url: str = "http://127.0.0.1:8123/",
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    token: str | None = None,
):
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "CodePipeline_20150709.PutApprovalResult",
            **(headers or {}),
        },
    )
    SigV4Auth(Credentials(KEY_ID, secret, token), service, "eu-west-1").add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    # What the server receives: the Host header the HTTP client adds (botocore signs it from the URL).
    received = [("host", parts.netloc), *((k, v) for k, v in prepared.headers.items())]
    at = datetime.strptime(prepared.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return received, parts.path, parts.query, prepared.body or b"", at


def check(received, path, query, body, now, *, secret: str = SECRET, method: str = "POST") -> None:
    authorization = sigv4.parse_authorization(received)
    sigv4.verify(
        authorization,
        secret=secret,
        method=method,
        raw_path=path,
        query_string=query,
        headers=received,
        body=body,
        now=now,
    )


def test_a_request_signed_by_botocore_verifies():
    received, path, query, body, at = signed()
    check(received, path, query, body, at)
    assert sigv4.parse_authorization(received).access_key_id == KEY_ID


def test_a_path_and_a_query_with_characters_to_encode_verify():
    received, path, query, body, at = signed(url="http://127.0.0.1:8123/a%20b/c~d?b=2&a=1&a=0&e=x%2Fy")
    check(received, path, query, body, at)


def test_headers_with_repeated_spaces_verify():
    received, path, query, body, at = signed(headers={"X-Custom": "  two   spaces  "})
    check(received, path, query, body, at)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r, p, q, b: (r, p, q, b + b" "),  # the body
        lambda r, p, q, b: (r, "/other", q, b),  # the path
        lambda r, p, q, b: (r, p, "x=1", b),  # the query
        lambda r, p, q, b: (
            [(k, "CodePipeline_20150709.GetPipelineState" if k == "X-Amz-Target" else v) for k, v in r],
            p,
            q,
            b,
        ),  # a signed header
    ],
    ids=["body", "path", "query", "signed-header"],
)
def test_a_changed_request_is_refused(tamper):
    received, path, query, body, at = signed()
    with pytest.raises(sigv4.SignatureRefused) as refused:
        check(*tamper(received, path, query, body), at)
    assert refused.value.error == sigv4.INVALID and refused.value.access_key_id == KEY_ID


def test_another_method_is_refused():
    received, path, query, body, at = signed()
    with pytest.raises(sigv4.SignatureRefused, match="does not match"):
        check(received, path, query, body, at, method="PUT")


def test_the_wrong_secret_is_refused():
    received, path, query, body, at = signed(secret="not-the-secret")
    with pytest.raises(sigv4.SignatureRefused) as refused:
        check(received, path, query, body, at)
    assert refused.value.error == sigv4.INVALID


def test_five_minutes_of_skew_pass_and_more_is_refused():
    received, path, query, body, at = signed()
    check(received, path, query, body, at + timedelta(minutes=5))
    check(received, path, query, body, at - timedelta(minutes=5))
    for skew in (timedelta(minutes=5, seconds=1), -timedelta(minutes=5, seconds=1)):
        with pytest.raises(sigv4.SignatureRefused, match="Signature expired") as refused:
            check(received, path, query, body, at + skew)
        assert refused.value.error == sigv4.INVALID


def test_another_service_is_refused():
    received, *_ = signed(service="s3")
    with pytest.raises(sigv4.SignatureRefused, match="codepipeline") as refused:
        sigv4.parse_authorization(received)
    assert refused.value.error == sigv4.INVALID


def test_temporary_credentials_are_refused():
    received, *_ = signed(token="FwoGZXIvYXdzEXAMPLE")
    with pytest.raises(sigv4.SignatureRefused) as refused:
        sigv4.parse_authorization(received)
    assert refused.value.error == sigv4.UNRECOGNIZED


def test_no_authorization_is_a_missing_token():
    received, *_ = signed()
    unsigned = [(k, v) for k, v in received if k.lower() != "authorization"]
    with pytest.raises(sigv4.SignatureRefused) as refused:
        sigv4.parse_authorization(unsigned)
    assert refused.value.error == sigv4.MISSING


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sgf_abc",
        "AWS4-HMAC-SHA256 Credential=K/2026/eu-west-1/codepipeline/aws4_request, SignedHeaders=host, Signature="
        + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=K/20260101/eu-west-1/codepipeline/aws4_request, SignedHeaders=x-amz-date, "
        "Signature=" + "0" * 64,
    ],
    ids=["not-sigv4", "bad-date", "host-unsigned"],
)
def test_a_malformed_authorization_is_an_invalid_signature(header):
    with pytest.raises(sigv4.SignatureRefused) as refused:
        sigv4.parse_authorization([("Authorization", header)])
    assert refused.value.error == sigv4.INVALID
