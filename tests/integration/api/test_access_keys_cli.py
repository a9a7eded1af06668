"""`signoff access-keys …` on a real PostgreSQL: the CLI runs in-process (CliRunner in a worker thread), configured
only through SIGNOFF_* variables; the key it prints then signs a request with botocore's own signer, which the
real Authenticator verifies (and refuses once revoked)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from click.testing import CliRunner, Result

from signoff.api import sigv4
from signoff.api.access_keys import SecretBox, new_credentials_key
from signoff.api.identity import Authenticator
from signoff.api.repository import SCHEMA
from signoff.approval.repository import ApprovalRepository
from signoff.cli.main import cli
from signoff.runtime.db import create_pool

pytestmark = pytest.mark.integration

KEY = new_credentials_key()


async def run(env: dict[str, str], *args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        await ApprovalRepository().replace_directory(conn, [("docs", "dana", None, {})])
    yield pool
    await pool.close()


@pytest.fixture
def env(database_url: str, tmp_path: Path, pool) -> dict[str, str]:
    return {
        "SIGNOFF_HOME": str(tmp_path / "home"),
        "SIGNOFF_DATABASE_URL": database_url,
        "SIGNOFF_API_CREDENTIALS_KEY": KEY,
    }


def signed_request(key_id: str, secret: str) -> dict:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8000/",
        data=b'{"name": "p"}',
        headers={"X-Amz-Target": "CodePipeline_20150709.GetPipelineState"},
    )
    SigV4Auth(Credentials(key_id, secret), "codepipeline", "us-east-1").add_auth(request)
    prepared = request.prepare()
    headers = [("host", urlsplit(prepared.url).netloc), *prepared.headers.items()]
    return {"method": "POST", "raw_path": "/", "query_string": "", "headers": headers, "body": prepared.body}


async def test_create_prints_the_key_once_stores_the_secret_encrypted_and_the_key_signs(env, pool):
    result = await run(env, "access-keys", "create", "--user", "dana")

    assert result.exit_code == 0, result.output
    printed = dict(line.split("=", 1) for line in result.stdout.split())
    key_id, secret = printed["AWS_ACCESS_KEY_ID"], printed["AWS_SECRET_ACCESS_KEY"]
    assert key_id.startswith("SGFK") and len(key_id) == 20 and len(secret) == 40
    assert "shown only this once" in result.stderr and secret not in result.stderr
    async with pool.acquire() as conn:
        stored = await conn.fetchval(f'SELECT secret_ciphertext FROM "{SCHEMA}".access_keys WHERE id = $1', key_id)  # noqa: S608
    assert secret.encode() not in bytes(stored)
    assert SecretBox.from_key(KEY).open(bytes(stored)) == secret

    authenticator = Authenticator(pool, oidc=None, access_key_box=SecretBox.from_key(KEY))
    principal = await authenticator.authenticate_signed(**signed_request(key_id, secret))
    assert (principal.user, principal.credential, principal.credential_id) == ("dana", "access_key", key_id)

    with pytest.raises(sigv4.SignatureRefused) as forged:
        await authenticator.authenticate_signed(**signed_request(key_id, secret[:-1] + "x"))
    assert forged.value.error == sigv4.INVALID
    other_key = Authenticator(pool, oidc=None, access_key_box=SecretBox.from_key(new_credentials_key()))
    with pytest.raises(sigv4.SignatureRefused) as undecryptable:
        await other_key.authenticate_signed(**signed_request(key_id, secret))
    assert undecryptable.value.error == sigv4.UNRECOGNIZED

    listed = json.loads((await run(env, "access-keys", "list", "--json")).stdout)
    assert [(row["id"], row["user"], row["state"]) for row in listed] == [(key_id, "dana", "active")]
    assert secret not in json.dumps(listed)

    revoked = await run(env, "access-keys", "revoke", key_id)
    assert revoked.exit_code == 0 and f"revoked access key {key_id} (dana)" in revoked.stdout
    with pytest.raises(sigv4.SignatureRefused) as refused:
        await authenticator.authenticate_signed(**signed_request(key_id, secret))
    assert refused.value.error == sigv4.UNRECOGNIZED
    assert "revoked" in (await run(env, "access-keys", "list")).stdout


async def test_create_needs_the_credentials_key_and_warns_about_strangers(env):
    missing = await run({**env, "SIGNOFF_API_CREDENTIALS_KEY": ""}, "access-keys", "create", "--user", "dana")
    assert missing.exit_code != 0 and "SIGNOFF_API_CREDENTIALS_KEY" in missing.stderr and not missing.stdout
    bad = await run({**env, "SIGNOFF_API_CREDENTIALS_KEY": "not-a-fernet-key"}, "access-keys", "create", "--user", "x")
    assert bad.exit_code != 0 and "Fernet" in bad.stderr
    stranger = await run(env, "access-keys", "create", "--user", "chatbot")
    assert stranger.exit_code == 0 and "warning: chatbot is not in the approval directory" in stranger.stderr
    unknown = await run(env, "access-keys", "revoke", "SGFKNOSUCHKEY0000000")
    assert unknown.exit_code != 0 and "no access key SGFKNOSUCHKEY0000000" in unknown.stderr
