"""The portal's pages (paper §3.4): each resource parses a form or a query, calls one
application method, and renders a page or redirects (POST → 303 See Other → GET). Pages that
list read the persisted read models instead (pex.projections.readmodels), caught up first.

Refusals a person can fix come back as messages: beside the form field that caused them
(422, the form shown again with what was typed), or as a flash message on the page the user
is sent back to. Someone else's reservation or instance is "not found", as in the API.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from urllib.parse import urlencode
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import falcon

from pex.application import Contention, NotFound, PexApplication, ReservationView
from pex.application.errors import InvalidQuery, ProposalInProgress, ProposalReused
from pex.domain.errors import DomainError, IllegalMove, InvalidProposal, OfferExpired
from pex.domain.instance import TERMINAL as TERMINAL_STATUSES
from pex.domain.instance import Status as InstanceStatus
from pex.domain.lifecycle import PHASE_WORDS, Phase
from pex.domain.negotiation import WHY
from pex.domain.quotas import QuotaExceeded
from pex.domain.user import AccountError, CreditError, InsufficientCredit, UsernameTaken
from pex.domain.values import Reply, State, time_text
from pex.http import paging
from pex.http.auth import LoginThrottle, client_of
from pex.http.portal import calendar
from pex.http.portal.forms import AccountForm, FormErrors, ReservationForm
from pex.http.portal.pages import Renderer, is_zone, local_input, parse_local, time_zones, zone
from pex.http.portal.sessions import form
from pex.projections.readmodels import ReadModels

log = logging.getLogger("pex.http.portal")

# What a person reads for each step of the history (and, under the phase, the protocol's state).
STATE_WORDS = {
    State.INITIATED: "Started, no proposal yet",
    State.SUBMITTED: "Being evaluated",
    State.ACCEPTED: "Offer waiting for your confirmation",
    State.COUNTERED: "Counter-offer waiting for your answer",
    State.REJECTED: "Not agreed",
    State.CONFIRMED: "Booked",
    State.ACTIVATED: "Activated",
    State.EXPIRED: "Expired",
    State.CANCELLED: "Deleted",
}
STEP_WORDS = {
    ("user", "PROPOSE"): "You proposed",
    ("user", "COUNTER"): "You made a counter-proposal",
    ("user", "ACCEPT"): "You accepted the provider's terms",
    ("user", "REJECT"): "You walked away",
    ("user", "CONFIRM"): "You confirmed",
    ("user", "ACTIVATE"): "You activated the reservation",
    ("user", "DELETE"): "Deleted",
    ("user", "EXTEND"): "You asked to extend it",
    ("provider", "ACCEPT"): "The provider accepted",
    ("provider", "COUNTER"): "The provider made a counter-offer",
    ("provider", "REJECT"): "The provider refused",
    ("provider", "CONFIRM_REQUEST"): "The provider asked you to confirm",
    ("provider", "REQUEST_SUCCESS"): "The provider booked it",
    ("provider", "OFFER_EXPIRED"): "The offer lapsed",
    ("provider", "EXPIRED"): "The reservation ended",
}
DELETABLE = {State.INITIATED, State.ACCEPTED, State.COUNTERED, State.REJECTED, State.CONFIRMED}
INSTANCE_ACTIONS = {
    # action: (application method, statuses it applies to, button text)
    "start": ("start_instance", {"HALTED"}, "Start"),
    "stop": ("stop_instance", {"RUNNING", "PAUSED", "SUSPENDED"}, "Stop"),
    "reboot": ("reboot_instance", {"RUNNING"}, "Reboot"),
    "delete": ("delete_instance", {"SCHEDULED", "HALTED", "RUNNING", "PAUSED", "SUSPENDED", "LOST"}, "Delete"),
}


@dataclass
class Portal:
    """What the pages share."""

    application: PexApplication
    read_models: ReadModels
    renderer: Renderer
    throttle: LoginThrottle
    registration: bool


def redirect(to: str) -> falcon.HTTPSeeOther:
    return falcon.HTTPSeeOther(to)


# A path on this site, as RFC 3986 writes one (path-absolute, with its query): no "/" right
# after the first (`//host` is another site) and no backslash anywhere (Chromium reads `/\host`
# as `//host`); only printable ASCII, so no tab or newline that a browser strips before it
# parses (`/<TAB>/evil` is `//evil` to Chromium), and nothing a Location header cannot carry
# (a newline, U+3000), which made the server fail.
SAME_SITE_PATH = re.compile(r"/(?![/\\])(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
MAX_TARGET_LENGTH = 2000


def safe_next(target: str | None) -> str:
    """Where to send the user back to: a path on this site, "/" when none is given. Anything
    else (another site, a scheme, control characters) is a 400: an open redirect otherwise."""
    if not target:
        return "/"
    if len(target) <= MAX_TARGET_LENGTH and SAME_SITE_PATH.fullmatch(target):
        return target
    raise falcon.HTTPBadRequest(
        title="Not a page of this site",
        description="The link would send you to another site, or is malformed. Go to the home page instead.",
    )


def owner_of(req: falcon.Request) -> str | None:
    """Whose things the user may open: their own, or (an administrator) anyone's."""
    user = req.context.user
    return None if user.is_admin else user.username


def reservation_url(reservation_id: UUID) -> str:
    return f"/reservations/{reservation_id}"


class Page:
    portal = True  # PortalSessions looks after it
    auth = None  # no HTTP basic authentication: the session cookie is the portal's
    contract = False  # not part of the OpenAPI document
    login_required = True

    def __init__(self, portal: Portal):
        self.p = portal
        self.application = portal.application
        self.read_models = portal.read_models

    def render(self, req, resp, template: str, status: int = 200, **context) -> None:
        self.p.renderer.render(req, resp, template, status, **context)

    def now(self) -> datetime:
        return self.application.clock()


# --- accounts ---------------------------------------------------------------------------


class Register(Page):
    login_required = False

    def on_get(self, req, resp):
        if req.context.user:
            raise redirect("/")
        self.render(req, resp, "register.html", form=AccountForm(), errors={}, open=self.p.registration,
                    status=200 if self.p.registration else 403)

    def on_post(self, req, resp):
        if not self.p.registration:
            self.render(req, resp, "register.html", form=AccountForm(), errors={}, open=False, status=403)
            return
        account = AccountForm.from_post(form(req))
        errors = {}
        if account.password != account.confirm:
            errors["confirm"] = "The two passwords differ"
        else:
            try:
                self.application.sign_up(account.username, account.password)
            except AccountError as error:
                errors[error.field] = error.detail[:1].upper() + error.detail[1:]
            except UsernameTaken:
                errors["username"] = "That username is taken; choose another"
        if errors:
            account.password = account.confirm = ""
            self.render(req, resp, "register.html", status=422, form=account, errors=errors, open=True)
            return
        req.context.session.log_in(account.username)
        req.context.session.flash(f"Welcome, {account.username}: your account is ready.", "success")
        raise redirect("/")


class Login(Page):
    login_required = False

    def on_get(self, req, resp):
        if req.context.user:
            raise redirect(safe_next(req.get_param("next")))
        self.render(req, resp, "login.html", username="", next=safe_next(req.get_param("next")), error=None,
                    registration=self.p.registration)

    def on_post(self, req, resp):
        data = form(req)
        username, password = str(data.get("username", "")).strip(), str(data.get("password", ""))
        target = safe_next(data.get("next"))
        address = client_of(req)
        wait = self.p.throttle.retry_after(username, address)
        if wait > 0:
            resp.set_header("Retry-After", str(int(wait) + 1))
            error = f"Too many failed attempts: wait {int(wait) + 1} seconds and try again."
            self.render(req, resp, "login.html", status=429, username=username, next=target, error=error,
                        registration=self.p.registration)
            return
        user = self.application.authenticate(username, password) if username and password else None
        if user is None:
            self.p.throttle.failed(username, address)
            self.render(req, resp, "login.html", status=422, username=username, next=target,
                        error="Unknown username or wrong password.", registration=self.p.registration)
            return
        self.p.throttle.succeeded(username, address)
        req.context.session.log_in(user.username)
        raise redirect(target)


class Logout(Page):
    login_required = False

    def on_post(self, req, resp):
        req.context.session.log_out()
        req.context.session.flash("You are logged out.")
        raise redirect("/login")


class Preferences(Page):
    login_required = False

    def on_get(self, req, resp):
        self.render(req, resp, "preferences.html", zones=time_zones(), back=safe_next(req.get_param("back")), error=None,
                    **ssh_keys_context(self.application, req), **credit_context(self.application, req),
                    **webhook_context(self.application, req))

    def on_post(self, req, resp):
        data = form(req)
        name = str(data.get("tz", "")).strip()
        back = safe_next(data.get("back"))
        if not is_zone(name):
            self.render(req, resp, "preferences.html", status=422, zones=time_zones(), back=back,
                        error=f"{name or 'That'} is not a time zone this server knows",
                        **ssh_keys_context(self.application, req), **credit_context(self.application, req),
                        **webhook_context(self.application, req))
            return
        req.context.session.tz = name
        req.context.session.modified = True
        req.context.session.flash(f"Times are now shown in {name}.", "success")
        raise redirect(back)


def ssh_keys_context(application: PexApplication, req, typed: str | None = None, error: str | None = None) -> dict:
    """The SSH keys form of the preferences page, for a logged-in user: their keys one a line
    (or what they typed, when it was refused)."""
    user = req.context.user
    if not user:
        return {"ssh_keys": None, "ssh_keys_error": None}
    keys = "\n".join(application.ssh_keys_of(user.username)) if typed is None else typed
    return {"ssh_keys": keys, "ssh_keys_error": error}


class SshKeys(Page):
    """/preferences/ssh-keys: the user's SSH public keys, one a line (none: cleared), for the
    VMs made from now on (pex.application.accounts.set_ssh_keys)."""

    def on_get(self, req, resp):
        raise redirect("/preferences")

    def on_post(self, req, resp):
        typed = str(form(req).get("ssh_keys", ""))
        lines = [line for line in typed.splitlines() if line.strip()]
        try:
            view = self.application.set_ssh_keys(req.context.user.username, lines)
        except AccountError as refused:
            self.render(req, resp, "preferences.html", status=422, zones=time_zones(), back="/", error=None,
                        **ssh_keys_context(self.application, req, typed, refused.detail),
                        **credit_context(self.application, req), **webhook_context(self.application, req))
            return
        count = len(view.ssh_keys)
        req.context.session.flash(
            f"Your new VMs will let in {count} SSH key{'s' if count != 1 else ''}." if count
            else "Your new VMs will have no SSH key of yours.", "success")
        raise redirect("/preferences")


def credit_context(application: PexApplication, req, grant: dict | None = None, error: str | None = None) -> dict:
    """The credit section of the preferences page, for a logged-in user: their balance and
    latest statement lines; for an administrator, the grant form (with what they typed and
    why it was refused, when it was)."""
    user = req.context.user
    if not user:
        return {"credit": None, "grant": None, "grant_error": None}
    credit = application.credit(user.username, entries=10)
    return {"credit": credit, "grant": (grant or {}) if user.is_admin else None, "grant_error": error}


class CreditGrant(Page):
    """/preferences/credit: an administrator grants a user credit (pex.application.accounts.grant_credit)."""

    def on_get(self, req, resp):
        raise redirect("/preferences")

    def on_post(self, req, resp):
        me = req.context.user
        if not me.is_admin:
            raise falcon.HTTPForbidden(title="Administrators only", description="Only an administrator grants credit.")
        data = form(req)
        typed = {k: str(data.get(k, "")).strip() for k in ("username", "amount", "note")}
        try:
            credit = self.application.grant_credit(typed["username"], typed["amount"], me.username, typed["note"])
        except (CreditError, NotFound) as refused:
            detail = refused.detail if isinstance(refused, CreditError) else f"there is no user {typed['username']!r}"
            self.render(req, resp, "preferences.html", status=422, zones=time_zones(), back="/", error=None,
                        **ssh_keys_context(self.application, req), **credit_context(self.application, req, typed, detail),
                        **webhook_context(self.application, req))
            return
        req.context.session.flash(
            f"{credit.username} now has {credit.balance} {self.application.currency} of credit.", "success")
        raise redirect("/preferences")


WEBHOOK_LOG_SHOWN = 10


def webhook_context(application: PexApplication, req, typed: str | None = None, error: str | None = None,
                    secret: str | None = None) -> dict:
    """The webhook form of the preferences page, for a logged-in user: where their notifications
    go (or what they typed, when it was refused), the secret just made (shown this once), and
    the newest deliveries."""
    user = req.context.user
    if not user:
        return {"webhook": None}
    view = application.webhook_of(user.username)
    deliveries = application.webhook_deliveries(user.username, WEBHOOK_LOG_SHOWN)
    return {"webhook": {
        "url": typed if typed is not None else (view.url if view else ""),
        "registered": view is not None,
        "error": error,
        "secret": secret,
        "deliveries": [
            {"kind": d.kind, "status": d.status.upper(), "attempts": d.attempts,
             "due": datetime.fromtimestamp(d.due, UTC),
             "answer": (f"HTTP {d.last_code}" if d.last_code is not None else "") if d.status == "delivered"
             else " ".join(x for x in (f"HTTP {d.last_code}" if d.last_code is not None else "", d.last_error or "") if x)}
            for d in deliveries
        ],
    }}


class Webhook(Page):
    """/preferences/webhook: where the user's notifications go (docs/api.md, "Users are told").
    Saving a first URL, or asking for a new secret, shows the secret on the page this once
    (never in a redirect, a flash or a cookie); "Remove" tells them nothing any more."""

    def on_get(self, req, resp):
        raise redirect("/preferences")

    def on_post(self, req, resp):
        data = form(req)
        username = req.context.user.username
        if data.get("action") == "remove":
            self.application.remove_webhook(username)
            req.context.session.flash("PEX tells you nothing any more.", "success")
            raise redirect("/preferences")
        typed = str(data.get("url", ""))
        try:
            view = self.application.set_webhook(username, typed, rotate_secret=data.get("rotate") == "on")
        except AccountError as refused:
            self.render(req, resp, "preferences.html", status=422, zones=time_zones(), back="/", error=None,
                        **ssh_keys_context(self.application, req), **credit_context(self.application, req),
                        **webhook_context(self.application, req, typed, refused.detail))
            return
        if view.secret is None:
            req.context.session.flash(f"Your notifications go to {view.url}.", "success")
            raise redirect("/preferences")
        self.render(req, resp, "preferences.html", zones=time_zones(), back="/", error=None,
                    **ssh_keys_context(self.application, req), **credit_context(self.application, req),
                    **webhook_context(self.application, req, secret=view.secret))


# --- welcome ---------------------------------------------------------------------------


class Welcome(Page):
    def on_get(self, req, resp):
        now = self.now()
        mine = self.read_models.reservations(req.context.user.username)
        upcoming = sorted(
            (r for r in mine if r.state in (State.CONFIRMED, State.ACTIVATED) and r.terms and r.terms.end > now),
            key=attrgetter("terms.start"),
        )
        waiting = [r for r in mine if r.state in (State.ACCEPTED, State.COUNTERED)]
        phases = self.read_models.phases(upcoming[:5], now)
        self.render(req, resp, "welcome.html", upcoming=upcoming[:5], waiting=waiting, words=STATE_WORDS, now=now,
                    phases=phases, phase_words=PHASE_WORDS)


# --- reservations ----------------------------------------------------------------------


class NewReservation(Page):
    def on_get(self, req, resp):
        tz = zone(req.context.session.tz)
        catalogue = self.application.catalogue()
        typed = ReservationForm(
            size=req.get_param("size") or "",
            template=req.get_param("template") or next(iter(catalogue.templates), ""),
            start=req.get_param("start") or local_input(self._next_hour(), tz),
            end=req.get_param("end") or "",
            duration=req.get_param("duration") or ("" if req.get_param("end") else "1"),
            instances_fixed=req.get_param("instances_fixed") or "1",
            instances_option=req.get_param("instances_option") or "0",
            price=req.get_param("price") or "",
            latest_start=req.get_param("latest_start") or "",
            min_duration=req.get_param("min_duration") or "",
        )
        if not typed.size and catalogue.sizes:
            typed.size = next(iter(catalogue.sizes))
        self._show(req, resp, typed, {}, 200)

    def _next_hour(self) -> datetime:
        now = self.now()
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)

    def _show(self, req, resp, typed: ReservationForm, errors: dict, status: int) -> None:
        typed.nonce = typed.nonce or uuid4().hex
        catalogue = self.application.catalogue()
        self.render(req, resp, "new_reservation.html", status=status, form=typed, errors=errors,
                    sizes=list(catalogue.sizes.values()), templates=catalogue.templates,
                    free=self._free_windows(req, typed), policies=self.application.policies())

    def _free_windows(self, req, typed: ReservationForm) -> dict | None:
        """The next free windows for what the form asks (the instances needed, for its
        duration, from its start), nothing held; None while the form does not say enough.
        Starts are asked from the next whole minute, the form's precision, so a window's
        start can be typed back as it is."""
        tz = zone(req.context.session.tz)
        now = self.now()
        try:
            terms = typed.terms(tz, now)
        except FormErrors:
            return None
        soonest = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        try:
            windows = self.application.availability(
                req.context.user.username, terms.size, max(terms.instances_fixed, 1), terms.duration,
                max(terms.start, soonest), None, FREE_WINDOWS,
            )
        except (InvalidQuery, DomainError):
            return None
        links = [
            "/reservations/new?" + urlencode(
                {**typed.values(), "start": local_input(w.start, tz), "end": local_input(w.end, tz), "duration": "", "nonce": ""}
            )
            for w in windows
        ]  # fmt: skip
        return {"terms": terms, "windows": list(zip(windows, links, strict=True))}

    def on_post(self, req, resp):
        tz = zone(req.context.session.tz)
        typed = ReservationForm.from_post(form(req))
        user = req.context.user.username
        try:
            now = self.now()
            terms = typed.terms(tz, now)
            typed.check(terms, lambda t: self.application.check_proposal(user, t))
        except FormErrors as refused:
            self._show(req, resp, typed, refused.errors, 422)
            return
        # The form's nonce names the reservation: a form sent twice negotiates once.
        rid = uuid5(NAMESPACE_URL, f"/pex/users/{user}/portal/{typed.nonce or uuid4().hex}")
        try:
            self.application.propose(user, terms, rid)
        except (ProposalInProgress, ProposalReused):
            pass  # already submitted by the same form: show what was answered then
        except QuotaExceeded as error:
            typed.nonce = ""  # a refusal records nothing; the corrected form is a proposal of its own
            self._show(req, resp, typed, {typed.field_of(error): error.detail}, 422)
            return
        except DomainError as error:
            field = typed.field_of(error) if isinstance(error, InvalidProposal) else "form"
            typed.nonce = ""  # a refusal records nothing; the corrected form is a proposal of its own
            self._show(req, resp, typed, {field: str(getattr(error, "detail", error))}, 422)
            return
        raise redirect(reservation_url(rid))


FREE_WINDOWS = 3  # shown under the new-reservation form


class Reservations(Page):
    def on_get(self, req, resp):
        show_all = req.get_param_as_bool("all") or False
        rows = self.read_models.reservations(req.context.user.username)
        if not show_all:
            rows = [r for r in rows if r.state != State.CANCELLED]
        rows.reverse()  # newest first
        phases = self.read_models.phases(rows, self.now())
        self.render(req, resp, "reservations.html", reservations=rows, words=STATE_WORDS, deletable=DELETABLE,
                    show_all=show_all, phases=phases, phase_words=PHASE_WORDS)


def plain_reply(view: ReservationView, phase: Phase) -> tuple[str, str]:
    """(headline, explanation) of where the negotiation, then the reservation, stands, in plain words."""
    last_provider = next((s for s in reversed(view.history) if s.party == "provider"), None)
    if view.state == State.ACCEPTED:
        if last_provider and last_provider.reply == Reply.CONFIRM_REQUEST.value:
            return ("You accepted the provider's terms.",
                    "Confirm to book them; until you do, the capacity is held for you.")
        if view.proposal is not None and view.offer is not None and view.proposal.flexible and (
            view.offer.terms.but(price=None) != view.proposal.firm().but(price=None)
        ):
            return ("Accepted, with terms the provider chose within what you allowed.",
                    "It took the earliest start and the longest duration that fit. Confirm to book them.")
        return ("Accepted as you asked.", "The provider can do exactly what you asked. Confirm to book it.")
    if view.state == State.COUNTERED:
        others = "pick one of the alternatives, " if view.alternatives else ""
        return ("The provider cannot do exactly what you asked, and offers other terms.",
                f"Accept them, {others}make your own counter-proposal, or walk away.")
    if view.state == State.REJECTED:
        if view.history and view.history[-1].party == "user":
            return ("You walked away.", "Nothing is held or booked for this reservation.")
        reason = last_provider.note if last_provider else ""
        return ("The provider cannot satisfy this request in any manner.", reason)
    if view.state in (State.CONFIRMED, State.ACTIVATED) or (view.state == State.EXPIRED and view.instance_ids):
        return LIFE_WORDS[phase]
    if view.state == State.EXPIRED:
        return ("The offer lapsed.", "You did not confirm in time; propose again if you still need it.")
    if view.state == State.CANCELLED:
        return ("Deleted.", "Nothing is held or booked for this reservation.")
    return (STATE_WORDS.get(view.state, view.state.value), "")


# (headline, explanation) of a booked reservation in each phase of its life.
LIFE_WORDS = {
    Phase.AWAITING_ACTIVATION: ("Booked, waiting for you to activate it.",
                                "You asked to start it yourself: nothing runs until you activate it. "
                                "You may delete it until then."),
    Phase.BOOKED: ("Booked: it starts by itself.",
                   "Its instances are created at the start and shut down at the end. You may delete it before it runs."),
    Phase.STARTING: ("Starting.", "Its instances are being created on the booked nodes."),
    Phase.RUNNING: ("Running.", "Its instances run until the end of the reservation; see them on the instances page."),
    Phase.STOPPED: ("Stopped.", "You stopped every instance; start one again on the instances page until the end."),
    Phase.FAILED: ("Failed: no instance runs.",
                   "Its node was lost and no other had room; the provider keeps trying until the end."),
    Phase.ENDING: ("Ending.", "The reservation's time is over; its instances are being shut down."),
    Phase.ENDED: ("Over.", "The reservation's time has ended; nothing runs any more."),
}


def change_notes(changes) -> tuple[list[str], list[str]]:
    """A COUNTER's notes, split: (what changed, why)."""
    what = [c for c in changes if not c.startswith(WHY)]
    why = [c.removeprefix(WHY) for c in changes if c.startswith(WHY)]
    return what, why


class ReservationPage(Page):
    def on_get(self, req, resp, reservation_id: UUID):
        view = self.application.get_reservation(reservation_id, owner_of(req))
        self.show(req, resp, view, None, {}, 200)

    def show(self, req, resp, view: ReservationView, counter: ReservationForm | None, errors: dict, status: int):
        tz = zone(req.context.session.tz)
        catalogue = self.application.catalogue()
        if counter is None and view.proposal is not None:
            counter = ReservationForm.from_terms(view.proposal, tz)
        now = self.now()
        phase = self.application.reservation_phase(view, now)
        headline, explanation = plain_reply(view, phase)
        changed, why = change_notes(view.offer.changes if view.offer else ())
        self.render(
            req, resp, "reservation.html", status=status, r=view, headline=headline, explanation=explanation,
            counter=counter, errors=errors, words=STATE_WORDS, step_words=STEP_WORDS,
            sizes=list(catalogue.sizes.values()), templates=catalogue.templates,
            seconds_left=max(0, int((view.valid_until - now).total_seconds())) if view.valid_until else None,
            deletable=view.state in DELETABLE, now=now, phase=phase, phase_words=PHASE_WORDS,
            changed=changed, why=why, awaiting_activation=phase == Phase.AWAITING_ACTIVATION,
            extension_seconds_left=(
                max(0, int((view.extension.valid_until - now).total_seconds())) if view.extension else None
            ),
            extend_to=local_input(view.offer.terms.end + timedelta(hours=1), tz) if view.offer else "",
        )


class ReservationAction(Page):
    """POST /reservations/{id}/{action}: one move of the negotiation or of the reservation's life."""

    MOVES = ("confirm", "accept", "decline", "counter", "alternative", "activate", "release", "delete",
             "extend", "extension-confirm", "extension-decline")

    def on_post(self, req, resp, reservation_id: UUID, action: str):
        if action not in self.MOVES:
            raise falcon.HTTPNotFound()
        view = self.application.get_reservation(reservation_id, owner_of(req))
        session = req.context.session
        app = self.application
        try:
            if action == "confirm":
                outcome = app.confirm(reservation_id)
                if outcome.reply == Reply.REQUEST_SUCCESS:
                    terms = outcome.reservation.offer.terms if outcome.reservation.offer else None
                    starts = ("it starts by itself at its start" if terms and terms.auto_start
                              else "activate it, or nothing starts")
                    session.flash(f"Confirmed: the reservation is booked; {starts}.", "success")
                else:
                    session.flash(f"The provider could not book it: {outcome.reason or 'the capacity is gone'}.", "error")
            elif action == "accept":
                app.accept_counter(reservation_id)
                session.flash("You accepted the provider's terms: confirm them to book.", "success")
            elif action == "decline":
                app.decline(reservation_id)
                session.flash("You walked away from the offer.")
            elif action == "activate":
                app.activate(reservation_id)
                session.flash("Activated: its instances run from its start to its end.", "success")
            elif action == "release":
                released = app.release(reservation_id, req.context.user.username, owner_of(req))
                price = released.offer.terms.price if released.offer else None
                session.flash(
                    "Released: its capacity is free from now and its instances are being shut down"
                    + (f"; you pay {price} {app.currency} for the time used." if price is not None else "."),
                    "success",
                )
            elif action == "extend":
                self._extend(req, reservation_id)
            elif action == "extension-confirm":
                outcome = app.confirm_extension(reservation_id)
                if outcome.reply == Reply.REQUEST_SUCCESS and outcome.reservation.offer is not None:
                    terms = outcome.reservation.offer.terms
                    session.flash(
                        f"Extended: it now ends at {time_text(terms.end)} and costs {terms.price} {app.currency} in all.",
                        "success",
                    )
                else:
                    session.flash(f"The provider could not book the extension: {outcome.reason}.", "error")
            elif action == "extension-decline":
                app.decline_extension(reservation_id)
                session.flash("You walked away from the extension: the reservation stays as it was.")
            elif action == "delete":
                app.cancel(reservation_id)
                session.flash("The reservation is deleted.")
                raise redirect("/reservations")
            elif action == "alternative":
                try:
                    chosen = view.alternatives[int(form(req).get("index", ""))]
                except (ValueError, IndexError):
                    session.flash("That alternative is no longer on offer.", "error")
                    raise redirect(reservation_url(reservation_id)) from None
                self._counter(req, reservation_id, chosen.terms)
            elif action == "counter":
                tz = zone(session.tz)
                typed = ReservationForm.from_post(form(req))
                try:
                    now = self.now()
                    terms = typed.terms(tz, now)
                    typed.check(terms, lambda t: app.check_proposal(view.user_id, t))
                except FormErrors as refused:
                    ReservationPage(self.p).show(req, resp, view, typed, refused.errors, 422)
                    return
                self._counter(req, reservation_id, terms)
        except OfferExpired:
            session.flash("The offer has lapsed: it was held only for a few minutes. Propose again.", "error")
        except IllegalMove as error:
            session.flash(f"That is not possible now: {error}.", "error")
        except QuotaExceeded as error:
            session.flash(f"Over your quota: {error.detail}.", "error")
        except InsufficientCredit as error:
            session.flash(
                f"Not booked: it costs {error.price} {app.currency} and your credit is {error.balance} {app.currency}. "
                "Ask an administrator for more; the offer stands until it lapses.", "error")
        except Contention:
            session.flash("The provider is busy; try again in a moment.", "error")
        raise redirect(reservation_url(reservation_id))

    def _extend(self, req, reservation_id: UUID) -> None:
        """Ask for the end typed in the Extend form (in the user's zone); the answer is shown
        on the reservation's page, with Confirm."""
        session = req.context.session
        try:
            end = parse_local(form(req).get("end", ""), zone(session.tz), not_before=self.now())
        except (ValueError, OverflowError) as bad:
            session.flash(f"The new end is not a time: {str(bad).capitalize()}.", "error")
            return
        try:
            outcome = self.application.extend(reservation_id, end, owner_of(req))
        except InvalidProposal as refused:
            session.flash(f"That extension cannot be asked: {refused.detail}.", "error")
            return
        said = {Reply.ACCEPT: "The provider can extend it as you asked: confirm to book it.",
                Reply.COUNTER: "The provider cannot extend it that far, and offers less: confirm to book it.",
                Reply.REJECT: f"The provider cannot extend it: {outcome.reason}."}
        session.flash(said[outcome.reply], "success" if outcome.reply == Reply.ACCEPT else "info")

    def _counter(self, req, reservation_id: UUID, terms) -> None:
        outcome = self.application.counter(reservation_id, terms)
        said = {Reply.ACCEPT: "The provider accepted your proposal.",
                Reply.COUNTER: "The provider answered with a counter-offer.",
                Reply.REJECT: "The provider refused your proposal."}
        req.context.session.flash(said.get(outcome.reply, outcome.reply.value), "success" if outcome.reply == Reply.ACCEPT else "info")


# --- instances -------------------------------------------------------------------------


def instance_command(application: PexApplication, action: str):
    """The application's instance action (stop_instance, reboot_instance, ...)."""
    name = INSTANCE_ACTIONS[action][0] if action in INSTANCE_ACTIONS else f"{action}_instance"
    return getattr(application, name)


INSTANCES_PER_PAGE = 25
# What the instances page can show: the current VMs (by default), every one, or one status.
INSTANCE_FILTERS = {"current": "Current (not ended)", "all": "All, ended ones too",
                    **{s.value: s.value for s in InstanceStatus}}


@dataclass(frozen=True)
class InstanceGroup:
    """One reservation's instances on the page (they share its start and end)."""

    reservation_id: UUID
    instances: list


class Instances(Page):
    """/instances?show=current|all|STATUS&cursor=…: a page of the user's VMs, grouped by their
    reservation, the current ones by default, so that a long history does not bury them. Pages
    follow the API's keyset cursor (pex.http.paging)."""

    def on_get(self, req, resp):
        show = req.get_param("show") or "current"
        if show not in INSTANCE_FILTERS:
            show = "current"
        cursor = req.get_param("cursor")
        try:
            after = paging.decode_cursor("instances", cursor) if cursor else None
        except falcon.HTTPError:
            raise falcon.HTTPBadRequest(title="Not a page of this list",
                                        description="The link is malformed. Go back to the first page.") from None
        rows = self.read_models.instances(
            req.context.user.username, status=show if show not in ("current", "all") else None,
            not_in=[s.value for s in TERMINAL_STATUSES] if show == "current" else (),
            limit=INSTANCES_PER_PAGE + 1, after=after,
        )
        following = None
        if len(rows) > INSTANCES_PER_PAGE:
            rows = rows[:INSTANCES_PER_PAGE]
            last = rows[-1]
            following = "/instances?" + urlencode(
                {"show": show, "cursor": paging.encode_cursor("instances", (last.start, last.reservation_id, last.index))})
        groups: list[InstanceGroup] = []
        for row in rows:  # by start, then reservation: one reservation's rows are together
            if not groups or groups[-1].reservation_id != row.reservation_id:
                groups.append(InstanceGroup(row.reservation_id, []))
            groups[-1].instances.append(row)
        # The page lists the user's own instances only, so each VM's password (if PEX gives VMs
        # one) is its owner's to see.
        passwords = {row.id: self.application.vm_password(row.id) for row in rows}
        self.render(req, resp, "instances.html", groups=groups, actions=INSTANCE_ACTIONS, now=self.now(),
                    show=show, filters=INSTANCE_FILTERS, following=following, first_page=cursor is not None,
                    back=req.relative_uri, passwords=passwords)


class InstanceAction(Page):
    def on_post(self, req, resp, instance_id: UUID, action: str):
        if action not in (*INSTANCE_ACTIONS, "delete"):
            raise falcon.HTTPNotFound()
        view = self.application.get_instance(instance_id, owner_of(req))
        command = instance_command(self.application, action)
        session = req.context.session
        try:
            command(instance_id, view.user_id)
            session.flash(f"{view.name}: {action} requested.", "success")
        except (DomainError, NotFound) as error:
            session.flash(f"{view.name}: {error}.", "error")
        except Contention:
            session.flash("The provider is busy; try again in a moment.", "error")
        back = form(req).get("back") or "/instances"
        raise redirect(safe_next(back) if back.startswith("/instances") else "/instances")


# --- capacity calendar -----------------------------------------------------------------


class Calendar(Page):
    def on_get(self, req, resp):
        tz = zone(req.context.session.tz)
        now = self.now()
        view = req.get_param("view") or "week"
        if view not in calendar.VIEWS:
            view = "week"
        try:
            anchor = date.fromisoformat(req.get_param("date") or "")
        except ValueError:
            anchor = now.astimezone(tz).date()
        try:
            calendar.check_date(anchor)
        except calendar.DateOutOfRange as error:
            raise falcon.HTTPBadRequest(title="No such date in the calendar", description=f"Sorry: {error}.") from None
        user = req.context.user
        self.read_models.catch_up()  # once: the queries below read what it reached
        in_force: dict[str, list] = {}
        for entry in self.read_models.calendar(start=now, at=now, fresh=False):
            in_force.setdefault(entry.node, []).append(entry)
        chart = calendar.build(view, anchor, tz, now, self.read_models.nodes(fresh=False),
                               lambda node: in_force.get(node, []), self._owners(user), user.username)
        sizes = list(self.application.catalogue().sizes.values())

        def bounds(slot) -> dict[str, str]:
            """A free cell's start and end as the form's inputs take them."""
            return {"start": local_input(max(slot.start, now), tz), "end": local_input(slot.end, tz)}

        def new_link(slot) -> str:
            fitting = [s for s in sizes if s.resources.fits_in(slot.free)]
            query = bounds(slot)
            if fitting:
                query["size"] = max(fitting, key=lambda s: (s.cpus, s.memory_mb)).name
            return "/reservations/new?" + urlencode(query)

        # For the script that selects a range of cells: the sizes, largest first (it picks the
        # largest that fits in every cell of the range, as new_link does for one).
        size_list = [{"name": s.name, "cpus": s.resources.cpus, "memory_mb": s.resources.memory_mb, "disk_gb": s.resources.disk_gb}
                     for s in sorted(sizes, key=lambda s: (s.cpus, s.memory_mb), reverse=True)]
        self.render(req, resp, "calendar.html", chart=chart, new_link=new_link, bounds=bounds, sizes=size_list,
                    views=list(calendar.VIEWS), now=now)

    def _owners(self, user):
        """reservation id → (owner, size) for the bookings this viewer may name: their own; for an
        administrator, any (looked up only for the bookings the window shows)."""
        if not user.is_admin:
            own = {r.id: (r.user_id, r.size) for r in self.read_models.reservations(user.username, fresh=False)}
            return own.get
        seen: dict = {}

        def lookup(reservation_id):
            if reservation_id not in seen:
                row = self.read_models.reservation(reservation_id, fresh=False)
                seen[reservation_id] = (row.user_id, row.size) if row is not None else None
            return seen[reservation_id]

        return lookup
