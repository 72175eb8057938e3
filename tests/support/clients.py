"""Clients for the reliability tests: they negotiate over HTTP as the reference client does,
retry what a client may retry, and write down every answer they got (`Tally`), so that a test
can check afterwards that every acknowledgement is in the store.

What a client retries: a request that got no HTTP answer at all (connection reset by a killed
worker, refused while gunicorn replaces one) and a 503, after a short pause, a bounded number
of times. A POST carries an Idempotency-Key, so retrying it never makes a second reservation.
A PUT that may have been applied before its answer was lost is settled by reading the
reservation: a 409 after such a retry is the step already done, not a failure.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID, uuid4

import requests

from pex.wire import PEX_JSON, rfc1123

ETCH = "PEX Debian Etch 4.0 Template"
RETRYABLE = (requests.ConnectionError, requests.Timeout)


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange as a client saw it."""

    client: str
    what: str  # "POST", "PUT CONFIRM", "GET reservation", ...
    started: float  # time.monotonic()
    seconds: float
    status: int | None  # None: no HTTP answer (connection error or client timeout)
    error: str = ""  # the exception, when there was no answer
    problem: str = ""  # the problem type of a 4xx/5xx
    content_type: str = ""
    retry_after: str | None = None
    reservation: str | None = None
    version: int | None = None  # the ETag: the reservation's version after the request
    state: str | None = None
    reply: str | None = None
    placement: tuple[tuple[str, int], ...] = ()

    @property
    def acknowledged(self) -> bool:
        """A 2xx that names a reservation, its version and its state: a promise to check."""
        return self.status is not None and 200 <= self.status < 300 and None not in (
            self.reservation, self.version, self.state)


@dataclass
class Tally:
    """Every answer every client got, in one thread-safe list."""

    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def snapshot(self) -> list[Answer]:
        with self.lock:
            return list(self.answers)

    def statuses(self) -> Counter:
        return Counter(a.status if a.status is not None else a.error for a in self.snapshot())

    def problems(self) -> Counter:
        """The problem types of every 4xx and 5xx, by status: {"503 contention": 1, ...}."""
        return Counter(f"{a.status} {a.problem.rpartition('/')[2]}" for a in self.snapshot()
                       if a.status is not None and a.status >= 400)

    def server_errors(self, allowed: tuple[int, ...] = ()) -> list[Answer]:
        return [a for a in self.snapshot() if a.status is not None and a.status >= 500 and a.status not in allowed]

    def confirmed(self) -> dict[str, Answer]:
        """The reservations some client saw REQUEST_SUCCESS for, with that answer."""
        return {a.reservation: a for a in self.snapshot() if a.reply == "REQUEST_SUCCESS" and a.status == 200}


def answer_of(client: str, what: str, started: float, response: requests.Response) -> Answer:
    seconds = time.monotonic() - started
    content_type = response.headers.get("Content-Type", "")
    body: Any = None
    if "json" in content_type:
        try:
            body = response.json()
        except ValueError:
            body = None
    problem = body.get("type", "") if isinstance(body, dict) and response.status_code >= 400 else ""
    reservation = state = reply = None
    placement: tuple = ()
    if isinstance(body, dict) and response.status_code < 300:
        proposal = body.get("proposal") if isinstance(body.get("proposal"), dict) else {}
        reservation = body.get("id") or proposal.get("id")
        state, reply = body.get("state"), body.get("reply")
        placement = tuple((p["node"], p["instances"]) for p in proposal.get("placement", []))
    etag = response.headers.get("ETag", "").strip('"')
    return Answer(
        client, what, started, seconds, response.status_code, problem=problem, content_type=content_type,
        retry_after=response.headers.get("Retry-After"), reservation=reservation,
        version=int(etag) if etag.isdigit() else None, state=state, reply=reply, placement=placement,
    )


def proposal(size: str, instances: int, start: datetime, seconds: float, auto_start: bool = False) -> dict:
    """Figure 7 (with PEX's autoStart, said either way: the server's default is true)."""
    body = {
        "duration": int(seconds * 1000),
        "numInstancesFixed": instances,
        "numInstancesOption": 0,
        "startTime": rfc1123(start),
        "template": ETCH,
        "type": size,
        "autoStart": auto_start,
    }
    return body


def whole_seconds_from_now(seconds: float) -> datetime:
    """A start time on the wire's one-second grid, at least `seconds` ahead."""
    now = datetime.now(UTC)
    return (now + timedelta(seconds=seconds + 1)).replace(microsecond=0)


def starts_soon(offer: dict, within: float = 10.0) -> bool:
    """Take a COUNTER only if it starts within `within` seconds: the test must end."""
    return parsedate_to_datetime(offer["startTime"]) <= datetime.now(UTC) + timedelta(seconds=within)


def vms_starting_soon(shortest: int, longest: int) -> Callable[[Negotiator, random.Random], None]:
    """One client's round of a load whose VMs run (tests.support.reliability.Load): 1 or 2
    auto-started VMs starting 2 to 5 s from now for `shortest` to `longest` seconds (a COUNTER
    taken only if it starts soon too), then a look at the instances."""

    def step(client: Negotiator, rng: random.Random) -> None:
        start = whole_seconds_from_now(rng.uniform(2, 5))
        body = proposal(rng.choice(("SMALL", "SMALL", "MEDIUM")), rng.randint(1, 2), start,
                        rng.randint(shortest, longest), auto_start=True)
        client.negotiate(body, take_counter=starts_soon)
        client.send("GET", "/OpenPEX/instances", "GET instances")
        time.sleep(0.1)

    return step


class Negotiator:
    """One user negotiating over HTTP: POST, then CONFIRM, or ACCEPT and CONFIRM after a COUNTER."""

    def __init__(self, base_url: str, auth: tuple[str, str], tally: Tally, *, timeout: float = 30.0,
                 attempts: int = 8, pause: float = 0.25, give_up: threading.Event | None = None):
        self.base_url = base_url
        self.name = auth[0]
        self.session = requests.Session()
        self.session.auth = auth
        self.session.headers["Accept"] = PEX_JSON  # PEX's form of a reply: it reads `state`, `placement`
        self.tally = tally
        self.timeout = timeout
        self.attempts = attempts  # per request, counting the first
        self.pause = pause  # before a retry
        self.give_up = give_up  # once set, nothing is retried
        self.outcomes: Counter = Counter()

    def close(self) -> None:
        self.session.close()

    # --- one request, retried as a client may --------------------------------------------

    def send(self, method: str, path: str, what: str, **kw) -> tuple[requests.Response | None, bool]:
        """The answer (None if there never was one) and whether an earlier try may have been
        applied (it got no answer, or a 503 that may hide a commit)."""
        maybe_applied = False
        for attempt in range(self.attempts):
            started = time.monotonic()
            try:
                response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kw)
            except RETRYABLE as error:
                self.tally.add(Answer(self.name, what, started, time.monotonic() - started, None, error=type(error).__name__))
                maybe_applied = True
            else:
                self.tally.add(answer_of(self.name, what, started, response))
                if response.status_code != 503:
                    return response, maybe_applied
                maybe_applied = True
                if attempt == self.attempts - 1:
                    return response, maybe_applied
            if self.give_up is not None and self.give_up.is_set():
                break
            time.sleep(self.pause)
        return None, maybe_applied

    def get_reservation(self, rid: str) -> dict | None:
        response, _ = self.send("GET", f"/OpenPEX/reservations/{rid}", "GET reservation")
        return response.json() if response is not None and response.status_code == 200 else None

    def step(self, rid: str, reply: str, reached: str) -> bool:
        """PUT one reply; True once the reservation is in state `reached`."""
        response, maybe_applied = self.send("PUT", f"/OpenPEX/reservations/{rid}", f"PUT {reply}", json={"reply": reply})
        if response is not None and response.status_code == 200:
            return response.json()["state"] == reached
        if maybe_applied and (response is None or response.status_code in (409, 503)):
            current = self.get_reservation(rid)  # was it applied before the answer was lost?
            if current is not None and current["state"] == reached:
                self.outcomes["settled by reading"] += 1
                return True
        return False

    # --- a whole negotiation ----------------------------------------------------------------

    def negotiate(self, body: dict, take_counter: Callable[[dict], bool] = lambda offer: True) -> str:
        """POST the proposal and see it to its end; the outcome (also counted in `outcomes`)."""
        outcome = self._negotiate(body, take_counter)
        self.outcomes[outcome] += 1
        return outcome

    def _negotiate(self, body: dict, take_counter: Callable[[dict], bool]) -> str:
        response, _ = self.send("POST", "/OpenPEX/reservations", "POST", json=body,
                                headers={"Idempotency-Key": str(uuid4())})
        if response is None or response.status_code != 201:
            return f"POST {response.status_code if response is not None else 'unanswered'}"
        answer = response.json()
        rid, reply = answer["proposal"]["id"], answer["reply"]
        if reply == "REJECT":
            return "rejected"
        if reply == "COUNTER":
            if not take_counter(answer["proposal"]):
                return "declined" if self.step(rid, "REJECT", "REJECTED") else "decline failed"
            if not self.step(rid, "ACCEPT", "ACCEPTED"):
                return "accept failed"
        return "confirmed" if self.step(rid, "CONFIRM", "CONFIRMED") else "confirm failed"


def check_acknowledged(app, answers: list[Answer]) -> tuple[int, list[Answer]]:
    """Is every acknowledged answer in the store? The reservation's stream, read up to the
    version the answer carried, must be in the state the answer said. Returns how many
    answers were checked, and those the store does not bear out."""
    checked, missing = 0, []
    for answer in answers:
        if not answer.acknowledged:
            continue
        checked += 1
        try:
            reservation = app.repository.get(UUID(answer.reservation), version=answer.version)
        except Exception:  # the stream is not there, or is shorter than that version
            missing.append(answer)
            continue
        if reservation.version != answer.version or reservation.state.value != answer.state:
            missing.append(answer)
    return checked, missing


def seeded(name: str, seed: int) -> random.Random:
    return random.Random(f"{seed}:{name}")
