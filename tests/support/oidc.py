"""A local OIDC identity provider for tests: a discovery document, a JWKS, and the authorization-code flow with
PKCE (an authorization endpoint that signs in `signing_in` at once, a token endpoint that checks the code, the
redirect URI, the client and the S256 code verifier) served over real HTTP on 127.0.0.1 (aiohttp), and tokens signed
with joserfc by the keys it publishes."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import Key

AUDIENCE = "signoff-api"
NOW = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


class IdentityProvider:
    """An OIDC issuer's HTTP endpoints on a free local port; the test changes `keys` to rotate them."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.jwks_requests = 0
        self.discovery_requests = 0
        self.discovery_issuer: str | None = None
        self.failing = False  # answer every request with 503, as an identity provider in trouble does
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.signing_in: str | None = None  # who the authorization endpoint signs in (None: the user refuses)
        self.authorizations: list[dict[str, str]] = []  # the query of each authorization request
        self.token_requests: list[dict[str, str]] = []  # the form of each token request
        self._codes: dict[str, dict[str, str]] = {}

    @property
    def issuer(self) -> str:
        return self.url + "/realms/test"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/realms/test/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/realms/test/certs", self._jwks)
        app.router.add_get("/realms/test/auth", self._authorize)
        app.router.add_post("/realms/test/token", self._token)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def _discovery(self, request: web.Request) -> web.Response:
        self.discovery_requests += 1
        issuer = self.discovery_issuer or self.issuer
        return web.json_response(
            {
                "issuer": issuer,
                "jwks_uri": self.issuer + "/certs",
                "authorization_endpoint": self.issuer + "/auth",
                "token_endpoint": self.issuer + "/token",
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def _authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.authorizations.append(query)
        target = query["redirect_uri"]
        joiner = "&" if "?" in target else "?"
        if self.signing_in is None:
            raise web.HTTPFound(f"{target}{joiner}error=access_denied&state={query.get('state', '')}")
        code = secrets.token_urlsafe(16)
        self._codes[code] = query | {"user": self.signing_in}
        raise web.HTTPFound(f"{target}{joiner}code={code}&state={query['state']}")

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append(form)
        granted = self._codes.pop(form.get("code", ""), None)  # a code is good once
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (
            granted is None
            or form.get("grant_type") != "authorization_code"
            or form.get("redirect_uri") != granted["redirect_uri"]
            or form.get("client_id") != granted["client_id"]
            or granted.get("code_challenge_method") != "S256"
            or challenge != granted.get("code_challenge")
        ):
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = self.claims(
            aud=granted["client_id"],
            nonce=granted.get("nonce"),
            preferred_username=granted["user"],
            iat=now,
            exp=now + 300,
            jti=None,
            sub=f"sub-{granted['user']}",
        )
        return web.json_response({"id_token": sign(self.keys[0], claims), "token_type": "Bearer", "expires_in": 300})

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        if self.failing:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        return web.json_response({"keys": [key.as_dict(private=False) for key in self.keys]})

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "f0e1-alice",
            "jti": "jwt-1",
            "preferred_username": "alice",
            "email": "alice@example.com",
            "iat": int(NOW.timestamp()),
            "exp": int((NOW + timedelta(minutes=5)).timestamp()),
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}


def sign(key: Key, claims: dict[str, Any], alg: str = "RS256", **header: Any) -> str:
    """`claims` as a JWT signed by `key` (its kid in the header unless `header` says otherwise)."""
    return jwt.encode({"alg": alg, "kid": key.kid, **header}, claims, key)
