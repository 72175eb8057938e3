"""Logging in to a XAPI pool: finding the master, following it, and one session per thread.

`XenConnection` knows the pool's URL, credentials and TLS policy, and opens logged-in
`XenAPI.Session`s on the master. Production pools move their master, and PEX follows:

* a pool member answers every login (and every call) with HOST_IS_SLAVE [master address];
  the connection moves to that address (same scheme and port) and remembers it;
* a master that went away (refused connections, timeouts) is looked for among the pool's
  other members, whose addresses the connection learns at every login: the first member
  that answers either is the new master or names it with HOST_IS_SLAVE;
* an expired session (SESSION_INVALID) is renewed by the `XenAPI` client itself, which logs
  in again with the same credentials and repeats the call (a refused session means the call
  did not run, so repeating it is safe).

`ThreadSessions` hands every thread its own session, because a `XenAPI.Session` holds one
HTTP connection and is not thread-safe; its `api()` is a drop-in for `session.xenapi` that
repeats a call once on the new master when the old one redirected it (HOST_IS_SLAVE) or
refused the connection, both cases where the call cannot have run. `close` logs them all out.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import XenAPI

from pex.adapters.xen.errors import XenError, translated_errors
from pex.adapters.xen.transport import TlsPolicy, transport_for

log = logging.getLogger(__name__)

ORIGINATOR = "pex"  # xapi caps sessions per originator; naming ours keeps them apart
MAX_REDIRECTS = 3


def unreachable(error: BaseException) -> bool:
    """True for a failure to reach a host at all (not a TLS refusal, which must not be routed around)."""
    return isinstance(error, OSError) and not isinstance(error, ssl.SSLError)


def _redirect(failure: XenAPI.Failure) -> str | None:
    details = failure.details
    return str(details[1]) if details[:1] == ["HOST_IS_SLAVE"] and len(details) > 1 else None


class XenConnection:
    def __init__(self, url: str, username: str, password: str, *, timeout: float = 30.0,
                 ignore_ssl: bool = False, tls: TlsPolicy | None = None, originator: str = ORIGINATOR,
                 members: Sequence[str] = ()):
        """`tls` checks an https pool's certificates (default: the system's CAs, or none at
        all with `ignore_ssl`, which is logged as the risk it is). `members` are addresses of
        the pool's hosts to look for the master at if `url` cannot be reached before any
        login taught the connection the real list (a process starting while the master is down)."""
        self._url = url
        self._username = username
        self._password = password
        self.timeout = timeout
        self.tls = tls or TlsPolicy(ignore=ignore_ssl)
        self.ignore_ssl = self.tls.ignore
        self.originator = originator
        self._lock = threading.Lock()
        self._members = tuple(members)  # the pool's host addresses, as of the last login
        if self.tls.ignore and urlsplit(url).scheme == "https":
            log.warning("the certificates of the Xen pool at %s are NOT verified (PEX_XEN_IGNORE_SSL): anyone on "
                        "the path can impersonate it; set PEX_XEN_CA_FILE or PEX_XEN_CERT_SHA256 instead", url)

    @property
    def url(self) -> str:
        """The master's URL as last learned (it changes when the master does)."""
        with self._lock:
            return self._url

    @property
    def members(self) -> tuple[str, ...]:
        """The addresses of the pool's hosts, learned at the last login (empty before it)."""
        with self._lock:
            return self._members

    def open_session(self, timeout: float | None = None) -> XenAPI.Session:
        """A session logged in to the master; `timeout` overrides the socket timeout.

        Tries the last known master first; a member's HOST_IS_SLAVE is followed, and an
        unreachable master makes it try the pool's other members in turn.
        """
        with translated_errors():
            start = self.url
            candidates = deque([start])
            tried: set[str] = set()
            redirects = 0
            unreachable_error: BaseException | None = None
            while candidates:
                url = candidates.popleft()
                try:
                    session = self._login(url, timeout)
                except XenAPI.Failure as failure:
                    master_address = _redirect(failure)
                    if master_address is None:
                        raise
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise XenError(["PEX_TOO_MANY_REDIRECTS", url]) from None
                    master = master_url(url, master_address)
                    log.info("%s is a pool member; the master is at %s", url, master)
                    candidates.appendleft(master)
                    continue
                except Exception as error:
                    if not unreachable(error):
                        raise
                    tried.add(url)
                    unreachable_error = unreachable_error or error
                    if not candidates:  # the master is gone: ask the members who took over
                        candidates.extend(u for u in self._member_urls(start) if u not in tried)
                    log.warning("cannot reach the pool at %s: %s", url, error)
                    continue
                self._settle_on(url, session)
                return session
            assert unreachable_error is not None  # the loop only runs dry after a failure
            raise unreachable_error

    def follow(self, url: str, master_address: str) -> None:
        """A call to `url` was answered HOST_IS_SLAVE [master_address]: the master is there now."""
        with self._lock:
            master = master_url(url, master_address)
            if master != self._url:
                log.info("%s is a pool member now; following the master to %s", url, master)
                self._url = master

    def _login(self, url: str, timeout: float | None) -> XenAPI.Session:
        transport = transport_for(url, timeout or self.timeout, tls=self.tls)
        session = XenAPI.Session(url, transport=transport, ignore_ssl=self.ignore_ssl)
        try:
            session.xenapi.login_with_password(self._username, self._password, XenAPI.API_VERSION_1_2,
                                               self.originator)
        except BaseException:
            transport.close()
            raise
        return session

    def _settle_on(self, url: str, session: XenAPI.Session) -> None:
        try:
            api = session.xenapi
            members = tuple(sorted(str(api.host.get_address(host)) for host in api.host.get_all()))
        except Exception as error:  # the session works; failover will know fewer members
            log.warning("could not list the pool's hosts at %s: %s", url, error)
            members = self.members
        with self._lock:
            if url != self._url:
                log.info("the pool master is now at %s (was %s)", url, self._url)
                self._url = url
            self._members = members

    def _member_urls(self, url: str) -> list[str]:
        return [master_url(url, address) for address in self.members]


def master_url(url: str, master_address: str) -> str:
    """`url` pointed at `master_address` (an IP or host name, as HOST_IS_SLAVE gives it)."""
    parts = urlsplit(url)
    host = f"[{master_address}]" if ":" in master_address else master_address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def close_session(session: XenAPI.Session) -> None:
    """Log out and close the connection; a session that cannot be logged out is just dropped."""
    try:
        session.xenapi.session.logout()
    except Exception as error:  # best effort: xapi expires idle sessions anyway
        log.debug("logout failed: %s", error)
    finally:
        drop_session(session)


def drop_session(session: XenAPI.Session) -> None:
    """Close the connection without logging out (the master may be gone; xapi expires it)."""
    transport = getattr(session, "transport", None)
    if transport is not None:
        transport.close()


class ThreadSessions:
    """One lazily opened session per thread, all logged out by `close`."""

    def __init__(self, connection: XenConnection):
        self.connection = connection
        self._local = threading.local()
        self._all: list[XenAPI.Session] = []
        self._lock = threading.Lock()
        self._closed = False

    def session(self) -> XenAPI.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            with self._lock:
                if self._closed:
                    raise XenError(["PEX_DISPATCHER_CLOSED"])
            session = self.connection.open_session()
            self._local.url = self.connection.url
            with self._lock:
                self._all.append(session)
            self._local.session = session
        return session

    def api(self) -> Any:
        """Like `session().xenapi`, but every call follows the pool master (see the module docstring)."""
        return _MasterFollowingApi(self, "")

    def call(self, name: str, args: tuple) -> Any:
        """Call `name` ("VM.get_record", "Async.VM.start_on") on this thread's session."""
        for attempt in (1, 2):
            session = self.session()
            url = self._local.url
            method: Any = session.xenapi
            for part in name.split("."):
                method = getattr(method, part)
            try:
                return method(*args)
            except XenAPI.Failure as failure:
                master_address = _redirect(failure)
                if master_address is None or attempt == 2:
                    raise
                # Also when the client's own re-login after SESSION_INVALID met a member.
                self.connection.follow(url, master_address)
                self.renew()
            except Exception as error:
                self.renew()  # the next call logs in afresh, looking for the master if it is gone
                if attempt == 2 or not isinstance(error, ConnectionRefusedError):
                    raise  # other transport failures may have happened after the call ran
        raise AssertionError("unreachable")

    def renew(self) -> None:
        """Drop this thread's session (without a logout, its master may be gone)."""
        session = getattr(self._local, "session", None)
        self._local.session = None
        if session is not None:
            with self._lock:
                self._all = [s for s in self._all if s is not session]
            drop_session(session)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._all = self._all, []
        for session in sessions:
            close_session(session)
        self._local = threading.local()


class _MasterFollowingApi:
    """`session.xenapi`'s attribute path (`api.VM.get_record`, `api.Async.VM.start_on`)."""

    def __init__(self, sessions: ThreadSessions, name: str):
        self._sessions = sessions
        self._name = name

    def __getattr__(self, part: str) -> _MasterFollowingApi:
        if part.startswith("__"):
            raise AttributeError(part)
        return _MasterFollowingApi(self._sessions, f"{self._name}.{part}" if self._name else part)

    def __call__(self, *args: object) -> Any:
        return self._sessions.call(self._name, args)
