"""The single error mapper: xapi failure codes and transport exceptions to adapter exceptions."""

from __future__ import annotations

import http.client
import xmlrpc.client

import pytest
import XenAPI

from pex.adapters.xen.errors import (
    XenAdapterError,
    XenAuthError,
    XenCapacityError,
    XenError,
    XenHostDownError,
    XenNotFoundError,
    XenPowerStateError,
    XenTransportError,
    translate,
    translated_errors,
)

pytestmark = pytest.mark.xen


@pytest.mark.parametrize(("code", "expected"), [
    ("HOST_NOT_ENOUGH_FREE_MEMORY", XenCapacityError),
    ("HOST_NOT_ENOUGH_PCPUS", XenCapacityError),
    ("NO_HOSTS_AVAILABLE", XenCapacityError),
    ("VM_BAD_POWER_STATE", XenPowerStateError),
    ("OTHER_OPERATION_IN_PROGRESS", XenPowerStateError),
    ("HOST_OFFLINE", XenHostDownError),
    ("HOST_NOT_LIVE", XenHostDownError),
    ("CANNOT_CONTACT_HOST", XenHostDownError),
    ("HANDLE_INVALID", XenNotFoundError),
    ("UUID_INVALID", XenNotFoundError),
    ("SESSION_AUTHENTICATION_FAILED", XenAuthError),
    ("VDI_IN_USE", XenError),
])
def test_failures_map_by_code_and_keep_their_params(code, expected):
    error = translate(XenAPI.Failure([code, "a", "b"]))
    assert type(error) is expected
    assert (error.code, error.params, error.details) == (code, ["a", "b"], [code, "a", "b"])


@pytest.mark.parametrize("exception", [
    ConnectionRefusedError(111, "refused"),
    TimeoutError("timed out"),
    http.client.RemoteDisconnected("closed"),
    http.client.BadStatusLine("junk"),
    xmlrpc.client.ProtocolError("http://x/", 500, "Internal Server Error", {}),
    xmlrpc.client.Fault(500, "Tried 3 times to get a valid session, but failed"),
])
def test_transport_problems_are_transport_errors(exception):
    error = translate(exception)
    assert isinstance(error, XenTransportError) and not isinstance(error, XenError)


def test_the_context_manager_chains_the_original_and_leaves_other_bugs_alone():
    with pytest.raises(XenCapacityError) as raised:
        with translated_errors():
            raise XenAPI.Failure(["NO_HOSTS_AVAILABLE"])
    assert isinstance(raised.value.__cause__, XenAPI.Failure)
    with pytest.raises(KeyError):
        with translated_errors():
            raise KeyError("a bug, not a Xen problem")
    assert issubclass(XenTransportError, XenAdapterError) and issubclass(XenError, XenAdapterError)
