"""The CLI as a client of `signoff api`: where the API is, the user's token, one-line errors.

An approver's laptop needs only the API's URL and a token of their own (`signoff login --url URL`, or
SIGNOFF_API_URL + SIGNOFF_TOKEN): no database URL, no broker, no decision key. Who decides or starts a pipeline is
whoever the token belongs to; nothing the command line says can change that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from signoff.cli.errors import CliError, CliUsageError
from signoff.cli.terminal import echo
from signoff.runtime.devenv import find_env_file, read_env_file, supervisor_alive
from signoff.runtime.settings import setting_problem

START_HINT = "start a local stack with `./signoffw dev up`, then `export SIGNOFF_TOKEN=$(./signoffw dev token USER)`"


class ClientSettings(BaseSettings):
    """The client commands' settings: SIGNOFF_API_URL and SIGNOFF_TOKEN (else `signoff login`'s file)."""

    model_config = SettingsConfigDict(env_prefix="SIGNOFF_", extra="ignore", case_sensitive=False)

    api_url: str | None = Field(None, pattern=r"^https?://", description="The signoff API the CLI talks to.")
    token: SecretStr | None = Field(None, description="Your API token (or OIDC access token). A secret.")
    client_timeout_seconds: float = Field(
        60.0, gt=0, description="How long the CLI waits for one API answer (decisions wait for the verdict)."
    )


def credentials_path() -> Path:
    """Where `signoff login` keeps the URL and token: $XDG_CONFIG_HOME/signoff/credentials.json (mode 0600)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "signoff" / "credentials.json"


def save_credentials(url: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)
    tmp.write_text(json.dumps({"url": url, "token": token}))
    tmp.replace(path)
    return path


def _saved() -> dict[str, str]:
    try:
        saved = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _dev_stack_url() -> str | None:
    env_file = find_env_file()
    if env_file is None or not supervisor_alive(env_file.parent):
        return None
    return read_env_file(env_file).get("SIGNOFF_API_URL")


class ApiClient:
    """Synchronous HTTP calls to /api/v1 with the user's bearer token; problems become one-line CliErrors."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def configured(cls) -> ApiClient:
        """The API and token from SIGNOFF_API_URL / SIGNOFF_TOKEN, else `signoff login`'s file, else (the URL only)
        a running dev stack."""
        try:
            settings = ClientSettings()
        except ValidationError as exc:  # its message without the value given (SIGNOFF_TOKEN is a secret)
            raise CliError(f"invalid setting {setting_problem(exc, ClientSettings)}") from None
        saved = _saved()
        url = settings.api_url or saved.get("url") or _dev_stack_url()
        if not url:
            raise CliError(
                f"no signoff API configured: set SIGNOFF_API_URL or run `signoff login --url URL`; {START_HINT}"
            )
        token = settings.token.get_secret_value() if settings.token else saved.get("token")
        return cls(url, token, timeout=settings.client_timeout_seconds)

    def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> tuple[int, Any]:
        """(status, JSON body) of a successful call; CliError with the problem's reason and detail otherwise."""
        if not self.token:
            raise CliError(
                "no token: set SIGNOFF_TOKEN or run `signoff login --url URL` (on a dev stack "
                "`signoff dev token USER` prints one)"
            )
        token = _header_safe_token(self.token)
        try:
            response = httpx.request(
                method,
                f"{self.url}/api/v1{path}",
                json=json_body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers={"Authorization": f"Bearer {token}", **(headers or {})},
                timeout=self.timeout,
            )
        except httpx.TimeoutException:
            raise CliError(f"the signoff API at {self.url} did not answer within {self.timeout:g}s") from None
        except httpx.ConnectError as exc:
            raise CliError(
                f"no signoff API is reachable at {self.url} ({type(exc).__name__}: {exc}); {START_HINT}"
            ) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise CliError(f"the signoff API URL {self.url} is not a valid URL: {exc}") from None
        except httpx.HTTPError as exc:  # reached, but the exchange broke (a reset connection, a garbled answer)
            raise CliError(
                f"the request to the signoff API at {self.url} failed ({type(exc).__name__}: {exc})"
            ) from None
        try:
            body = response.json()
        except ValueError:
            raise CliError(unexpected_text(response)) from None
        if response.status_code in ok:
            return response.status_code, body
        if not _is_problem(body):
            raise CliError(unexpected_text(response))
        raise CliError(problem_text(response.status_code, body))


def _header_safe_token(token: str) -> str:
    """`token` without surrounding whitespace; a one-line error (before any request) unless what is left could be
    a bearer token at all: printable ASCII without spaces, as API tokens (`sgf_…`) and JWTs are. Never echoed: it
    is a secret."""
    stripped = token.strip()
    if not stripped or not all("!" <= c <= "~" for c in stripped):
        raise CliError(
            "the token is not a valid token: a token is printable ASCII without spaces or control characters "
            "(check SIGNOFF_TOKEN, or `signoff login` again)"
        )
    return stripped


def segment(value: str, what: str) -> str:
    """`value` as one percent-encoded URL path segment, so an id such as `../me` or `?x=1` stays one segment and
    cannot reach another endpoint. An empty `value`, or one with a `/`, is a usage error naming `what` (the
    argument or option): no id has a `/` (the wire contract's ids are joined with it), and the API, which routes
    on the decoded path, could not tell `a%2Fb` from two segments anyway."""
    if not value:
        raise CliUsageError(f"{what} must not be empty")
    if "/" in value:
        raise CliUsageError(f"{what} {value!r} is not an id: ids never contain '/'")
    if value in (".", ".."):  # dot segments are removed from a URL's path even when percent-encoding leaves them
        return "%2E" * len(value)
    return quote(value, safe="")


def _is_problem(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("detail"), str)


def unexpected_text(response: httpx.Response) -> str:
    """One line for an answer that is not what the API sends (not JSON, or an error that is not a problem
    document, e.g. from a proxy in front of it): its HTTP status, where a redirect points, the start of its text."""
    status = f"HTTP {response.status_code}" + (f" {response.reason_phrase}" if response.reason_phrase else "")
    text = f"the signoff API answered {response.request.method} {response.url.path} with {status}"
    if response.is_redirect and response.headers.get("location"):
        text += f" (a redirect to {response.headers['location']})"
    excerpt = "".join(c if c.isprintable() else " " for c in " ".join(response.text.split())[:200])
    return text + (f": {excerpt}" if excerpt else "")


def problem_text(status: int, body: Any) -> str:
    """A problem document as one line: `refused (not_eligible): bob may not … [decision …]`."""
    if not isinstance(body, dict):
        return f"the API answered {status}"
    code, detail = body.get("code") or f"http_{status}", body.get("detail") or ""
    if status == 401:
        return f"not signed in ({code}): {detail}; get a token with `signoff login` (or `signoff dev token USER`)"
    decision = f" [decision {body['decision_id']}]" if body.get("decision_id") else ""
    verb = "refused" if status in (403, 409, 422) else "failed"
    return f"{verb} ({code}): {detail}{decision}"


def echo_answer(answer: dict[str, Any], status: int) -> None:
    """Print a decision answer; 202 (no verdict within the wait) is an error exit."""
    if status == 202:
        raise CliError(answer["message"])
    echo(answer["message"])
