"""A role that cannot start says why in one line and exits 1: a setting named by its environment variable, a file it
could not read, a server it could not reach. Never a traceback (it is at debug level), never a setting's value
(pydantic's default message quotes the input, which may be a secret), never a URL's password."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TypeVar
from urllib.parse import unquote

import asyncpg
import click
import structlog
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from signoff.runtime.settings import Settings, load_settings, setting_problem

log = structlog.get_logger(__name__)

S = TypeVar("S", bound=Settings)

STARTUP_FAILURES: tuple[type[BaseException], ...] = (
    OSError,  # a server not reached, a file not read
    asyncpg.PostgresError,  # a database, role or password refused
    asyncpg.InterfaceError,  # a database URL asyncpg cannot use
    KafkaError,  # no broker at SIGNOFF_KAFKA_BOOTSTRAP
    ValueError,  # a file (catalog, routing, directory) or a setting's content the role refuses, with the reason
)
"""What stops a role at start for a reason its operator can fix, rather than a defect (whose traceback stays)."""


class StartupError(click.ClickException):
    """Printed as one `error: …` line, exit code 1."""

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def role_settings(role: str, settings_class: type[S]) -> S:
    """The role's settings, or StartupError naming the first invalid one by its variable (`SIGNOFF_…`)."""
    try:
        return load_settings(settings_class)
    except ValidationError as exc:
        raise StartupError(f"{role}: {setting_problem(exc, settings_class)}") from None


class _Lifecycle:
    serving = False  # one role a process: set once it serves, so a later failure is not "did not start"


def role_serving() -> None:
    """The role has started and serves: a failure from now on stopped it, rather than kept it from starting."""
    _Lifecycle.serving = True


@contextlib.contextmanager
def starting(role: str, settings: Settings) -> Iterator[None]:
    """Around a role's start and run: a failure of STARTUP_FAILURES becomes a StartupError naming the role and the
    reason (the URL's password masked): `ROLE did not start: …`, or `ROLE stopped: …` once `role_serving()` said
    it had started (the database went away under a running role, say)."""
    _Lifecycle.serving = False
    try:
        yield
    except StartupError:
        raise
    except ValidationError as exc:  # a setting a role's spec validates itself
        raise StartupError(f"{role}: {setting_problem(exc, type(settings))}") from None
    except STARTUP_FAILURES as exc:
        log.debug("start_failed", role=role, exc_info=True)
        text = " ".join(line.strip() for line in str(exc).splitlines())  # a file's problems are one per line
        reason = mask_password(f"{type(exc).__name__}: {text}", settings.database_url.get_secret_value())
        raise StartupError(f"{role} {'stopped' if _Lifecycle.serving else 'did not start'}: {reason}") from None


_PASSWORD = re.compile(r"^[^:/?#]*://[^/?#@]*?:([^/?#]*)@")


def mask_password(text: str, url: str) -> str:
    """`text` (an error about `url`) with the URL's password, should it quote it, masked."""
    match = _PASSWORD.match(url)
    if match is None or not match.group(1):
        return text
    for secret in {match.group(1), unquote(match.group(1))}:
        text = text.replace(secret, "***")
    return text
