"""Users are told: the notifier follows the event log into an outbox of notifications for the
users who registered a webhook, and delivers them, signed, from threads of its own.

What a user is told (the body's "type"):

    offer.lapsing          the provider's offer lapses at validUntil: sent PEX_WEBHOOK_LAPSE_LEAD_SECONDS
                           (60) before, unless the user confirmed, declined or countered meanwhile
    reservation.started    a confirmed reservation's interval begins (at its start)
    reservation.ending     it ends in PEX_WEBHOOK_ENDING_LEAD_SECONDS (900: 15 minutes)
    reservation.ended      it ended: at its end, or when it was released early or ended by an administrator
    instance.failed        an instance's VM never ran and its start keeps failing (Instance.Failed)

The timed ones are written to the outbox when the log shows the offer or the confirmation,
due at their time, and are checked once more when due: one that is no longer true (the
reservation was cancelled, released, or its offer taken up) is CANCELLED, not sent.

Delivery is at least once: an attempt is claimed on its row with a lease (so two workers never
send one attempt at once, and one that dies leaves a claim that lapses), POSTed with a timeout
of PEX_WEBHOOK_TIMEOUT_SECONDS in all, and anything but a 2xx is tried again after 5 s, 10 s,
20 s... (at most PEX_WEBHOOK_RETRY_MAX_SECONDS apart) up to PEX_WEBHOOK_ATTEMPTS times, then
FAILED. A receiver gets the same body (and "id") at every attempt. Nothing a command does
waits for any of it: commands write events; this worker reads them later, on its own threads.

Every request is signed: X-PEX-Timestamp is the time of the attempt (seconds since the epoch)
and X-PEX-Signature is `sha256=` and the hex HMAC-SHA256, with the user's secret, of the
timestamp, a '.', and the body's bytes (docs/api.md shows a receiver that checks it). The
receiver's address is checked at every attempt, whatever its name resolves to then: a
loopback, private, link-local or otherwise non-public one is refused unless the operator
allows it (PEX_WEBHOOK_ALLOW_PRIVATE), and the request goes to the very address checked.
Redirects are not followed; at most 1 KiB of an answer is read.

The outbox's position starts at the head of the log when its tables are made (pex init, or
the first start of this PEX on an older store): history is told to nobody. A notification due more than PEX_WEBHOOK_MAX_AGE_SECONDS ago (a worker that was down for long)
is not sent at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import urllib3
from urllib3.exceptions import HTTPError

import pex
from pex.application.errors import NotFound
from pex.domain.instance import Instance
from pex.domain.reservation import Reservation
from pex.domain.user import is_public_address
from pex.domain.values import State
from pex.projections.follower import Recorded, after
from pex.projections.webhooks import CANCELLED, DELIVERED, DROPPED, FAILED, PENDING, Delivery
from pex.settings import WebhookSettings
from pex.workers.ticking import tick_until_stopped

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1024
MAX_REASON = 1000  # characters of an error told: a body stays small
LEASE_MARGIN = timedelta(seconds=30)  # beyond the timeout: an attempt under way is never taken twice
USER_AGENT = f"PEX-webhooks/{pex.__version__}"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-PEX-Signature of `body` sent at `timestamp`."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- sending ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the receiver's status, or why there was none."""

    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Refused(Exception):
    """The receiver's address is one PEX does not send to."""


def checked_address(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host`: its first, after checking every one it resolves to."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise Refused(f"{host} does not resolve: {error}") from None
    addresses = [str(info[4][0]) for info in found]
    if not addresses:
        raise Refused(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            if not is_public_address(ip_address(address.split("%")[0])):
                raise Refused(f"{host} is at {address}, a loopback, private or otherwise non-public address")
    return addresses[0]


def post(url: str, body: bytes, headers: dict[str, str], timeout: float, allow_private: bool) -> Answer:
    """POST `body` to `url` once, to the address checked (checked_address), in at most `timeout`
    seconds in all; no redirect is followed and at most MAX_ANSWER_BYTES of the answer are read."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    try:
        address = checked_address(host, port, allow_private)
    except Refused as refused:
        return Answer(error=str(refused))
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    default_port = port == (443 if https else 80)
    pool_headers = {**headers, "Host": (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")}
    pool: urllib3.HTTPConnectionPool
    options: dict[str, Any] = {"timeout": urllib3.Timeout(total=timeout), "retries": False, "maxsize": 1}
    if https:
        pool = urllib3.HTTPSConnectionPool(address, port, server_hostname=host, assert_hostname=host, **options)
    else:
        pool = urllib3.HTTPConnectionPool(address, port, **options)
    try:
        response = pool.urlopen("POST", target, body=body, headers=pool_headers, redirect=False,
                                preload_content=False, assert_same_host=False)
        try:
            response.read(MAX_ANSWER_BYTES)
        finally:
            response.release_conn()
        return Answer(status=response.status)
    except HTTPError as error:
        return Answer(error=f"{type(error).__name__}: {error}"[:500])
    finally:
        pool.close()


Send = Callable[[str, bytes, dict[str, str], float, bool], Answer]


# --- what is told: the log into the outbox ---------------------------------------------


class Notifications:
    """The follower's read model (pex.projections.follower) that writes the outbox: each event
    a user is to be told of becomes a pending Delivery (the timed ones due at their time)."""

    name = "pex.webhooks"

    def __init__(self, app: Any, settings: WebhookSettings):
        self.app = app
        self.state = app.webhook_state
        self.settings = settings
        self._lock = threading.Lock()

    def position(self) -> int:
        return self.state.position()

    def fold(self, batch: Sequence[Recorded]) -> bool:
        with self._lock:
            position = self.state.position()
            for recorded in after(batch, position):
                try:
                    for delivery in self.notices(recorded.event):
                        self.state.add(delivery)
                except NotFound:
                    continue  # an event of an aggregate that is gone: nobody to tell
            return self.state.move(position, batch[-1].id)

    def notices(self, event: Any) -> list[Delivery]:
        """The deliveries `event` makes, for users with a webhook now."""
        if isinstance(event, (Reservation.Accepted, Reservation.CounterOffered)):
            rid = event.originator_id
            due = max(event.valid_until - self.settings.lapse_lead, event.at)
            return self._for(self.app.owner_of(rid), "offer.lapsing", f"{rid}:{iso(event.valid_until)}", due,
                             reservationId=str(rid), validUntil=iso(event.valid_until))
        # An extension confirmed moves the end: what was due at the old one is no longer true
        # (still_true), and the new end is told as the first was (the start's is the same one).
        if isinstance(event, (Reservation.Confirmed, Reservation.ExtensionConfirmed)):
            if self.app.webhook_of(self.app.owner_of(event.originator_id)) is None:
                return []  # nobody to tell: the reservation need not be loaded
            view = self.app.get_reservation(event.originator_id)
            terms = view.terms
            if terms is None:
                return []
            ending = max(terms.end - self.settings.ending_lead, terms.start)
            common = {"reservationId": str(view.id), "start": iso(terms.start), "end": iso(terms.end)}
            return [
                *self._for(view.user_id, "reservation.started", f"{view.id}:{iso(terms.start)}", terms.start, **common),
                *self._for(view.user_id, "reservation.ending", f"{view.id}:{iso(terms.end)}", ending, **common),
                *self._for(view.user_id, "reservation.ended", f"{view.id}:{iso(terms.end)}", terms.end,
                           **common, reason="end"),
            ]
        if isinstance(event, (Reservation.Released, Reservation.Terminated)):
            view = self.app.get_reservation(event.originator_id)
            if not view.instance_ids:  # never confirmed: it had not begun to be a reservation
                return []
            reason = "released" if isinstance(event, Reservation.Released) else "terminated"
            terms = view.terms
            return self._for(view.user_id, "reservation.ended", f"{view.id}:{reason}", event.at,
                             reservationId=str(view.id), start=iso(terms.start) if terms else None,
                             end=iso(event.at), reason=reason)
        if isinstance(event, Instance.Failed):
            instance = self.app.get_instance(event.originator_id)
            return self._for(instance.user_id, "instance.failed", f"{instance.id}:{event.originator_version}", event.at,
                             instanceId=str(instance.id), reservationId=str(instance.reservation_id),
                             name=instance.name, reason=event.reason[:MAX_REASON])
        return []

    def _for(self, username: str, kind: str, key: str, due: datetime, **fields: Any) -> list[Delivery]:
        now = self.app.clock()
        if due < now - self.settings.max_age or self.app.webhook_of(username) is None:
            return []
        delivery_id = f"{kind}:{key}"
        body = json.dumps({"id": delivery_id, "type": kind, "user": username, "at": iso(due), **fields},
                          separators=(",", ":"))
        return [Delivery(delivery_id, username, kind, body, PENDING, 0, due.timestamp(), due.timestamp(), now.timestamp())]


# --- delivering ------------------------------------------------------------------------


@dataclass
class NotifierReport:
    """What one tick did, by the status each attempt left (for logs and tests)."""

    outcomes: dict[str, str] = field(default_factory=dict)  # delivery id → status after the attempt

    def count(self, status: str) -> int:
        return sum(1 for s in self.outcomes.values() if s == status)


class Notifier:
    """Follows the log into the outbox and delivers what is due, every `settings.interval`
    seconds, `settings.threads` at once; `send` is the HTTP POST (`post`)."""

    def __init__(self, app: Any, settings: WebhookSettings | None = None, send: Send = post):
        self.app = app
        self.settings = settings or app.webhook_settings
        self.state = app.webhook_state
        self.notifications = Notifications(app, self.settings)
        self.send = send
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.settings.threads), thread_name_prefix="pex-webhook")

    def tick(self, now: datetime | None = None) -> NotifierReport:
        """Bring the outbox up to the log, then make one attempt of every delivery due at `now`
        (claimed first), and wait for them: at most the timeout, on this worker's threads.
        The reservations and users the new events name are read as of one moment: the cached
        ones as the log has brought them, without a query each (Core.current_reads)."""
        with self.app.current_reads():
            self.app.follower.follow(self.notifications)
        now = now or self.app.clock()
        at = now.timestamp()
        until = (now + timedelta(seconds=self.settings.timeout) + LEASE_MARGIN).timestamp()
        due = self.state.due(at, limit=8 * max(1, self.settings.threads))
        claimed = [c for d in due if (c := self.state.claim(d, at, until)) is not None]
        report = NotifierReport()
        for delivery, status in zip(claimed, self._pool.map(self._attempt, claimed), strict=True):
            report.outcomes[delivery.id] = status
        if report.outcomes:
            log.info("webhooks: %s", report.outcomes)
        return report

    def _attempt(self, claimed: Delivery) -> str:
        try:
            status, answer = self._deliver(claimed)
        except Exception as error:  # the store or a bug: the claim lapses and it is tried again
            log.exception("could not deliver %s", claimed.id)
            return f"error: {error}"
        now = self.app.clock()
        next_at = None
        if status == PENDING:
            delay = min(self.settings.retry * 2 ** (claimed.attempts - 1), self.settings.retry_max)
            next_at = now.timestamp() + delay
        self.state.finish(claimed, status, now.timestamp(), next_at, answer.status, answer.error)
        if status != PENDING:
            self.state.prune(claimed.username, self.settings.log_size)
        return status

    def _deliver(self, claimed: Delivery) -> tuple[str, Answer]:
        target = self.app.webhook_of(claimed.username)
        if target is None:
            return DROPPED, Answer(error="no webhook when it was due")
        secret = self.app.webhook_secret(target.secret_id)
        if secret is None:
            return DROPPED, Answer(error="the webhook's secret is gone (register the webhook again)")
        if not self.still_true(claimed):
            return CANCELLED, Answer(error="no longer true when it was due")
        timestamp = str(int(self.app.clock().timestamp()))
        body = claimed.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-PEX-Event": claimed.kind,
            "X-PEX-Delivery": claimed.id,
            "X-PEX-Timestamp": timestamp,
            "X-PEX-Signature": signature(secret, timestamp, body),
        }
        answer = self.send(target.url, body, headers, self.settings.timeout, self.settings.allow_private)
        if answer.ok:
            return DELIVERED, answer
        if answer.error is None:
            answer = Answer(answer.status, f"the receiver answered {answer.status}")
        return (FAILED if claimed.attempts >= self.settings.attempts else PENDING), answer

    def still_true(self, delivery: Delivery) -> bool:
        """Whether a timed notification still says what is so when it is due."""
        body = json.loads(delivery.body)
        if delivery.kind not in ("offer.lapsing", "reservation.started", "reservation.ending", "reservation.ended"):
            return True
        if delivery.kind == "reservation.ended" and body.get("reason") != "end":
            return True
        try:
            view = self.app.get_reservation(UUID(body["reservationId"]))
        except NotFound:
            return False
        if delivery.kind == "offer.lapsing":
            return view.state in (State.ACCEPTED, State.COUNTERED) and view.valid_until is not None \
                and iso(view.valid_until) == body["validUntil"]
        terms = view.terms
        if terms is None or iso(terms.start) != body["start"]:
            return False
        if delivery.kind == "reservation.started":  # it began, even if released since
            return view.state in (State.CONFIRMED, State.ACTIVATED, State.EXPIRED) and terms.end > terms.start
        if iso(terms.end) != body["end"]:
            return False  # released early: its end moved (and the release told it ended)
        live = (State.CONFIRMED, State.ACTIVATED) + ((State.EXPIRED,) if delivery.kind == "reservation.ended" else ())
        return view.state in live

    def run(self, stop: threading.Event) -> None:
        """Tick every interval until `stop` is set; a failing tick is logged, the next one tries again."""
        tick_until_stopped(self.tick, stop, self.settings.interval, "webhook")

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
