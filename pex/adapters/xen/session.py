"""Logging in to a XAPI pool: finding the master, and one session per thread.

`XenConnection` knows the pool's URL and credentials and opens logged-in
`XenAPI.Session`s; when it reaches a pool member instead of the master, xapi answers
HOST_IS_SLAVE [master address] and the connection moves to that address (same scheme and
port) for good. `ThreadSessions` hands every thread its own session, because a
`XenAPI.Session` holds one HTTP connection and is not thread-safe; `close` logs them all out.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit, urlunsplit

import XenAPI

from pex.adapters.xen.errors import XenError, translated_errors
from pex.adapters.xen.transport import transport_for

log = logging.getLogger(__name__)

ORIGINATOR = "pex"  # xapi caps sessions per originator; naming ours keeps them apart
MAX_REDIRECTS = 3


class XenConnection:
    def __init__(self, url: str, username: str, password: str, *, timeout: float = 30.0,
                 ignore_ssl: bool = False, originator: str = ORIGINATOR):
        self._url = url
        self._username = username
        self._password = password
        self.timeout = timeout
        self.ignore_ssl = ignore_ssl
        self.originator = originator
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The master's URL as last learned (it changes after a HOST_IS_SLAVE redirect)."""
        with self._lock:
            return self._url

    def open_session(self, timeout: float | None = None) -> XenAPI.Session:
        """A session logged in to the master; `timeout` overrides the socket timeout."""
        with translated_errors():
            for _ in range(MAX_REDIRECTS + 1):
                url = self.url
                transport = transport_for(url, timeout or self.timeout, self.ignore_ssl)
                session = XenAPI.Session(url, transport=transport, ignore_ssl=self.ignore_ssl)
                try:
                    session.xenapi.login_with_password(self._username, self._password, XenAPI.API_VERSION_1_2,
                                                       self.originator)
                    return session
                except XenAPI.Failure as failure:
                    transport.close()
                    if failure.details[:1] != ["HOST_IS_SLAVE"] or len(failure.details) < 2:
                        raise
                    self._follow_master(url, failure.details[1])
                except BaseException:
                    transport.close()
                    raise
        raise XenError(["PEX_TOO_MANY_REDIRECTS", self.url])

    def _follow_master(self, url: str, master_address: str) -> None:
        master = master_url(url, master_address)
        log.info("%s is a pool member; following it to the master at %s", url, master)
        with self._lock:
            self._url = master


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
            with self._lock:
                self._all.append(session)
            self._local.session = session
        return session

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._all = self._all, []
        for session in sessions:
            close_session(session)
        self._local = threading.local()
