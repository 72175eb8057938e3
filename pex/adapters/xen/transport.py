"""xmlrpc transports with a socket timeout: the stdlib ones wait forever for a dead xapi."""

from __future__ import annotations

import ssl
import xmlrpc.client
from urllib.parse import urlsplit


class TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


class TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float, context: ssl.SSLContext | None = None):
        super().__init__(context=context)
        self.timeout = timeout

    def make_connection(self, host):
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection


def transport_for(url: str, timeout: float, ignore_ssl: bool = False) -> xmlrpc.client.Transport:
    if urlsplit(url).scheme == "https":
        # XCP-ng ships self-signed certificates; ignore_ssl is how operators accept that.
        context = ssl._create_unverified_context() if ignore_ssl else None  # noqa: S323
        return TimeoutSafeTransport(timeout, context)
    return TimeoutTransport(timeout)
