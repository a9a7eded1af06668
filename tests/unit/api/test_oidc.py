"""OidcVerifier against a real identity provider's HTTP surface: a discovery document and a JWKS served over HTTP on
127.0.0.1 by the test (aiohttp), real RSA and EC keys, tokens signed with joserfc. The clock is injected, so
expiry and the refresh rate limit are tested without waiting."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from joserfc.jwk import ECKey, RSAKey

from signoff.api.identity import AuthenticationFailed, IdentityProviderUnavailable, OidcVerifier, Principal
from tests.support.oidc import AUDIENCE, NOW, IdentityProvider, sign


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


@pytest.fixture
async def idp(rsa_key: RSAKey, ec_key: ECKey) -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.keys = [rsa_key, ec_key]
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def verifier(idp: IdentityProvider, clock: Clock) -> AsyncIterator[OidcVerifier]:
    verifier = OidcVerifier(idp.issuer, AUDIENCE, clock=clock, leeway_seconds=30)
    yield verifier
    await verifier.aclose()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def refused(verifier: OidcVerifier, token: str) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        await verifier.verify(token)
    assert token not in caught.value.detail
    return caught.value


async def test_an_rs256_token_proves_its_user(verifier, idp, rsa_key):
    principal = await verifier.verify(sign(rsa_key, idp.claims()))

    assert principal == Principal(user="alice", credential="oidc", credential_id="jwt-1")
    assert idp.discovery_requests == 1
    assert idp.jwks_requests == 1


async def test_an_es256_token_proves_its_user(verifier, idp, ec_key):
    principal = await verifier.verify(sign(ec_key, idp.claims(preferred_username="dana"), alg="ES256"))

    assert principal.user == "dana"


async def test_keys_are_cached_between_tokens(verifier, idp, rsa_key, ec_key):
    await verifier.verify(sign(rsa_key, idp.claims()))
    await verifier.verify(sign(ec_key, idp.claims(), alg="ES256"))
    await verifier.verify(sign(rsa_key, idp.claims(jti="jwt-2")))

    assert (idp.discovery_requests, idp.jwks_requests) == (1, 1)


async def test_concurrent_first_requests_fetch_the_keys_once(verifier, idp, rsa_key):
    tokens = [sign(rsa_key, idp.claims(jti=f"jwt-{n}")) for n in range(10)]

    principals = await asyncio.gather(*(verifier.verify(token) for token in tokens))

    assert {p.credential_id for p in principals} == {f"jwt-{n}" for n in range(10)}
    assert (idp.discovery_requests, idp.jwks_requests) == (1, 1)


async def test_a_rotated_key_is_fetched_when_a_token_names_it(verifier, idp, rsa_key):
    await verifier.verify(sign(rsa_key, idp.claims()))
    new_key = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    idp.keys = [new_key]  # the issuer rotated: the old key is gone, a new kid appears

    principal = await verifier.verify(sign(new_key, idp.claims(preferred_username="bob")))

    assert principal.user == "bob"
    assert idp.jwks_requests == 2


async def test_unknown_kids_refetch_the_keys_at_most_once_per_interval(verifier, idp, rsa_key, clock):
    await verifier.verify(sign(rsa_key, idp.claims()))
    stranger = RSAKey.generate_key(2048)
    for n in range(20):
        failure = await refused(verifier, sign(stranger, idp.claims(), kid=f"made-up-{n}"))
        assert failure.reason == "unknown_key"
    assert idp.jwks_requests == 2  # the first fetch, and one refresh for the whole flood

    clock.at += timedelta(seconds=61)
    await refused(verifier, sign(stranger, idp.claims(), kid="made-up-later"))
    assert idp.jwks_requests == 3


async def test_keys_are_fetched_again_after_the_cache_time(idp, rsa_key, clock):
    verifier = OidcVerifier(idp.issuer, AUDIENCE, clock=clock, cache_seconds=600)
    try:
        await verifier.verify(sign(rsa_key, idp.claims()))
        clock.at += timedelta(seconds=601)
        await verifier.verify(sign(rsa_key, idp.claims(exp=int(clock.at.timestamp()) + 60)))
    finally:
        await verifier.aclose()

    assert idp.jwks_requests == 2
    assert idp.discovery_requests == 1  # the issuer's metadata is kept; only its keys are refreshed


async def test_an_explicit_jwks_url_skips_discovery(idp, rsa_key, clock):
    verifier = OidcVerifier(idp.issuer, AUDIENCE, jwks_url=idp.issuer + "/certs", clock=clock)
    try:
        await verifier.verify(sign(rsa_key, idp.claims()))
    finally:
        await verifier.aclose()

    assert (idp.discovery_requests, idp.jwks_requests) == (0, 1)


async def test_an_expired_token_is_refused(verifier, idp, rsa_key):
    token = sign(rsa_key, idp.claims(exp=int((NOW - timedelta(seconds=31)).timestamp())))

    failure = await refused(verifier, token)

    assert failure.reason == "expired_token"
    assert failure.www_authenticate() == (
        'Bearer realm="signoff", error="invalid_token", error_description="the JWT has expired"'
    )


async def test_expiry_allows_the_leeway(verifier, idp, rsa_key):
    token = sign(rsa_key, idp.claims(exp=int((NOW - timedelta(seconds=20)).timestamp())))

    assert (await verifier.verify(token)).user == "alice"


async def test_a_token_without_exp_is_refused(verifier, idp, rsa_key):
    failure = await refused(verifier, sign(rsa_key, idp.claims(exp=None)))

    assert (failure.reason, failure.detail) == ("invalid_token", "the JWT lacks the claim 'exp'")


async def test_a_token_not_yet_valid_is_refused(verifier, idp, rsa_key):
    token = sign(rsa_key, idp.claims(nbf=int((NOW + timedelta(minutes=2)).timestamp())))

    failure = await refused(verifier, token)

    assert (failure.reason, failure.detail) == ("invalid_token", "the JWT is not valid yet")


async def test_a_token_for_another_audience_is_refused(verifier, idp, rsa_key):
    failure = await refused(verifier, sign(rsa_key, idp.claims(aud="another-app")))

    assert failure.reason == "wrong_audience"


async def test_an_audience_list_naming_this_api_is_accepted(verifier, idp, rsa_key):
    principal = await verifier.verify(sign(rsa_key, idp.claims(aud=["account", AUDIENCE])))

    assert principal.user == "alice"


async def test_a_token_of_another_issuer_is_refused(verifier, idp, rsa_key):
    failure = await refused(verifier, sign(rsa_key, idp.claims(iss="https://evil.example.com/")))

    assert failure.reason == "invalid_token"
    assert "not issued by" in failure.detail


async def test_alg_none_is_refused_before_any_key_is_fetched(verifier, idp):
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(idp.claims()).encode())

    failure = await refused(verifier, f"{header}.{payload}.")

    assert failure.reason == "invalid_token"
    assert "'none' is not accepted" in failure.detail
    assert idp.jwks_requests == 0


async def test_hs256_with_the_public_key_as_secret_is_refused(verifier, idp, rsa_key):
    # The classic key-confusion forgery: HMAC over the token with the issuer's published key as the secret.
    secret = rsa_key.as_pem(private=False)
    signing_input = (
        b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()) + "." + b64(json.dumps(idp.claims()).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

    failure = await refused(verifier, f"{signing_input}.{b64(signature)}")

    assert failure.reason == "invalid_token"
    assert "'HS256' is not accepted" in failure.detail


async def test_a_token_signed_by_another_key_under_a_known_kid_is_refused(verifier, idp):
    forger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})  # the issuer's kid, the forger's key

    failure = await refused(verifier, sign(forger, idp.claims()))

    assert (failure.reason, failure.detail) == ("invalid_token", "the JWT's signature does not verify")


async def test_a_tampered_payload_is_refused(verifier, idp, rsa_key):
    header, _, signature = sign(rsa_key, idp.claims()).split(".")
    payload = b64(json.dumps(idp.claims(preferred_username="admin")).encode())

    failure = await refused(verifier, f"{header}.{payload}.{signature}")

    assert failure.reason == "invalid_token"


async def test_a_token_naming_no_user_is_refused(verifier, idp, rsa_key):
    failure = await refused(verifier, sign(rsa_key, idp.claims(preferred_username=None, email=None)))

    assert failure.reason == "invalid_token"
    assert "names no user" in failure.detail


async def test_the_email_claim_names_the_user_when_the_user_claim_is_absent(verifier, idp, rsa_key):
    principal = await verifier.verify(sign(rsa_key, idp.claims(preferred_username=None, jti=None)))

    assert principal == Principal(user="alice@example.com", credential="oidc", credential_id="f0e1-alice")


async def test_the_user_claim_is_configurable(idp, rsa_key, clock):
    verifier = OidcVerifier(idp.issuer, AUDIENCE, user_claim="upn", clock=clock)
    try:
        principal = await verifier.verify(sign(rsa_key, idp.claims(upn="carol")))
    finally:
        await verifier.aclose()

    assert principal.user == "carol"


async def test_a_key_of_the_wrong_type_for_the_algorithm_is_not_used(verifier, idp, ec_key):
    # The EC key's kid with an RSA algorithm: no RSA key has that kid.
    forger = RSAKey.generate_key(2048, parameters={"kid": "ec-1"})

    failure = await refused(verifier, sign(forger, idp.claims()))

    assert failure.reason == "unknown_key"


async def test_garbage_is_an_invalid_token(verifier, idp):
    for garbage in ("not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", str(uuid.uuid4())):
        failure = await refused(verifier, garbage)
        assert failure.reason == "invalid_token"


async def test_a_discovery_document_of_another_issuer_is_not_trusted(verifier, idp, rsa_key):
    idp.discovery_issuer = "https://evil.example.com/"

    with pytest.raises(IdentityProviderUnavailable, match="names another issuer"):
        await verifier.verify(sign(rsa_key, idp.claims()))
    assert idp.jwks_requests == 0


async def test_an_unreachable_issuer_is_unavailable_not_unauthenticated(idp, rsa_key, clock):
    token = sign(rsa_key, idp.claims())
    await idp.stop()
    verifier = OidcVerifier(idp.issuer, AUDIENCE, clock=clock)
    try:
        with pytest.raises(IdentityProviderUnavailable, match="cannot fetch"):
            await verifier.verify(token)
    finally:
        await verifier.aclose()
        await idp.start()  # the fixture stops it again


async def test_cached_keys_keep_answering_while_the_issuer_fails(verifier, idp, rsa_key, clock):
    await verifier.verify(sign(rsa_key, idp.claims()))
    idp.failing = True
    clock.at += timedelta(hours=2)  # past the cache time: a refetch is tried, fails, the old keys stay
    token = sign(rsa_key, idp.claims(exp=int(clock.at.timestamp()) + 60))

    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert (first.user, second.user) == ("alice", "alice")
    assert idp.jwks_requests == 2  # one failed refetch, not one per request

    clock.at += timedelta(seconds=6)
    idp.failing = False
    await verifier.verify(token)
    assert idp.jwks_requests == 3


async def test_a_failing_issuer_without_cached_keys_is_retried_only_after_a_pause(verifier, idp, rsa_key, clock):
    idp.failing = True
    token = sign(rsa_key, idp.claims())
    for _ in range(3):
        with pytest.raises(IdentityProviderUnavailable):
            await verifier.verify(token)
    assert idp.jwks_requests == 1

    clock.at += timedelta(seconds=6)
    idp.failing = False
    assert (await verifier.verify(token)).user == "alice"


def test_the_www_authenticate_header_of_a_request_without_credentials_has_no_error_code():
    assert AuthenticationFailed("missing_credentials", "send a token").www_authenticate() == 'Bearer realm="signoff"'


def test_the_error_description_is_quoted_safely():
    header = AuthenticationFailed("invalid_token", 'bad "kid" \\ é').www_authenticate()

    assert header.endswith("error_description=\"bad 'kid' ? ?\"")


def test_an_unknown_reason_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown authentication failure reason"):
        AuthenticationFailed("nope", "detail")


def test_a_principal_may_only_what_it_carries():
    service = Principal(user="bot", credential="token", credential_id="tok_1", permissions=frozenset({"act_on_behalf"}))

    assert service.may("act_on_behalf")
    assert not service.may("admin")
