"""Who is calling: a bearer credential (a personal API token or an OIDC access token) proven into a Principal.

- API tokens are `sgf_` + 32 random bytes (URL-safe base64), stored only as their SHA-256 digest in the api schema.
  A fast unsalted hash is right for a high-entropy random secret (a slow password hash protects guessable secrets;
  GitHub stores its tokens the same way): nobody can find a preimage, and the lookup stays one index probe.
- OIDC access tokens are JWTs verified with joserfc against the issuer's JWKS: signature with an allow-listed
  asymmetric algorithm, `iss`, `aud`, `exp` / `nbf` / `iat` with a small leeway, and the claim naming the user.

Nothing here logs or echoes a credential; failures carry a reason code and one line for the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import structlog
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import Key, KeySet
from pydantic import TypeAdapter, ValidationError

from signoff.api import sigv4
from signoff.api.access_keys import CredentialsKeyError, SecretBox
from signoff.api.repository import TOUCH_INTERVAL, ApiRepository, ApiToken
from signoff.contracts.base import Identifier
from signoff.contracts.durations import format_duration

if TYPE_CHECKING:
    from signoff.api.settings import ApiSettings

log = structlog.get_logger(__name__)

ADMIN = "admin"
ACT_ON_BEHALF = "act_on_behalf"
PERMISSIONS = frozenset({ADMIN, ACT_ON_BEHALF})
"""What a credential may carry beyond deciding for its own user."""

TOKEN_PREFIX = "sgf_"  # noqa: S105 (a prefix, not a secret)
_TOKEN_TEXT = re.compile(r"^sgf_[A-Za-z0-9_-]{43}$")  # token_urlsafe(32): 43 characters
REALM = "signoff"

# Asymmetric algorithms only: `none` proves nothing, and an HS* token would let anyone holding the (public) JWKS
# forge one by using a public key as the HMAC secret.
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")

Clock = Callable[[], datetime]


def _system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Principal:
    """Who made a request, as its credential proved it."""

    user: str
    """Directory user id: the approver of its decisions, the triggerer of its runs."""
    credential: str
    """How it was proven: `oidc` or `token`."""
    credential_id: str | None
    """The API token's id, or the JWT's `jti` (else its `sub`): what the audit trail names as the credential."""
    permissions: frozenset[str] = field(default_factory=frozenset)
    """`admin` (abort any execution), `act_on_behalf` (a service principal may decide for a user)."""

    def may(self, permission: str) -> bool:
        """True when the credential carries `permission` (no permission implies another)."""
        return permission in self.permissions


class AuthenticationFailed(Exception):
    """A request whose credential is missing or proves nothing: answer 401 with `www_authenticate()`."""

    REASONS = frozenset(
        {"missing_credentials", "invalid_token", "expired_token", "revoked_token", "wrong_audience", "unknown_key"}
    )

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown authentication failure reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        """A code: missing_credentials, invalid_token, expired_token, revoked_token, wrong_audience, unknown_key."""
        self.detail = detail
        """One line for the client; never the credential itself."""

    def www_authenticate(self) -> str:
        """The RFC 6750 `WWW-Authenticate` value. A request without credentials gets no error code (RFC 6750
        section 3.1); every other failure is `invalid_token` with the detail as its description."""
        if self.reason == "missing_credentials":
            return f'Bearer realm="{REALM}"'
        return f'Bearer realm="{REALM}", error="invalid_token", error_description="{_quotable(self.detail)}"'


class IdentityProviderUnavailable(Exception):
    """The OIDC issuer's discovery document or JWKS could not be fetched and no cached keys can answer: the
    request's credential is neither proven nor disproven (answer 503, not 401)."""


def _quotable(text: str) -> str:
    # error_description allows printable ASCII except `"` and `\` (RFC 6750 section 3).
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "'" if c == '"' else "?" for c in text)


# ---------------------------------------------------------------------------------------------------- API tokens


def new_token_text() -> str:
    """A fresh API token: `sgf_` + 32 random bytes from the OS's CSPRNG. Shown once, stored only as its digest."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(text: str) -> bytes:
    """The SHA-256 digest a token is stored and looked up by."""
    return hashlib.sha256(text.encode()).digest()


# Every token expires (docs/identity.md): a bearer secret that outlives the job it was made for is the one that
# leaks unnoticed. Three years covers a service principal's token on a slow rotation cycle while still bounding
# the damage of a forgotten one, and keeps `now + lifetime` far inside what Python's datetime and PostgreSQL's
# timestamptz can hold (a lifetime of millions of days overflows both).
MAX_TOKEN_LIFETIME = timedelta(days=3 * 365)

# A credential's user is the approver of its decisions and the triggerer of its runs: the wire contract's user id
# (no whitespace, no `/`, 1-128 characters), so no credential is made for a user whose every decision is refused.
_USER_ID: TypeAdapter[str] = TypeAdapter(Identifier)


def check_user_id(user: str) -> str:
    """`user` if a credential (API token, access key) may be made for it: a user id as the wire contract's events
    carry it. ValueError saying why not otherwise."""
    try:
        return _USER_ID.validate_python(user)
    except ValidationError as exc:
        raise ValueError(f"{user!r} is not a valid user id: {exc.errors()[0]['msg']}") from None


def check_token_lifetime(lifetime: timedelta) -> timedelta:
    """`lifetime` if a token may live that long (positive, at most MAX_TOKEN_LIFETIME); ValueError otherwise."""
    if lifetime <= timedelta(0):
        raise ValueError("a token's lifetime must be positive")
    if lifetime > MAX_TOKEN_LIFETIME:
        most = f"{format_duration(MAX_TOKEN_LIFETIME)} ({MAX_TOKEN_LIFETIME.days // 365} years)"
        raise ValueError(f"a token's lifetime is at most {most}; every token expires")
    return lifetime


def new_token_id() -> str:
    """A token's public id (`tok_` + 16 hex digits): what `tokens list` shows and `tokens revoke` takes."""
    return "tok_" + secrets.token_hex(8)


async def issue_token(
    conn: asyncpg.Connection,
    repository: ApiRepository,
    *,
    user: str,
    name: str,
    permissions: Iterable[str],
    lifetime: timedelta,
    now: datetime,
) -> tuple[ApiToken, str]:
    """Create an API token for `user` valid for `lifetime` from `now`: the stored row and the token's text (the only
    time it exists outside the caller's hands). ValueError for an unknown permission, a `user` that is not a user
    id (check_user_id) or a lifetime check_token_lifetime refuses."""
    unknown = set(permissions) - PERMISSIONS
    if unknown:
        raise ValueError(f"unknown permission {sorted(unknown)[0]!r}; known: {', '.join(sorted(PERMISSIONS))}")
    check_user_id(user)
    check_token_lifetime(lifetime)
    text = new_token_text()
    token = await repository.create_token(
        conn,
        token_id=new_token_id(),
        user_id=user,
        name=name,
        digest=token_digest(text),
        permissions=permissions,
        created_at=now,
        expires_at=now + lifetime,
    )
    return token, text


# ---------------------------------------------------------------------------------------------------- OIDC


class OidcVerifier:
    """Verifies OIDC access tokens (JWTs) of one issuer for one audience.

    Keys come from `jwks_url`, else from the issuer's discovery document (`{issuer}/.well-known/openid-configuration`
    -> `jwks_uri`). They are cached for `cache_seconds`, and fetched again when a token names an unknown `kid` (the
    issuer rotated its keys) — at most once per `refresh_interval_seconds`, so a flood of tokens with made-up kids
    cannot turn the api into a load generator against the identity provider.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        user_claim: str = "preferred_username",
        jwks_url: str | None = None,
        leeway_seconds: int = 30,
        clock: Clock | None = None,
        http: httpx.AsyncClient | None = None,
        cache_seconds: float = 3600.0,
        refresh_interval_seconds: float = 60.0,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("OIDC needs both an issuer and an audience")
        self.issuer = issuer
        self.audience = audience
        self.user_claim = user_claim
        self.leeway_seconds = leeway_seconds
        self._jwks_url = jwks_url
        self._clock = clock or _system_clock
        self._http = http
        self._owns_http = http is None
        self._cache_for = timedelta(seconds=cache_seconds)
        self._refresh_every = timedelta(seconds=refresh_interval_seconds)
        self._keys: KeySet | None = None
        self._fetched_at: datetime | None = None
        self._refreshed_for_kid_at: datetime | None = None
        self._failed_at: datetime | None = None
        self._retry_after_failure = min(self._refresh_every, timedelta(seconds=5))
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier made it."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def verify(self, token: str) -> Principal:
        """The principal `token` proves. Raises AuthenticationFailed (IdentityProviderUnavailable when the keys
        cannot be fetched at all)."""
        return self._principal(await self._verified_claims(token))

    async def verify_id_token(self, token: str, nonce: str) -> Principal:
        """The principal an ID token of a sign-in proves (this verifier's audience is the client id): as `verify`,
        and its `nonce` must be the one the sign-in sent (a replayed ID token of another sign-in proves nothing)."""
        claims = await self._verified_claims(token)
        principal = self._principal(claims)
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
            raise AuthenticationFailed("invalid_token", "the ID token is not of this sign-in (nonce)")
        return principal

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            compact = jws.extract_compact(token.encode())
            header = compact.headers()
        except (JoseError, ValueError, TypeError):
            raise AuthenticationFailed("invalid_token", "the bearer token is neither an API token nor a JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise AuthenticationFailed(
                "invalid_token", f"JWT algorithm {str(alg)[:20]!r} is not accepted ({', '.join(ALLOWED_ALGORITHMS)})"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationFailed("invalid_token", "the JWT's `kid` is not a string")
        key = await self._key_for(kid, alg)
        try:
            verified = jwt.decode(token, key, algorithms=ALLOWED_ALGORITHMS)
        except BadSignatureError:
            raise AuthenticationFailed("invalid_token", "the JWT's signature does not verify") from None
        except (JoseError, ValueError, TypeError) as exc:
            raise AuthenticationFailed("invalid_token", f"the JWT cannot be verified: {_error_text(exc)}") from None
        return verified.claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        registry = jwt.JWTClaimsRegistry(
            now=int(self._clock().timestamp()),
            leeway=self.leeway_seconds,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise AuthenticationFailed("expired_token", "the JWT has expired") from None
        except MissingClaimError as exc:
            raise AuthenticationFailed("invalid_token", f"the JWT lacks the claim {exc.claim!r}") from None
        except ClaimError as exc:
            if exc.claim == "aud":
                raise AuthenticationFailed(
                    "wrong_audience", f"the JWT is not meant for this API (audience {self.audience!r})"
                ) from None
            if exc.claim == "iss":
                raise AuthenticationFailed("invalid_token", f"the JWT was not issued by {self.issuer}") from None
            if exc.claim == "nbf":
                raise AuthenticationFailed("invalid_token", "the JWT is not valid yet") from None
            raise AuthenticationFailed("invalid_token", f"the JWT's claim {exc.claim!r} is invalid") from None
        user = _text_claim(claims, self.user_claim) or _text_claim(claims, "email")
        if user is None:
            raise AuthenticationFailed(
                "invalid_token", f"the JWT names no user (neither {self.user_claim!r} nor 'email')"
            )
        credential_id = _text_claim(claims, "jti") or _text_claim(claims, "sub")
        return Principal(user=user, credential="oidc", credential_id=credential_id)

    async def _key_for(self, kid: str | None, alg: str) -> Key:
        keys = await self._current_keys()
        found = _find_key(keys, kid, alg)
        if found is not None:
            return found
        keys = await self._refresh_for_unknown_kid(keys)
        found = _find_key(keys, kid, alg)
        if found is None:
            named = f"kid {kid[:64]!r}" if kid is not None else "no kid"
            raise AuthenticationFailed("unknown_key", f"the JWT names a key the issuer does not publish ({named})")
        return found

    async def _current_keys(self) -> KeySet:
        now = self._clock()
        if self._fresh(now):
            assert self._keys is not None
            return self._keys
        async with self._lock:
            if self._fresh(now):
                return self._keys
            if self._failed_at is not None and now - self._failed_at < self._retry_after_failure:
                # A fetch failed moments ago: do not pile more requests onto an identity provider in trouble.
                if self._keys is None:
                    raise IdentityProviderUnavailable(f"the keys of {self.issuer} could not be fetched just now")
                return self._keys
            try:
                await self._fetch_keys()
            except IdentityProviderUnavailable as exc:
                self._failed_at = now
                if self._keys is None:
                    raise
                log.warning("oidc_keys_stale", issuer=self.issuer, error=str(exc))  # the keys we have still answer
            assert self._keys is not None
            return self._keys

    def _fresh(self, now: datetime) -> bool:
        return self._keys is not None and self._fetched_at is not None and now - self._fetched_at < self._cache_for

    async def _refresh_for_unknown_kid(self, seen: KeySet) -> KeySet:
        async with self._lock:
            if self._keys is not seen:
                return self._keys  # another request refreshed them while this one waited
            now = self._clock()
            if self._refreshed_for_kid_at is not None and now - self._refreshed_for_kid_at < self._refresh_every:
                return seen
            self._refreshed_for_kid_at = now
            try:
                await self._fetch_keys()
            except IdentityProviderUnavailable as exc:
                self._failed_at = now
                log.warning("oidc_keys_refresh_failed", issuer=self.issuer, error=str(exc))
            assert self._keys is not None
            return self._keys

    async def _fetch_keys(self) -> None:
        jwks_url = self._jwks_url or await self._discover_jwks_url()
        document = await self._get_json(jwks_url, "JWKS")
        try:
            keys = KeySet.import_key_set(document)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise IdentityProviderUnavailable(f"the JWKS at {jwks_url} holds no usable key: {exc}") from None
        self._keys = keys
        self._fetched_at = self._clock()
        self._failed_at = None
        log.info("oidc_keys_fetched", issuer=self.issuer, kids=[key.kid for key in keys])

    async def _discover_jwks_url(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await self._get_json(url, "discovery document")
        if document.get("issuer") != self.issuer:
            raise IdentityProviderUnavailable(f"the discovery document at {url} names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise IdentityProviderUnavailable(f"the discovery document at {url} has no jwks_uri")
        self._jwks_url = jwks_uri  # the issuer's metadata does not move; its keys do
        return jwks_uri

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IdentityProviderUnavailable(f"cannot fetch the OIDC {what} from {url}: {exc}") from None
        if not isinstance(document, dict):
            raise IdentityProviderUnavailable(f"the OIDC {what} at {url} is not a JSON object")
        return document


def _find_key(keys: KeySet, kid: str | None, alg: str) -> Key | None:
    """The signing key `kid` names, of a type `alg` can use; without a kid, the one key of that type."""
    family = {"R": "RSA", "P": "RSA", "E": "EC"}[alg[0]]
    candidates = [
        key
        for key in keys
        if key.key_type == family
        and key.get("use") in (None, "sig")
        and key.get("alg") in (None, alg)
        and (kid is None or key.kid == kid)
    ]
    if len(candidates) == 1 or (kid is not None and candidates):
        return candidates[0]
    return None  # unknown kid, or no kid and several keys could be meant


def _text_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    # A NUL names nobody a text column can store (the user of votes, runs and the audit trail): no such claim.
    return value if isinstance(value, str) and value.strip() and "\x00" not in value else None


def _error_text(exc: Exception) -> str:
    return str(getattr(exc, "description", None) or exc or type(exc).__name__)[:200]


# ---------------------------------------------------------------------------------------------------- requests


class Authenticator:
    """Bearer credentials -> Principal: `sgf_…` API tokens (looked up by hash in the api schema), else OIDC JWTs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        oidc: OidcVerifier | None,
        admins: frozenset[str] = frozenset(),
        clock: Clock | None = None,
        repository: ApiRepository | None = None,
        access_key_box: SecretBox | None = None,
    ) -> None:
        self.pool = pool
        self.oidc = oidc
        self.admins = admins
        self._clock = clock or _system_clock
        self.repository = repository or ApiRepository()
        self.access_key_box = access_key_box

    @classmethod
    def from_settings(cls, settings: ApiSettings, pool: asyncpg.Pool) -> Authenticator:
        """The authenticator the settings describe: API tokens always, OIDC when an issuer is set (which then
        needs an audience: a JWT for any client of the issuer must not pass)."""
        oidc = None
        if settings.oidc_issuer:
            if not settings.oidc_audience:
                raise ValueError("SIGNOFF_OIDC_AUDIENCE is required when SIGNOFF_OIDC_ISSUER is set")
            oidc = OidcVerifier(
                settings.oidc_issuer,
                settings.oidc_audience,
                user_claim=settings.oidc_user_claim,
                jwks_url=settings.oidc_jwks_url,
                leeway_seconds=settings.oidc_leeway_seconds,
            )
        box = None
        if settings.api_credentials_key is not None:
            box = SecretBox.from_key(settings.api_credentials_key.get_secret_value())
        return cls(pool, oidc=oidc, admins=settings.admin_users(), access_key_box=box)

    async def aclose(self) -> None:
        """Release the OIDC verifier's HTTP client (the pool is the caller's)."""
        if self.oidc is not None:
            await self.oidc.aclose()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization` header's value. Raises AuthenticationFailed (and, for JWTs,
        IdentityProviderUnavailable when the issuer's keys cannot be had)."""
        credential = _bearer(authorization)
        if credential.startswith(TOKEN_PREFIX):
            principal = await self._api_token(credential)
        elif self.oidc is not None:
            principal = await self.oidc.verify(credential)
        else:
            raise AuthenticationFailed("invalid_token", "not an API token (sgf_…), and OIDC is not configured")
        if principal.user in self.admins:
            principal = replace(principal, permissions=principal.permissions | {ADMIN})
        return principal

    async def authenticate_signed(
        self, *, method: str, raw_path: str, query_string: str, headers: list[tuple[str, str]], body: bytes
    ) -> Principal:
        """The principal of a request signed with an access key (AWS Signature Version 4, service
        `codepipeline`): the key's user. Raises sigv4.SignatureRefused with CodePipeline's error name."""
        authorization = sigv4.parse_authorization(headers)
        unknown = sigv4.SignatureRefused(
            sigv4.UNRECOGNIZED,
            "The security token included in the request is invalid.",
            access_key_id=authorization.access_key_id,
        )
        if self.access_key_box is None:
            log.warning("access_keys_disabled", why="SIGNOFF_API_CREDENTIALS_KEY is not set")
            raise unknown
        async with self.pool.acquire() as conn:
            key = await self.repository.access_key_with_secret(conn, authorization.access_key_id)
        if key is None or key.revoked_at is not None or key.secret_ciphertext is None:
            raise unknown
        try:
            secret = self.access_key_box.open(key.secret_ciphertext)
        except CredentialsKeyError:
            log.error("access_key_undecryptable", access_key_id=key.id)  # the credentials key changed
            raise unknown from None
        now = self._clock()
        sigv4.verify(
            authorization,
            secret=secret,
            method=method,
            raw_path=raw_path,
            query_string=query_string,
            headers=headers,
            body=body,
            now=now,
        )
        async with self.pool.acquire() as conn:
            await self.repository.touch_access_key(conn, key.id, now)
        principal = Principal(user=key.user_id, credential="access_key", credential_id=key.id)
        if principal.user in self.admins:
            principal = replace(principal, permissions=frozenset({ADMIN}))
        return principal

    async def _api_token(self, text: str) -> Principal:
        if not _TOKEN_TEXT.match(text):
            raise AuthenticationFailed("invalid_token", "malformed API token")
        now = self._clock()
        async with self.pool.acquire() as conn:
            token = await self.repository.token_by_digest(conn, token_digest(text))
            if token is None:
                raise AuthenticationFailed("invalid_token", "unknown API token")
            state = token.state(now)
            if state == "revoked":
                raise AuthenticationFailed("revoked_token", f"API token {token.id} was revoked")
            if state == "expired":
                raise AuthenticationFailed("expired_token", f"API token {token.id} expired")
            if token.last_used_at is None or now - token.last_used_at >= TOUCH_INTERVAL:
                await self.repository.touch_token(conn, token.id, now)
        return Principal(user=token.user_id, credential="token", credential_id=token.id, permissions=token.permissions)


def _bearer(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise AuthenticationFailed("missing_credentials", "send `Authorization: Bearer <token>`")
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise AuthenticationFailed("invalid_token", "the Authorization header must be `Bearer <token>`")
    return credential.strip()
