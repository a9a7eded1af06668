"""A local OIDC identity provider for tests: a discovery document and a JWKS served over real HTTP on 127.0.0.1
(aiohttp), and tokens signed with joserfc by the keys it publishes."""

from __future__ import annotations

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

    @property
    def issuer(self) -> str:
        return self.url + "/realms/test"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/realms/test/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/realms/test/certs", self._jwks)
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
        return web.json_response({"issuer": issuer, "jwks_uri": self.issuer + "/certs"})

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
