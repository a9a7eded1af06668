"""AWS-style access keys for the CodePipeline wire API (docs/codepipeline.md): an access key id and a secret access
key per user, which the AWS CLI and the SDKs sign requests with (Signature Version 4, signoff.api.sigv4).

To verify a signature the server needs the secret itself, so it cannot be stored as a digest like an API token:
it is encrypted with Fernet (the `cryptography` package: AES-128-CBC and HMAC-SHA256) under
SIGNOFF_API_CREDENTIALS_KEY, a key only the api's settings hold. The secret is shown once, when the key is
created; nothing logs it.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from cryptography.fernet import Fernet, InvalidToken

from signoff.api.repository import AccessKey, ApiRepository

KEY_ID_PREFIX = "SGFK"  # like AWS's AKIA: tells a signoff key id apart at a glance
_KEY_ID_ALPHABET = string.ascii_uppercase + string.digits


class CredentialsKeyError(ValueError):
    """The credentials key is not a Fernet key, or a stored secret was not encrypted with it."""


@dataclass(frozen=True)
class SecretBox:
    """Encrypts and decrypts access-key secrets with the api's credentials key."""

    fernet: Fernet

    @classmethod
    def from_key(cls, key: str) -> SecretBox:
        """`key`: a Fernet key (32 random bytes, URL-safe base64; `signoff access-keys new-credentials-key`
        prints one)."""
        try:
            return cls(Fernet(key.encode()))
        except ValueError:
            raise CredentialsKeyError("the credentials key must be a Fernet key (32 bytes, URL-safe base64)") from None

    def seal(self, secret: str) -> bytes:
        return self.fernet.encrypt(secret.encode())

    def open(self, ciphertext: bytes) -> str:
        try:
            return self.fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            raise CredentialsKeyError("the access key's secret was not encrypted with this credentials key") from None


def new_credentials_key() -> str:
    """A fresh credentials key."""
    return Fernet.generate_key().decode()


def new_key_id() -> str:
    """20 characters like an AWS access key id: `SGFK` + 16 random upper-case letters and digits."""
    return KEY_ID_PREFIX + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(16))


def new_secret() -> str:
    """40 characters like an AWS secret access key (30 random bytes)."""
    return secrets.token_urlsafe(30)


async def issue_access_key(
    conn: asyncpg.Connection, repository: ApiRepository, box: SecretBox, *, user: str, now: datetime
) -> tuple[AccessKey, str]:
    """Create an access key for `user`: (the stored key, its secret, to show once)."""
    secret = new_secret()
    key = await repository.create_access_key(
        conn, key_id=new_key_id(), user_id=user, secret_ciphertext=box.seal(secret), created_at=now
    )
    return key, secret
