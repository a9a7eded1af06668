"""Settings of the api role: the shared ones plus the HTTP listener, identity providers, the decision key and the
access keys' credentials key, and Slack's interactivity (signing secret, bot token, decision key)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from signoff.runtime.settings import Settings


class ApiSettings(Settings):
    """Each field is the variable SIGNOFF_<FIELD NAME IN UPPER CASE> (or a file of that name in the secrets dir)."""

    api_host: str = Field("0.0.0.0", description="Bind address of the API (/api/v1, the pages).")  # noqa: S104
    api_port: int = Field(8000, ge=0, le=65535, description="Port of the API (0 = any free port).")
    api_public_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="The URL approvers reach the API at (links in answers); default http://127.0.0.1:<api port>.",
    )
    api_decision_key: SecretStr | None = Field(
        None,
        description="HMAC key the api signs decisions with (source `api`; the approval role's "
        "SIGNOFF_DECISION_KEYS['api']). A secret; without it the api refuses to decide.",
    )
    api_credentials_key: SecretStr | None = Field(
        None,
        description="Fernet key (`signoff access-keys new-credentials-key`) encrypting the access keys' secrets at "
        "rest (the CodePipeline wire API verifies their signatures). A secret; without it access keys are refused.",
    )
    api_decision_wait_seconds: float = Field(
        10.0,
        gt=0,
        le=120,
        description="How long a decision request waits for the approval service's answer before it returns 202.",
    )
    api_max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger request bodies are refused with 413.")
    api_admins: str = Field(
        "",
        description="Comma-separated user ids with admin rights over the API (abort any execution); API tokens "
        "can also carry the `admin` permission.",
    )
    api_dev_mode: bool = Field(
        False,
        description="A dev stack's conveniences (`signoff dev token`, the pages' sign-in as any directory user): "
        "never set it in production.",
    )
    api_session_secret: SecretStr | None = Field(
        None,
        min_length=32,
        description="Key that signs the approval pages' session cookies (32 characters or more, random). A secret; "
        "without it nobody can sign in to the pages (the JSON API is unaffected).",
    )
    api_session_minutes: int = Field(
        480, ge=5, le=1440, description="How long a sign-in to the pages lasts; then the page asks to sign in again."
    )
    oidc_issuer: str | None = Field(
        None,
        pattern=r"^https?://",
        description="OIDC issuer URL; bearer JWTs are validated against its JWKS. Unset: only API tokens work.",
    )
    oidc_audience: str | None = Field(None, description="The `aud` an access token must carry (required with OIDC).")
    oidc_user_claim: str = Field(
        "preferred_username", description="Claim naming the user; `email` is tried when it is absent."
    )
    oidc_jwks_url: str | None = Field(
        None, pattern=r"^https?://", description="JWKS URL; default: the issuer's discovery document's `jwks_uri`."
    )
    oidc_client_id: str | None = Field(
        None,
        description="The pages' OIDC client id (authorization-code flow with PKCE against SIGNOFF_OIDC_ISSUER; "
        "redirect URI `<api url>/auth/callback`). Unset: no OIDC sign-in to the pages.",
    )
    oidc_client_secret: SecretStr | None = Field(
        None, description="The pages' OIDC client secret, for a confidential client (a public client needs none)."
    )
    oidc_scopes: str = Field("openid profile email", description="Scopes the pages' OIDC sign-in asks for.")
    oidc_leeway_seconds: int = Field(30, ge=0, le=300, description="Clock skew allowed on `exp` / `nbf` / `iat`.")
    slack_signing_secret: SecretStr | None = Field(
        None,
        description="The Slack app's signing secret: `POST /slack/interactions` verifies every request's "
        "`X-Slack-Signature` with it (docs/notifications.md, Slack bot mode). A secret; without it the endpoint "
        "answers 503.",
    )
    slack_bot_token: SecretStr | None = Field(
        None,
        description="The Slack app's bot token (`xoxb-…`): the api opens the decision modal (`views.open`). "
        "A secret; required with SIGNOFF_SLACK_SIGNING_SECRET.",
    )
    slack_decision_key: SecretStr | None = Field(
        None,
        description="HMAC key the api signs decisions made in Slack with (source `slack`; the approval role's "
        "SIGNOFF_DECISION_KEYS['slack']). A secret; required with SIGNOFF_SLACK_SIGNING_SECRET.",
    )
    slack_api_url: str = Field(
        "https://slack.com/api/", pattern=r"^https?://", description="Base URL of Slack's Web API."
    )
    catalog_file: Path | None = Field(
        None, description="Catalog YAML (docs/catalog.md): names and links of a gate's services and environments."
    )

    def slack_problem(self) -> str | None:
        """What is missing for Slack's interactivity when its signing secret is set (None: nothing, or Slack off)."""
        if self.slack_signing_secret is None:
            return None
        missing = [
            name
            for name, value in (
                ("SIGNOFF_SLACK_BOT_TOKEN", self.slack_bot_token),
                ("SIGNOFF_SLACK_DECISION_KEY", self.slack_decision_key),
            )
            if value is None
        ]
        if not missing:
            return None
        verb = "is" if len(missing) == 1 else "are"
        return f"SIGNOFF_SLACK_SIGNING_SECRET is set but {' and '.join(missing)} {verb} not"

    def admin_users(self) -> frozenset[str]:
        """The user ids of `api_admins`."""
        return frozenset(user.strip() for user in self.api_admins.split(",") if user.strip())
