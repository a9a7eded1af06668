"""An OIDC access token at the front door: the api validates it against the issuer's JWKS (served by the test over
real HTTP), and the token's user decides; a token for another audience is refused with 401."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey

from tests.integration.api.conftest import FrontDoor, pipeline_name, running_front_door
from tests.integration.approval.conftest import request
from tests.support.oidc import AUDIENCE, IdentityProvider, sign

pytestmark = pytest.mark.integration


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.keys = [
        RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}),
        ECKey.generate_key("P-256", parameters={"kid": "ec-1"}),
    ]
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
async def oidc_door(settings, names, tmp_path: Path, idp: IdentityProvider) -> AsyncIterator[FrontDoor]:
    async with running_front_door(settings, names, tmp_path, oidc_issuer=idp.issuer, oidc_audience=AUDIENCE) as door:
        yield door


def _now_claims(idp: IdentityProvider, **overrides: object) -> dict:
    now = int(time.time())
    return idp.claims(iat=now, exp=now + 300, **overrides)


async def test_a_valid_jwt_decides_as_its_user_and_another_audience_is_refused(
    oidc_door: FrontDoor, idp: IdentityProvider
) -> None:
    gate_id, _ = await oidc_door.open_gate(request(pipeline=pipeline_name(), groups=("docs",), timeout="1d"))
    rsa, ec = idp.keys
    dana = sign(ec, _now_claims(idp, preferred_username="dana", jti="jwt-dana"), alg="ES256")
    elsewhere = sign(rsa, _now_claims(idp, preferred_username="eli", aud="another-app"))
    async with httpx.AsyncClient(base_url=f"{oidc_door.url}/api/v1", timeout=60) as client:
        me = await client.get("/me", headers={"Authorization": f"Bearer {dana}"})
        refused = await client.post(
            f"/gates/{gate_id}/decisions", json={"status": "Approved"}, headers={"Authorization": f"Bearer {elsewhere}"}
        )
        answer = await client.post(
            f"/gates/{gate_id}/decisions", json={"status": "Approved"}, headers={"Authorization": f"Bearer {dana}"}
        )
    assert me.json() == {"user": "dana", "credential": "oidc", "permissions": []}
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert answer.status_code == 200, answer.text
    assert (answer.json()["approver"], answer.json()["gate_status"]) == ("dana", "approved")
