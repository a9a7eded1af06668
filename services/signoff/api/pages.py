"""The approval pages: where every notification link lands (`/gates/{id}`, `?action=approve|reject`) and the list of
gates (`/`). Server-rendered HTML (Jinja2, autoescaped), usable without JavaScript (the pages have none), their CSS
served from here; every response carries a strict Content-Security-Policy and refuses to be framed.

Who decides is proven as for the JSON API, by a session instead of a bearer token: a signed cookie (itsdangerous,
keyed by SIGNOFF_API_SESSION_SECRET; HttpOnly, SameSite=Lax, Secure unless a dev stack or a plain-http loopback
SIGNOFF_API_PUBLIC_URL, bounded by SIGNOFF_API_SESSION_MINUTES) made by an OIDC sign-in (authorization code + PKCE)
against SIGNOFF_OIDC_ISSUER, or, in a dev stack only (SIGNOFF_API_DEV_MODE), by choosing a directory user. A sign-out
lists the session's id in the api schema, so a copy of its cookie is refused too. Every POST carries the session's
CSRF token. A GET never decides: mail scanners fetch links before people do. Votes go through the same
`DecisionDesk` as the API's.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import jinja2
import structlog
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeSerializer

from signoff.api import gates, models
from signoff.api.identity import AuthenticationFailed, IdentityProviderUnavailable, OidcVerifier, Principal
from signoff.api.problems import ApiProblem
from signoff.api.settings import ApiSettings
from signoff.contracts.base import format_utc, parse_utc
from signoff.contracts.events import DecisionStatus
from signoff.kernel import user_key
from signoff.notifier.domain.view import expression_parts

if TYPE_CHECKING:
    from signoff.api.app import ApiContext

log = structlog.get_logger(__name__)

COOKIE = "signoff_session"
CSS_PATH = "/static/signoff.css"
# No script at all, styles and images only from here, forms only to here, never in a frame.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
COMMENT_MAX = models.DecisionRequest.model_fields["comment"].metadata[0].max_length
LOGIN_LIFETIME = timedelta(minutes=10)  # from the redirect to the identity provider until its answer comes back
MAX_SESSION_LIFETIME = timedelta(
    minutes=next(m.le for m in ApiSettings.model_fields["api_session_minutes"].metadata if hasattr(m, "le"))
)  # SIGNOFF_API_SESSION_MINUTES's bound
ECHO_MAX = 64  # what a page repeats of a request (a gate id, an input name): a URL can be far longer than a page needs

# The approval service's refusal reasons in words, for a person (the detail follows).
REFUSALS = {
    "not_eligible": "You are not one of this gate's approvers.",
    "self_approval": "You started this run, and this gate does not let its pipeline executor decide.",
    "gate_closed": "The gate is already closed.",
    "stale_token": "The gate moved on since this page was shown (a new attempt): read it again, then decide.",
    "duplicate": "This decision was already counted.",
    "invalid_inputs": "An input is not acceptable.",
    "unknown_gate": "There is no such gate.",
    "decisions_disabled": "This api cannot decide: it has no decision key.",
    "broker_unavailable": "The decision could not be sent; try again.",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("signoff.api", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_CSS = resources.files("signoff.api").joinpath("static", "signoff.css").read_bytes()


def safe_url(url: str | None) -> str | None:
    """`url` when it is an absolute http(s) URL, else None: a `javascript:` or `data:` link from a catalog or a
    pipeline is shown as text, never as a link."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def bounded(text: str, limit: int = ECHO_MAX) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut), for repeating what a request named."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_parts(text: str) -> list[tuple[str, bool]]:
    """The approval message as (text, is an unresolved `<+...>` expression) parts, for marking the latter."""
    return expression_parts(text)


_templates.filters["safe_url"] = safe_url
_templates.filters["iso"] = lambda moment: format_utc(moment) if moment else ""
_templates.filters["utc"] = lambda moment: parse_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""
_templates.globals["message_parts"] = message_parts
_templates.globals["css_path"] = CSS_PATH


@dataclass
class OidcClient:
    """The pages' OIDC client: where to send a browser to sign in, and how to redeem its code."""

    issuer: str
    client_id: str
    client_secret: str | None
    scopes: str
    verifier: OidcVerifier
    """Verifies ID tokens: the issuer's keys, audience = the client id."""
    _endpoints: dict[str, str] = field(default_factory=dict)

    async def endpoints(self) -> dict[str, str]:
        """The issuer's authorization and token endpoints (its discovery document, fetched once)."""
        if not self._endpoints:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    response = await http.get(url)
                    response.raise_for_status()
                    document = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise IdentityProviderUnavailable(f"the discovery document at {url} cannot be read: {exc}") from None
            if document.get("issuer") != self.issuer:
                raise IdentityProviderUnavailable(f"the discovery document at {url} names another issuer")
            for name in ("authorization_endpoint", "token_endpoint"):
                if not safe_url(document.get(name)):
                    raise IdentityProviderUnavailable(f"the discovery document at {url} has no {name}")
            self._endpoints = {k: document[k] for k in ("authorization_endpoint", "token_endpoint")}
        return self._endpoints

    async def redeem(self, code: str, verifier: str, redirect_uri: str) -> str:
        """The ID token the token endpoint gives for `code` (and the PKCE `verifier` of its sign-in)."""
        endpoints = await self.endpoints()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            "code_verifier": verifier,
        }
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(endpoints["token_endpoint"], data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailable(f"the token endpoint cannot be reached: {exc}") from None
        try:
            document = response.json()
        except ValueError:
            document = {}
        if response.status_code != 200 or not isinstance(document.get("id_token"), str):
            error = str(document.get("error") or response.status_code)[:100]
            raise AuthenticationFailed("invalid_token", f"the identity provider refused the sign-in ({error})")
        return document["id_token"]


@dataclass
class PageSettings:
    """What the pages need beyond the api's context: how sessions are signed and how people sign in."""

    session_secret: str | None
    session_lifetime: timedelta
    dev_mode: bool = False
    oidc: OidcClient | None = None
    public_url: str | None = None
    """SIGNOFF_API_PUBLIC_URL as configured (None when unset: the pages are behind something that did not say)."""

    @property
    def secure_cookies(self) -> bool:
        """Whether the session cookie is Secure: always, except in a dev stack or when the configured public URL is
        plain http on loopback (no TLS there, and a Secure cookie would never come back). An unset public URL is
        not a reason: a production api behind a TLS-terminating ingress sees only http itself."""
        if self.dev_mode:
            return False
        return not (self.public_url and urlsplit(self.public_url).scheme == "http" and _loopback(self.public_url))

    async def aclose(self) -> None:
        """Release the ID-token verifier's HTTP client."""
        if self.oidc is not None:
            await self.oidc.verifier.aclose()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> PageSettings:
        oidc = None
        if settings.oidc_issuer and settings.oidc_client_id:
            oidc = OidcClient(
                issuer=settings.oidc_issuer,
                client_id=settings.oidc_client_id,
                client_secret=settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None,
                scopes=settings.oidc_scopes,
                verifier=OidcVerifier(
                    settings.oidc_issuer,
                    settings.oidc_client_id,
                    user_claim=settings.oidc_user_claim,
                    jwks_url=settings.oidc_jwks_url,
                    leeway_seconds=settings.oidc_leeway_seconds,
                ),
            )
        secret = settings.api_session_secret.get_secret_value() if settings.api_session_secret else None
        return cls(
            session_secret=secret,
            session_lifetime=timedelta(minutes=settings.api_session_minutes),
            dev_mode=settings.api_dev_mode,
            oidc=oidc,
            public_url=settings.api_public_url,
        )


# ---------------------------------------------------------------------------------------------------- sessions


@dataclass
class Session:
    """A browser's session: its CSRF token always; the user once signed in; a sign-in under way (`login`)."""

    csrf: str
    user: str | None = None
    via: str | None = None
    """How the user was proven: `oidc` or `dev`."""
    sid: str = ""
    issued: float = 0.0
    login: dict[str, str] | None = None
    changed: bool = False
    ended: bool = False
    """The request came with a signed-in session that had run out (the sign-in page says so)."""


def _context(request: Request) -> ApiContext:
    return request.app.state.context


def _page_settings(request: Request) -> PageSettings:
    settings = _context(request).pages
    return settings if settings is not None else PageSettings(session_secret=None, session_lifetime=timedelta(0))


def _serializer(request: Request) -> URLSafeSerializer | None:
    secret = _page_settings(request).session_secret
    return URLSafeSerializer(secret, salt="signoff-pages-session") if secret else None


def _now(request: Request) -> datetime:
    return _context(request).clock()


async def _read_session(request: Request) -> Session:
    """The request's session, or a fresh anonymous one (a missing, forged, expired or signed-out cookie). Expiry is
    judged on the api's clock against the time the session was signed in."""
    serializer = _serializer(request)
    raw = request.cookies.get(COOKIE)
    if serializer is not None and raw:
        try:
            data = serializer.loads(raw)
        except BadSignature:
            data = None
        if isinstance(data, dict) and isinstance(data.get("c"), str):
            session = Session(
                csrf=data["c"],
                user=data.get("u"),
                via=data.get("v"),
                sid=data.get("s", ""),
                issued=float(data.get("i", 0)),
                login=data.get("l"),
            )
            lifetime = _page_settings(request).session_lifetime
            if session.user is not None and _now(request).timestamp() - session.issued > lifetime.total_seconds():
                log.info("page_session_expired", user=session.user)
                return Session(csrf=secrets.token_urlsafe(32), changed=True, ended=True)
            if session.user is not None and await _revoked(request, session):
                log.info("page_session_revoked", user=session.user, sid=session.sid)
                return Session(csrf=secrets.token_urlsafe(32), changed=True, ended=True)
            return session
    return Session(csrf=secrets.token_urlsafe(32), changed=True)


async def _revoked(request: Request, session: Session) -> bool:
    """Whether the signed-in `session` was signed out (a copy of its cookie outlives the browser's). A session
    without an id cannot be told apart from another, so it counts as revoked."""
    if not session.sid:
        return True
    context = _context(request)
    async with context.pool.acquire() as conn:
        return await context.api.session_revoked(conn, session.sid)


def _signed_in(request: Request, session: Session, user: str, via: str) -> Session:
    """A new session for `user` (new CSRF token and id: nothing of the anonymous one carries over)."""
    return Session(
        csrf=secrets.token_urlsafe(32),
        user=user,
        via=via,
        sid=secrets.token_hex(8),
        issued=_now(request).timestamp(),
        changed=True,
    )


def _loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _write_session(request: Request, response: Response, session: Session) -> None:
    serializer = _serializer(request)
    if serializer is None or not session.changed:
        return
    data: dict[str, Any] = {"c": session.csrf}
    if session.user is not None:
        data |= {"u": session.user, "v": session.via, "s": session.sid, "i": session.issued}
    if session.login is not None:
        data["l"] = session.login
    response.set_cookie(
        COOKIE,
        serializer.dumps(data),
        max_age=int(_page_settings(request).session_lifetime.total_seconds()),
        path="/",
        httponly=True,
        secure=_page_settings(request).secure_cookies,
        samesite="lax",
    )


def _principal(request: Request, session: Session) -> Principal:
    assert session.user is not None
    permissions = frozenset({"admin"}) if session.user in _context(request).authenticator.admins else frozenset()
    return Principal(
        user=session.user, credential=f"session:{session.via}", credential_id=session.sid, permissions=permissions
    )


def _csrf_ok(session: Session, form: Any) -> bool:
    sent = form.get("csrf")
    return isinstance(sent, str) and bool(sent) and secrets.compare_digest(sent.encode(), session.csrf.encode())


def _local_path(value: str | None, default: str = "/") -> str:
    """`value` if it is a path on this site (no scheme, no host, no `//`), else `default`: sign-in never sends a
    browser elsewhere."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else default


# ---------------------------------------------------------------------------------------------------- rendering


def _render(request: Request, session: Session, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    page = _templates.get_template(template).render(
        session=session, user=session.user, dev_mode=_page_settings(request).dev_mode, **values
    )
    response = HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)
    _write_session(request, response, session)
    return response


def _redirect(request: Request, session: Session, to: str) -> Response:
    response = RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)
    _write_session(request, response, session)
    return response


def _to_sign_in(request: Request, session: Session, back_to: str) -> Response:
    return _redirect(
        request, session, "/sign-in?" + urlencode({"next": back_to} | ({"ended": "1"} if session.ended else {}))
    )


def _problem_page(request: Request, session: Session, status: int, title: str, detail: str) -> HTMLResponse:
    return _render(request, session, "problem.html", status=status, title=title, detail=detail)


router = APIRouter(include_in_schema=False)


@router.get(CSS_PATH)
async def stylesheet() -> Response:
    return Response(
        _CSS,
        media_type="text/css",
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Response:
    """The gates I may decide now, newest first, and the pending gates waiting on others."""
    session = await _read_session(request)
    if session.user is None:
        return _to_sign_in(request, session, "/")
    context = _context(request)
    async with context.pool.acquire() as conn:
        mine = await context.approval.decidable_by(conn, user_key(session.user), limit=200, before=None)
        pending = await context.approval.list_gates(
            conn, status="pending", group=None, pipeline=None, limit=200, before=None
        )
    now = context.clock()
    mine_ids = {row["id"] for row in mine}
    decidable = [gates.summary(row, now=now, base_url="") for row in mine]
    others = [gates.summary(row, now=now, base_url="") for row in pending if row["id"] not in mine_ids]
    return _render(request, session, "index.html", decidable=decidable, others=others)


async def _gate_page(
    request: Request,
    session: Session,
    gate_id: str,
    *,
    status: int = 200,
    action: str | None = None,
    answer: dict[str, Any] | None = None,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    comment: str = "",
) -> Response:
    context = _context(request)
    async with context.pool.acquire() as conn:
        row = await context.approval.find_gate(conn, gate_id)
        votes = await context.approval.votes_of(conn, [gate_id]) if row is not None else []
    if row is None:
        return _problem_page(request, session, 404, "No such gate", f"There is no gate {bounded(gate_id)}.")
    assert session.user is not None
    detail = gates.detail(row, votes, user=session.user, now=context.clock(), base_url="", catalog=context.catalog)
    errors = errors or {}
    fields = {item.name for item in detail.inputs} | {"comment"}
    stored = gates.load(row, votes).gate
    return _render(
        request,
        session,
        "gate.html",
        status=status,
        gate=detail,
        action=action if action in ("approve", "reject") else None,
        answer=answer,
        # What an approval now would leave in place: an earlier approver's value (the last one given wins), else
        # the default. Prefilled with the default alone, an approval without a change would replace theirs.
        values=values or stored.final_inputs(),
        inputs_given=stored.provided_inputs(),
        errors=errors,
        # Errors of inputs the form has no field for (an unknown input, a form of an earlier attempt): listed apart,
        # or the page would only say 422.
        other_errors=[(bounded(name), message) for name, message in sorted(errors.items()) if name not in fields],
        comment=comment,
        refusal_words=REFUSALS,
        nonce=secrets.token_urlsafe(16),
        post_url=f"/gates/{quote(gate_id, safe='')}",
    )


@router.get("/gates/{gate_id}", response_class=HTMLResponse)
async def gate_page(request: Request, gate_id: str, action: str | None = None) -> Response:
    """The whole request and the decision form. `?action=approve|reject` (the notification's links) focuses that
    button and asks to confirm; it decides nothing."""
    session = await _read_session(request)
    if session.user is None:
        return _to_sign_in(request, session, str(request.url.path) + (f"?{request.url.query}" if action else ""))
    return await _gate_page(request, session, gate_id, action=action)


_INPUT_FIELD = re.compile(r"^input\.(.+)$")


@router.post("/gates/{gate_id}", response_class=HTMLResponse)
async def decide(request: Request, gate_id: str) -> Response:
    """A vote from the form, by the signed-in user, through the same desk as the API's; the page again with the
    approval service's answer."""
    session = await _read_session(request)
    page = f"/gates/{quote(gate_id, safe='')}"
    if session.user is None:
        return _to_sign_in(request, session, page)
    form = await request.form()
    if not _csrf_ok(session, form):
        log.info("page_csrf_refused", user=session.user, gate_id=gate_id)
        return _problem_page(
            request,
            session,
            403,
            "Not sent",
            "This form is out of date or did not come from this site: reload the "
            "gate's page and decide again. Nothing was recorded.",
        )
    choice = form.get("decision")
    if choice not in (DecisionStatus.APPROVED.value, DecisionStatus.REJECTED.value):
        return _problem_page(request, session, 400, "Not sent", "Choose Approve or Reject. Nothing was recorded.")
    status = DecisionStatus(choice)
    comment = str(form.get("comment") or "")
    values = {m.group(1): str(v) for k, v in form.multi_items() if (m := _INPUT_FIELD.match(k))}
    inputs = {name: value for name, value in values.items() if value != ""}
    context = _context(request)
    if status is DecisionStatus.APPROVED:
        async with context.pool.acquire() as conn:
            row = await context.approval.find_gate(conn, gate_id)
            votes = await context.approval.votes_of(conn, [gate_id]) if row is not None else []
        stored = gates.load(row, votes) if row is not None else None
        # Only a vote the approval service would otherwise weigh is stopped here: who may not decide at all hears
        # that (its refusal), not about a field.
        if stored is not None and gates.your_turn(stored, session.user).may_decide:
            errors = stored.gate.input_errors(session.user, inputs)
            if errors:
                return await _gate_page(
                    request, session, gate_id, status=422, values=values, errors=errors, comment=comment
                )
    else:
        inputs = {}  # a rejection carries no inputs (the approval service ignores them)
    if len(comment) > COMMENT_MAX:
        errors = {"comment": f"at most {COMMENT_MAX} characters (this one has {len(comment)})"}
        return await _gate_page(request, session, gate_id, status=422, values=values, errors=errors, comment=comment)
    decision = models.DecisionRequest(
        status=status, comment=comment, inputs=inputs, token=str(form.get("token") or "")[:256] or None
    )
    nonce = str(form.get("nonce") or "")[:64] or None  # a double submit of one form is one vote
    try:
        code, answer = await context.decisions.decide(
            _principal(request, session), gate_id, decision, f"page:{nonce}" if nonce else None
        )
    except ApiProblem as problem:
        told = {
            "kind": "refused",
            "code": problem.code,
            "words": REFUSALS.get(problem.code, ""),
            "text": problem.detail,
        }
        return await _gate_page(request, session, gate_id, status=problem.status, answer=told, comment=comment)
    told = {"kind": answer.outcome, "text": answer.message, "gate_status": answer.gate_status}
    return await _gate_page(request, session, gate_id, status=200 if code == 200 else 202, answer=told)


# ---------------------------------------------------------------------------------------------------- sign-in


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, next: str | None = None, ended: str | None = None) -> Response:
    """How to sign in: the identity provider, and in a dev stack the directory's users."""
    session = await _read_session(request)
    back_to = _local_path(next)
    settings = _page_settings(request)
    users: list[dict[str, Any]] = []
    if settings.dev_mode and settings.session_secret:
        context = _context(request)
        async with context.pool.acquire() as conn:
            users = [dict(row) for row in await context.approval.directory_users(conn)]
    return _render(
        request,
        session,
        "sign_in.html",
        next=back_to,
        users=users,
        oidc=settings.oidc is not None and bool(settings.session_secret),
        configured=bool(settings.session_secret) and (settings.oidc is not None or settings.dev_mode),
        expired=ended is not None,
    )


@router.post("/sign-in/dev", response_class=HTMLResponse)
async def dev_sign_in(request: Request) -> Response:
    """A dev stack's sign-in as any directory user; refused unless SIGNOFF_API_DEV_MODE is set."""
    session = await _read_session(request)
    settings = _page_settings(request)
    if not settings.dev_mode or not settings.session_secret:
        return _problem_page(
            request, session, 403, "Not available", "Signing in by choosing a user exists only in a dev stack."
        )
    form = await request.form()
    if not _csrf_ok(session, form):
        return _problem_page(request, session, 403, "Not signed in", "The sign-in form is out of date: try again.")
    user = str(form.get("user") or "")
    context = _context(request)
    async with context.pool.acquire() as conn:
        known = {row["user_id"] for row in await context.approval.directory_users(conn)}
    if user not in known:
        return _problem_page(request, session, 400, "Not signed in", "Choose one of the directory's users.")
    log.info("page_signed_in", user=user, via="dev")
    return _redirect(request, _signed_in(request, session, user, "dev"), _local_path(str(form.get("next") or "")))


def _redirect_uri(request: Request) -> str:
    return (_context(request).base_url or str(request.base_url)).rstrip("/") + "/auth/callback"


@router.get("/auth/login")
async def oidc_login(request: Request, next: str | None = None) -> Response:
    """Off to the identity provider (authorization code, PKCE S256, state and nonce kept in the session)."""
    session = await _read_session(request)
    oidc = _page_settings(request).oidc
    if oidc is None or not _page_settings(request).session_secret:
        return _problem_page(request, session, 404, "Not available", "OIDC sign-in is not configured.")
    try:
        endpoints = await oidc.endpoints()
    except IdentityProviderUnavailable as exc:
        log.warning("page_oidc_unavailable", error=str(exc))
        return _problem_page(request, session, 503, "Cannot sign in", "The identity provider cannot be reached.")
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    session.login = {
        "state": state,
        "nonce": nonce,
        "verifier": verifier,
        "next": _local_path(next),
        "at": str(_now(request).timestamp()),
    }
    session.changed = True
    query = urlencode(
        {
            "response_type": "code",
            "client_id": oidc.client_id,
            "redirect_uri": _redirect_uri(request),
            "scope": oidc.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    separator = "&" if "?" in endpoints["authorization_endpoint"] else "?"
    return _redirect(request, session, endpoints["authorization_endpoint"] + separator + query)


@router.get("/auth/callback", response_class=HTMLResponse)
async def oidc_callback(request: Request) -> Response:
    """The identity provider's answer: the code redeemed (with the PKCE verifier), the ID token verified (keys,
    issuer, audience, expiry, nonce), then a session for its user."""
    session = await _read_session(request)
    oidc = _page_settings(request).oidc
    login = session.login
    session.login, session.changed = None, True
    params = request.query_params
    if oidc is None or login is None:
        return _problem_page(request, session, 400, "Not signed in", "No sign-in is under way: start again.")
    if _now(request).timestamp() - float(login["at"]) > LOGIN_LIFETIME.total_seconds():
        return _problem_page(request, session, 400, "Not signed in", "The sign-in took too long: start again.")
    state = params.get("state") or ""
    if not secrets.compare_digest(state.encode(), login["state"].encode()):
        return _problem_page(request, session, 400, "Not signed in", "The answer is not of this sign-in.")
    if params.get("error") or not params.get("code"):
        reason = (params.get("error") or "no code")[:100]
        return _problem_page(request, session, 403, "Not signed in", f"The identity provider said: {reason}.")
    try:
        id_token = await oidc.redeem(params["code"], login["verifier"], _redirect_uri(request))
        principal = await oidc.verifier.verify_id_token(id_token, login["nonce"])
    except AuthenticationFailed as failure:
        log.info("page_oidc_refused", reason=failure.reason, detail=failure.detail)
        return _problem_page(request, session, 403, "Not signed in", failure.detail)
    except IdentityProviderUnavailable as exc:
        log.warning("page_oidc_unavailable", error=str(exc))
        return _problem_page(request, session, 503, "Cannot sign in", "The identity provider cannot be reached.")
    log.info("page_signed_in", user=principal.user, via="oidc")
    return _redirect(request, _signed_in(request, session, principal.user, "oidc"), login["next"])


@router.post("/sign-out", response_class=HTMLResponse)
async def sign_out(request: Request) -> Response:
    """End the session: its cookie replaced by an anonymous one, and its id listed as revoked until it would have
    expired, so a copy of the cookie is refused too."""
    session = await _read_session(request)
    form = await request.form()
    if session.user is not None and not _csrf_ok(session, form):
        return _problem_page(request, session, 403, "Not signed out", "The form is out of date: reload and try again.")
    if session.user is not None:
        context = _context(request)
        # Kept for the longest lifetime the setting allows, not the current one: raising it later must not
        # bring a signed-out session back.
        expires = datetime.fromtimestamp(session.issued, tz=UTC) + MAX_SESSION_LIFETIME
        async with context.pool.acquire() as conn:
            await context.api.revoke_session(conn, session.sid, expires, _now(request))
        log.info("page_signed_out", user=session.user, sid=session.sid)
    return _redirect(request, Session(csrf=secrets.token_urlsafe(32), changed=True), "/sign-in")
