"""What the Xen adapter raises, and the one place that turns XAPI failures into it.

Every failure xapi reports (`XenAPI.Failure`, ErrorDescription `[code, *params]`) becomes a
`XenError` subclass chosen by its code, keeping code and params. Failing to talk to xapi
at all (refused or dropped connections, socket timeouts, HTTP errors, malformed answers)
becomes `XenTransportError`: the call may or may not have happened, so callers retry only
idempotent steps. Callers outside the adapter never see XenAPI or xmlrpc exceptions.
"""

from __future__ import annotations

import contextlib
import http.client
import ssl
import xmlrpc.client
from collections.abc import Iterator, Sequence
from xml.parsers.expat import ExpatError

import XenAPI

from pex.application.ports import EnactmentError


class XenAdapterError(EnactmentError):
    """Anything that went wrong in the Xen adapter."""


class XenError(XenAdapterError):
    """xapi refused or failed a call; `code` and `params` are its ErrorDescription."""

    def __init__(self, details: Sequence[object]):
        words = [str(d) for d in details] or ["UNKNOWN_ERROR"]
        self.code = words[0]
        self.params = words[1:]
        super().__init__(" ".join(words))

    @property
    def details(self) -> list[str]:
        return [self.code, *self.params]


class XenCapacityError(XenError):
    """The host (or pool, or storage) has no room for the VM."""


class XenPowerStateError(XenError):
    """The VM is not in a state that allows the operation, or is busy with another one."""

    @property
    def retryable(self) -> bool:
        # Another operation holds the VM: the same call will likely succeed a bit later.
        return self.code == "OTHER_OPERATION_IN_PROGRESS"


class XenHostDownError(XenError):
    """The host is dead, unreachable or not accepting VMs."""


class XenNotFoundError(XenError):
    """The object (or, for codes starting with PEX_, the PEX instance, host or template) does not exist."""


class XenAuthError(XenError):
    """xapi rejected the credentials."""


class XenTransportError(XenAdapterError):
    """xapi could not be reached, or its answer was lost or unreadable."""


class XenTlsError(XenTransportError):
    """The pool's TLS certificate failed the check PEX was configured with (CA file, pinned
    fingerprints, or the system's CAs): PEX refuses to talk to it rather than trust it."""


class XenMigrationError(XenError):
    """A live migration was refused or failed; the VM still runs where it ran."""


class XenTaskTimeout(XenAdapterError):
    """An asynchronous xapi task did not finish in time; it may still complete later."""


FAILURE_CLASSES: dict[str, type[XenError]] = {
    "HOST_NOT_ENOUGH_FREE_MEMORY": XenCapacityError,
    "HOST_NOT_ENOUGH_PCPUS": XenCapacityError,
    "NO_HOSTS_AVAILABLE": XenCapacityError,
    "SR_FULL": XenCapacityError,
    "VM_BAD_POWER_STATE": XenPowerStateError,
    "OTHER_OPERATION_IN_PROGRESS": XenPowerStateError,
    "VM_IS_TEMPLATE": XenPowerStateError,
    "HOST_OFFLINE": XenHostDownError,
    "HOST_NOT_LIVE": XenHostDownError,
    "CANNOT_CONTACT_HOST": XenHostDownError,
    # A disabled host (maintenance mode) refuses VMs just like a dead one, for PEX's purposes.
    "HOST_DISABLED": XenHostDownError,
    "HANDLE_INVALID": XenNotFoundError,
    "UUID_INVALID": XenNotFoundError,
    "SESSION_AUTHENTICATION_FAILED": XenAuthError,
    "VM_MIGRATE_FAILED": XenMigrationError,
    "VM_REQUIRES_SR": XenMigrationError,
    "VM_REQUIRES_NETWORK": XenMigrationError,
    "HOST_CANNOT_ATTACH_NETWORK": XenMigrationError,
}

TLS_HINT = ("set PEX_XEN_CA_FILE to the pool's CA bundle or PEX_XEN_CERT_SHA256 to its hosts' certificate "
            "fingerprints")

TRANSPORT_EXCEPTIONS = (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError, xmlrpc.client.Fault,
                        ExpatError)


def error_from_details(details: Sequence[object]) -> XenError:
    code = str(details[0]) if details else "UNKNOWN_ERROR"
    return FAILURE_CLASSES.get(code, XenError)(details)


def translate(error: BaseException) -> XenAdapterError | None:
    """The adapter exception for a XenAPI/transport exception, or None if it is neither."""
    if isinstance(error, XenAdapterError):
        return error
    if isinstance(error, XenAPI.Failure):
        return error_from_details(error.details)
    if isinstance(error, ssl.SSLCertVerificationError):
        return XenTlsError(f"{type(error).__name__}: {error} ({TLS_HINT})")
    if isinstance(error, TRANSPORT_EXCEPTIONS):
        return XenTransportError(f"{type(error).__name__}: {error}")
    return None


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Run a block of XenAPI calls, re-raising what they raise as adapter exceptions."""
    try:
        yield
    except XenAdapterError:
        raise
    except Exception as error:
        translated = translate(error)
        if translated is None:
            raise
        raise translated from error
