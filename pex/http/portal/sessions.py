"""Portal sessions and CSRF protection, in a signed cookie (itsdangerous), and a logged-in
session's record in the store.

The cookie holds a random session id, the username once logged in, the chosen time zone and
one-shot flash messages; nothing secret. It is signed and timestamped, so it cannot be forged
and stops counting after PEX_SESSION_HOURS. It is HttpOnly, SameSite=Lax, and Secure on HTTPS.

A logged-in session also has a row in the store (pex.projections.login_state, through the application's
open_session / session_user / close_session), which every worker reads on every request: the
cookie counts only while its row does. Logging out deletes the row, so a copy of the cookie
taken before is worth nothing after; a password change (set_password) ends every session of
the user, since each row carries the password version it was opened under.

Every form carries a CSRF token: the session id signed under another salt. A POST whose token
does not match the session it arrives with is refused (403) before its resource runs. The
session id changes at login and logout, so a token (or a cookie) from before is worth nothing
after.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import quote

import falcon
from itsdangerous import BadSignature, URLSafeTimedSerializer

from pex.settings import PortalSettings

COOKIE = "pex_session"
CSRF_FIELD = "csrf_token"


@dataclass
class Session:
    sid: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    username: str | None = None
    tz: str | None = None
    flashes: list[tuple[str, str]] = field(default_factory=list)
    modified: bool = False
    fresh: bool = True
    opened: bool = False  # logged in during this request: its record is to be written
    ended: list[str] = field(default_factory=list)  # ids of logged-in sessions ended in this request

    def flash(self, text: str, kind: str = "info") -> None:
        self.flashes.append((kind, text))
        self.modified = True

    def pop_flashes(self) -> list[tuple[str, str]]:
        flashes, self.flashes = self.flashes, []
        if flashes:
            self.modified = True
        return flashes

    def log_in(self, username: str) -> None:
        """A new session id at login: a session id planted before it is worth nothing after."""
        self.log_out()
        self.username, self.opened = username, True

    def log_out(self) -> None:
        if self.username:
            self.ended.append(self.sid)
        self.sid, self.username, self.modified, self.opened = secrets.token_urlsafe(18), None, True, False

    def to_data(self) -> dict:
        data: dict = {"sid": self.sid}
        if self.username:
            data["u"] = self.username
        if self.tz:
            data["tz"] = self.tz
        if self.flashes:
            data["f"] = [list(f) for f in self.flashes]
        return data

    @classmethod
    def from_data(cls, data: object) -> Session | None:
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
            return None
        flashes = [tuple(f) for f in data.get("f", []) if isinstance(f, list) and len(f) == 2]
        return cls(sid=data["sid"], username=data.get("u"), tz=data.get("tz"), flashes=flashes, fresh=False)


class CsrfRefused(Exception):
    """A form arrived without a valid token for the session it came with."""


class Signer:
    def __init__(self, secret: str, session_hours: float):
        self.max_age = int(session_hours * 3600)
        self.sessions = URLSafeTimedSerializer(secret, salt="pex.portal.session")
        self.tokens = URLSafeTimedSerializer(secret, salt="pex.portal.csrf")

    def load(self, cookie: str | None) -> Session:
        if cookie:
            try:
                session = Session.from_data(self.sessions.loads(cookie, max_age=self.max_age))
            except BadSignature:  # also SignatureExpired
                session = None
            if session is not None:
                return session
        return Session(modified=True)

    def dump(self, session: Session) -> str:
        return self.sessions.dumps(session.to_data())

    def csrf_token(self, session: Session) -> str:
        return self.tokens.dumps(session.sid)

    def check_csrf(self, session: Session, token: object) -> None:
        if not isinstance(token, str) or not token:
            raise CsrfRefused("the form has no CSRF token")
        try:
            sid = self.tokens.loads(token, max_age=self.max_age)
        except BadSignature:
            raise CsrfRefused("the form's CSRF token is not valid") from None
        if session.fresh or not secrets.compare_digest(str(sid), session.sid):
            raise CsrfRefused("the form's CSRF token belongs to another session")


def form(req: falcon.Request) -> dict[str, str]:
    """The posted form as single strings (the last value of a repeated field)."""
    if req.method != "POST":
        return {}
    if not (req.content_type or "").startswith("application/x-www-form-urlencoded"):
        return {}
    cached = req.context.get("form")
    if cached is None:
        media = req.get_media(default_when_empty={}) or {}
        cached = {k: (v[-1] if isinstance(v, list) else v) for k, v in media.items()}
        req.context.form = cached
    return cached


class PortalSessions:
    """Falcon middleware for the portal's resources (those with `portal = True`): loads the
    session and the logged-in user (while the session's record lasts), refuses POSTs without a
    valid CSRF token, sends anonymous visitors of a page that needs a login to /login, and
    writes the session's record and the cookie back when they changed. `accounts` is the
    application (its session methods)."""

    def __init__(self, settings: PortalSettings, secret: str, accounts):
        self.settings, self.signer, self.accounts = settings, Signer(secret, settings.session_hours), accounts

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
        if resource is None or not getattr(resource, "portal", False):
            return
        req.context.portal = True
        session = self.signer.load(req.cookies.get(COOKIE))
        req.context.session = session
        req.context.signer = self.signer
        req.context.user = None
        if session.username:
            user = self.accounts.session_user(session.sid)
            if user is None:  # logged out, password changed, expired, or the account is gone
                session.log_out()
            req.context.user = user
        if req.method == "POST":
            self.signer.check_csrf(session, form(req).get(CSRF_FIELD))
        if getattr(resource, "login_required", True) and req.context.user is None:
            target = "/login"
            if req.method == "GET" and req.path not in ("/", "/login"):
                target += "?next=" + quote(req.relative_uri, safe="/")
            raise falcon.HTTPSeeOther(target)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        session = req.context.get("session")
        if session is None:
            return
        for sid in session.ended:
            self.accounts.close_session(sid)
        if session.opened and session.username:
            user = self.accounts.get_user(session.username)
            if user is not None:
                expires = self.accounts.clock() + timedelta(hours=self.settings.session_hours)
                self.accounts.open_session(session.sid, user, expires)
                session.username = user.username
        if not session.modified:
            return
        secure = self.settings.cookie_secure
        if secure is None:
            secure = req.scheme == "https"
        resp.set_cookie(
            COOKIE,
            self.signer.dump(session),
            max_age=int(self.settings.session_hours * 3600),
            path="/",
            secure=secure,
            http_only=True,
            same_site="Lax",
        )
