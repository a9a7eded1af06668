"""API tokens on a real PostgreSQL (a fresh migrated database per test): stored only as a digest, revocable,
expiring, their last use recorded; and the Authenticator that turns a bearer header into a Principal (API tokens,
OIDC JWTs against a JWKS served over HTTP, admins)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from joserfc.jwk import RSAKey

from signoff.api.identity import (
    AuthenticationFailed,
    Authenticator,
    OidcVerifier,
    Principal,
    issue_token,
    token_digest,
)
from signoff.api.repository import SCHEMA, ApiRepository
from signoff.api.settings import ApiSettings
from signoff.runtime.db import create_pool
from tests.support.oidc import AUDIENCE, IdentityProvider, sign

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authenticator(pool, clock) -> Authenticator:
    return Authenticator(pool, oidc=None, admins=frozenset({"root"}), clock=clock)


async def issue(pool, user="alice", *, lifetime=timedelta(days=30), permissions=(), name="laptop", now=NOW):
    async with pool.acquire() as conn:
        return await issue_token(
            conn, ApiRepository(), user=user, name=name, permissions=permissions, lifetime=lifetime, now=now
        )


async def refused(authenticator: Authenticator, header: str | None) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(header)
    return caught.value


async def test_a_token_authenticates_its_user(pool, authenticator):
    token, text = await issue(pool, permissions=("act_on_behalf",))

    principal = await authenticator.authenticate(f"Bearer {text}")

    assert principal == Principal(
        user="alice", credential="token", credential_id=token.id, permissions=frozenset({"act_on_behalf"})
    )
    assert text.startswith("sgf_") and len(text) == 47


async def test_only_the_digest_is_stored(pool):
    token, text = await issue(pool)

    async with pool.acquire() as conn:
        row = await conn.fetchrow(f'SELECT t.*, t::text AS whole FROM "{SCHEMA}".tokens t')  # noqa: S608
    assert row["id"] == token.id
    assert bytes(row["token_digest"]) == token_digest(text)
    for stored in (row["whole"], *(str(v) for v in row.values())):
        assert text not in stored
        assert text[len("sgf_") :] not in stored


async def test_a_revoked_token_is_refused(pool, authenticator, clock):
    token, text = await issue(pool)
    await authenticator.authenticate(f"Bearer {text}")

    async with pool.acquire() as conn:
        revoked = await ApiRepository().revoke_token(conn, token.id, clock.at)
    failure = await refused(authenticator, f"Bearer {text}")

    assert revoked is not None and revoked.revoked_at == NOW
    assert (failure.reason, failure.detail) == ("revoked_token", f"API token {token.id} was revoked")
    assert text not in failure.www_authenticate()


async def test_revoking_twice_keeps_the_first_time_and_an_unknown_id_is_none(pool):
    token, _ = await issue(pool)
    repository = ApiRepository()
    async with pool.acquire() as conn:
        await repository.revoke_token(conn, token.id, NOW)
        again = await repository.revoke_token(conn, token.id, NOW + timedelta(hours=1))
        missing = await repository.revoke_token(conn, "tok_0000000000000000", NOW)

    assert again is not None and again.revoked_at == NOW
    assert missing is None


async def test_a_token_expires(pool, authenticator, clock):
    token, text = await issue(pool, lifetime=timedelta(days=1))
    clock.at = NOW + timedelta(hours=23, minutes=59)
    assert (await authenticator.authenticate(f"Bearer {text}")).user == "alice"

    clock.at = NOW + timedelta(days=1)
    failure = await refused(authenticator, f"Bearer {text}")

    assert (failure.reason, failure.detail) == ("expired_token", f"API token {token.id} expired")


async def test_last_use_is_recorded_at_most_once_a_minute(pool, authenticator, clock):
    token, text = await issue(pool)
    repository = ApiRepository()

    async def last_used():
        async with pool.acquire() as conn:
            return (await repository.token_by_id(conn, token.id)).last_used_at

    assert await last_used() is None
    clock.at = NOW + timedelta(minutes=5)
    await authenticator.authenticate(f"Bearer {text}")
    assert await last_used() == clock.at

    first_use = clock.at
    clock.at = first_use + timedelta(seconds=30)
    await authenticator.authenticate(f"Bearer {text}")
    assert await last_used() == first_use  # within the minute: no write

    clock.at = first_use + timedelta(minutes=2)
    await authenticator.authenticate(f"Bearer {text}")
    assert await last_used() == clock.at


async def test_list_tokens_by_user(pool):
    first, _ = await issue(pool, "alice", name="laptop")
    second, _ = await issue(pool, "alice", name="ci", now=NOW + timedelta(minutes=1))
    other, _ = await issue(pool, "bob")
    repository = ApiRepository()
    async with pool.acquire() as conn:
        alices = await repository.list_tokens(conn, "alice")
        everyone = await repository.list_tokens(conn)

    assert [t.id for t in alices] == [first.id, second.id]
    assert {t.id for t in everyone} == {first.id, second.id, other.id}


async def test_bad_headers_and_unknown_tokens_are_refused(pool, authenticator):
    _, text = await issue(pool)
    cases = {
        None: "missing_credentials",
        "": "missing_credentials",
        f"Basic {text}": "invalid_token",
        "Bearer ": "invalid_token",
        "Bearer sgf_short": "invalid_token",
        f"Bearer {text[:-1]}A" if not text.endswith("A") else f"Bearer {text[:-1]}B": "invalid_token",
        "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln": "invalid_token",  # a JWT, but OIDC is not configured
    }
    for header, reason in cases.items():
        failure = await refused(authenticator, header)
        assert failure.reason == reason, header
        assert text not in failure.detail
    assert (await authenticator.authenticate(f"bearer {text}")).user == "alice"  # the scheme is case-insensitive


async def test_a_listed_admin_gets_the_admin_permission(pool, authenticator):
    _, text = await issue(pool, "root")
    _, admin_token = await issue(pool, "carol", permissions=("admin",))

    assert (await authenticator.authenticate(f"Bearer {text}")).may("admin")
    assert (await authenticator.authenticate(f"Bearer {admin_token}")).may("admin")


async def test_unknown_permissions_are_refused_by_the_database_too(pool):
    with pytest.raises(ValueError, match="unknown permission 'superuser'"):
        await issue(pool, permissions=("superuser",))
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await ApiRepository().create_token(
                conn,
                token_id="tok_x",
                user_id="alice",
                name="x",
                digest=token_digest("sgf_x"),
                permissions=["superuser"],
                created_at=NOW,
                expires_at=NOW + timedelta(days=1),
            )


async def test_jwts_and_tokens_through_one_authenticator(pool, clock):
    idp = IdentityProvider()
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    idp.keys = [key]
    await idp.start()
    oidc = OidcVerifier(idp.issuer, AUDIENCE, clock=clock)
    try:
        authenticator = Authenticator(pool, oidc=oidc, admins=frozenset({"dana"}), clock=clock)
        _, text = await issue(pool, "alice")

        by_jwt = await authenticator.authenticate("Bearer " + sign(key, idp.claims(preferred_username="dana")))
        by_token = await authenticator.authenticate("Bearer " + text)
        wrong_audience = await refused(authenticator, "Bearer " + sign(key, idp.claims(aud="other")))
    finally:
        await oidc.aclose()
        await idp.stop()

    assert by_jwt == Principal(user="dana", credential="oidc", credential_id="jwt-1", permissions=frozenset({"admin"}))
    assert by_token.user == "alice" and not by_token.may("admin")
    assert wrong_audience.reason == "wrong_audience"


async def test_from_settings(pool):
    settings = ApiSettings(oidc_issuer="https://idp.example.com/realms/x", oidc_audience="api", api_admins="a, b")
    authenticator = Authenticator.from_settings(settings, pool)
    assert authenticator.oidc is not None and authenticator.oidc.audience == "api"
    assert authenticator.admins == frozenset({"a", "b"})
    await authenticator.oidc.aclose()

    assert Authenticator.from_settings(ApiSettings(), pool).oidc is None
    with pytest.raises(ValueError, match="SIGNOFF_OIDC_AUDIENCE is required"):
        Authenticator.from_settings(ApiSettings(oidc_issuer="https://idp.example.com/"), pool)
