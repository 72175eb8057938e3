"""xmlrpc transports with a socket timeout and the pool's certificate checked.

The stdlib transports wait forever for a dead xapi, and the `XenAPI` client offers only two
TLS choices: the system's CAs (which never signed an XCP-ng host's self-signed certificate)
or no verification at all. `TlsPolicy` adds the two an operator of a production pool needs:
a CA bundle (the pool's own CA, or the hosts' certificates themselves), and pinning, where
the server's certificate must hash (SHA-256 of its DER form, what `openssl x509 -fingerprint
-sha256` prints) to one of the given fingerprints. Pinning takes several fingerprints because
every host of a pool has its own certificate and any member may become the master.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import ssl
import xmlrpc.client
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


class CertificatePinMismatch(ssl.SSLCertVerificationError):
    """The server's certificate is none of the pinned ones."""


def normalized_fingerprint(text: str) -> str:
    """"AB:CD:..." or "abcd..." as 64 lowercase hex digits; ValueError for anything else."""
    digits = text.strip().replace(":", "").lower()
    if not _FINGERPRINT.fullmatch(digits):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons optional)")
    return digits


def certificate_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class TlsPolicy:
    """How an https pool URL's certificate is checked.

    `ca_file`: verify the chain and the host name against this PEM bundle instead of the
    system's CAs. `fingerprints`: accept exactly the certificates with these SHA-256
    fingerprints (host names are then not checked: the pin is stronger). Both may be given;
    then both must hold. `ignore`: check nothing (an explicit, logged opt-out); it cannot be
    combined with the others.
    """

    ca_file: str | None = None
    fingerprints: tuple[str, ...] = ()
    ignore: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprints", tuple(normalized_fingerprint(f) for f in self.fingerprints))
        if self.ignore and (self.ca_file or self.fingerprints):
            raise ValueError("ignoring TLS certificates contradicts a CA file or pinned fingerprints")

    @classmethod
    def of(cls, *, ca_file: str | None = None, fingerprints: Iterable[str] = (), ignore: bool = False) -> TlsPolicy:
        return cls(ca_file or None, tuple(fingerprints), ignore)

    def context(self) -> ssl.SSLContext:
        if self.ignore:
            return ssl._create_unverified_context()  # noqa: S323 - the operator's explicit choice
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.fingerprints and not self.ca_file:
            # The pin replaces the chain: a self-signed host certificate is what it pins.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def describe(self) -> str:
        if self.ignore:
            return "certificates NOT verified"
        parts = [f"CA file {self.ca_file}" if self.ca_file else "system CAs" if not self.fingerprints else ""]
        if self.fingerprints:
            parts.append(f"{len(self.fingerprints)} pinned certificate(s)")
        return ", ".join(p for p in parts if p)


class TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, fingerprints: tuple[str, ...], **options):
        super().__init__(host, **options)
        self.fingerprints = fingerprints

    def connect(self) -> None:
        super().connect()
        if not self.fingerprints:
            return
        der = self.sock.getpeercert(binary_form=True)
        actual = certificate_fingerprint(der or b"")
        if actual not in self.fingerprints:
            self.sock.close()
            self.sock = None
            raise CertificatePinMismatch(f"the certificate of {self.host} has SHA-256 fingerprint {actual}, "
                                         f"which is not pinned")


class TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float, context: ssl.SSLContext | None = None, fingerprints: tuple[str, ...] = ()):
        super().__init__(context=context)
        self.ssl_context = context
        self.timeout = timeout
        self.fingerprints = fingerprints

    def make_connection(self, host):
        # SafeTransport's own, with the timeout and the pin check; one kept-alive connection.
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, x509 = self.get_host_info(host)
        connection = _CheckedHTTPSConnection(chost, fingerprints=self.fingerprints, timeout=self.timeout,
                                             context=self.ssl_context, **(x509 or {}))
        self._connection = host, connection
        return connection


def transport_for(url: str, timeout: float, ignore_ssl: bool = False,
                  tls: TlsPolicy | None = None) -> xmlrpc.client.Transport:
    """The transport for `url`: plain HTTP, or HTTPS checked by `tls` (default: the system's
    CAs; `ignore_ssl` is the older spelling of `TlsPolicy(ignore=True)`)."""
    if urlsplit(url).scheme == "https":
        policy = tls or TlsPolicy(ignore=ignore_ssl)
        return TimeoutSafeTransport(timeout, policy.context(), policy.fingerprints)
    return TimeoutTransport(timeout)
