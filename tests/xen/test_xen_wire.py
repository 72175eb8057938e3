"""The simulator speaks xapi's XML-RPC: what the bytes look like, and how the unmodified
XenAPI client and the stdlib xmlrpc client see them."""

from __future__ import annotations

import http.client
import json
import re
import xmlrpc.client
from urllib.parse import urlsplit

import pytest
import XenAPI

pytestmark = pytest.mark.xen


def raw_call(simulator, method: str, *params, path: str = "/") -> tuple[int, str]:
    host, port = simulator.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("POST", path, xmlrpc.client.dumps(params, method, allow_none=True),
                           {"Content-Type": "text/xml"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def login(simulator) -> str:
    _, body = raw_call(simulator, "session.login_with_password", "root", "xenroot", "1.2", "pex-tests")
    return re.search(r"<name>Value</name><value>(OpaqueRef:[^<]+)</value>", body)[1]


def test_results_come_in_xapis_envelope_with_untyped_strings_and_ints_as_strings(simulator):
    session = login(simulator)
    _, body = raw_call(simulator, "host.get_all", session)
    host = re.findall(r"<value>(OpaqueRef:[0-9a-f-]{36})</value>", body)[0]

    status, body = raw_call(simulator, "host.compute_free_memory", session, host)

    assert status == 200
    assert body.startswith('<?xml version="1.0"?><methodResponse><params><param><value><struct>')
    assert "<member><name>Status</name><value>Success</value></member>" in body
    assert "<member><name>Value</name><value>4294967296</value></member>" in body
    assert "<int>" not in body and "<i8>" not in body and "<string>" not in body
    assert "<fault>" not in body


def test_ints_arrive_as_decimal_strings_through_the_client(xenapi):
    host = xenapi.host.get_all()[0]
    record = xenapi.host_metrics.get_record(xenapi.host.get_metrics(host))
    assert isinstance(record["memory_total"], str) and int(record["memory_total"]) > 4 * 1024**3
    assert record["live"] is True
    assert isinstance(xenapi.host.get_cpu_info(host)["cpu_count"], str)
    assert isinstance(record["last_updated"], xmlrpc.client.DateTime)


def test_refs_are_opaque_refs_and_the_null_ref_is_spelled_out(xenapi):
    refs = xenapi.VM.get_all()
    assert refs and all(re.fullmatch(r"OpaqueRef:[0-9a-f-]{36}", ref) for ref in refs)
    template = xenapi.VM.get_by_name_label("PEX Debian Etch 4.0 Template")[0]
    assert xenapi.VM.get_resident_on(template) == "OpaqueRef:NULL"
    assert xenapi.VM.get_guest_metrics(template) == "OpaqueRef:NULL"


def test_failures_carry_code_and_params_in_error_description(simulator):
    session = login(simulator)
    _, body = raw_call(simulator, "VM.get_record", session, "OpaqueRef:nope")
    assert "<member><name>Status</name><value>Failure</value></member>" in body
    assert "<value>HANDLE_INVALID</value><value>VM</value><value>OpaqueRef:nope</value>" in body


def test_both_rpc_paths_are_served(simulator):
    root = XenAPI.Session(simulator.url)  # trailing slash: POST /
    rpc2 = XenAPI.Session(simulator.url.rstrip("/"))  # no path: POST /RPC2
    for session in (root, rpc2):
        session.xenapi.login_with_password("root", "xenroot", "1.2", "pex-tests")
        assert session.xenapi.pool.get_all()
        session.xenapi.session.logout()


def test_alternative_wire_names_are_accepted(xenapi):
    assert xenapi.event_from(["host"], "", 0.1)["events"]
    vm = xenapi.VM.get_all()[0]
    assert xenapi.VM_get_power_state(vm) == xenapi.VM.get_power_state(vm)


def test_bad_credentials_fail_authentication(simulator):
    session = XenAPI.Session(simulator.url)
    with pytest.raises(XenAPI.Failure) as failure:
        session.xenapi.login_with_password("root", "wrong", "1.2", "pex-tests")
    assert failure.value.details == ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]


def test_a_logged_out_session_is_invalid(simulator):
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password("root", "xenroot", "1.2", "pex-tests")
    ref = session.handle
    session.xenapi.session.logout()

    # Through the plain xmlrpc client: XenAPI.Session would silently log in again.
    proxy = xmlrpc.client.ServerProxy(simulator.url)
    answer = getattr(proxy, "VM.get_all")(ref)
    assert answer == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}
    assert getattr(proxy, "VM.get_all")("OpaqueRef:made-up")["ErrorDescription"][0] == "SESSION_INVALID"


def test_the_client_logs_in_again_by_itself_after_session_invalid(simulator):
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password("root", "xenroot", "1.2", "pex-tests")
    first = session.handle
    simulator.control.expire_sessions()
    assert session.xenapi.pool.get_all()
    assert session.handle != first


def test_unknown_methods_and_wrong_arity_are_refused(xenapi):
    with pytest.raises(XenAPI.Failure) as unknown:
        xenapi.VM.teleport("OpaqueRef:NULL")
    assert unknown.value.details == ["MESSAGE_METHOD_UNKNOWN", "VM.teleport"]
    with pytest.raises(XenAPI.Failure) as arity:
        xenapi.VM.get_record()
    assert arity.value.details == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_record", "2", "1"]


def test_getters_and_setters_have_no_async_variant(xenapi):
    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.Async.VM.get_all()
    assert failure.value.details[0] == "MESSAGE_METHOD_UNKNOWN"


def test_the_control_api_is_not_reachable_through_xapi_method_names(xenapi, simulator):
    for attempt in (lambda: xenapi.fail_host("node1"), lambda: xenapi.sim.fail_host("node1"),
                    lambda: xenapi.control.fail_host("node1")):
        with pytest.raises(XenAPI.Failure) as failure:
            attempt()
        assert failure.value.details[0] == "MESSAGE_METHOD_UNKNOWN"
    assert all(host["live"] for host in simulator.control.state()["hosts"])


def test_malformed_xml_gets_an_http_500_page(simulator):
    host, port = simulator.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.request("POST", "/", b"<methodCall><oops", {"Content-Type": "text/xml"})
    response = connection.getresponse()
    assert response.status == 500 and response.getheader("Content-Type") == "text/html"
    connection.close()


def test_bad_power_state_names_the_vm_the_allowed_and_the_actual_state(xenapi):
    template = xenapi.VM.get_by_name_label("PEX Debian Etch 4.0 Template")[0]
    vm = xenapi.VM.clone(template, "wire-vm")
    xenapi.VM.provision(vm)
    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.VM.clean_shutdown(vm)
    assert failure.value.details == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    with pytest.raises(XenAPI.Failure) as hard:
        xenapi.VM.hard_shutdown(vm)
    assert hard.value.details == ["VM_BAD_POWER_STATE", vm, "paused, suspended, running", "halted"]


def test_async_calls_answer_a_task_whose_result_is_xml(xenapi, eventually):
    template = xenapi.VM.get_by_name_label("PEX Debian Etch 4.0 Template")[0]
    task = xenapi.Async.VM.clone(template, "async-clone")
    assert task.startswith("OpaqueRef:")
    eventually(lambda: xenapi.task.get_status(task) != "pending")
    record = xenapi.task.get_record(task)
    assert record["status"] == "success" and record["name_label"] == "Async.VM.clone"
    (clone,), _ = xmlrpc.client.loads(f"<params><param>{record['result']}</param></params>")
    assert xenapi.VM.get_name_label(clone) == "async-clone"
    xenapi.task.destroy(task)
    with pytest.raises(XenAPI.Failure) as gone:
        xenapi.task.get_record(task)
    assert gone.value.details[0] == "HANDLE_INVALID"


def test_failed_tasks_carry_the_error_description(xenapi, eventually):
    template = xenapi.VM.get_by_name_label("PEX Debian Etch 4.0 Template")[0]
    host = xenapi.host.get_all()[0]
    task = xenapi.Async.VM.start_on(template, host, False, False)
    eventually(lambda: xenapi.task.get_status(task) != "pending")
    assert xenapi.task.get_status(task) == "failure"
    assert xenapi.task.get_error_info(task) == ["VM_IS_TEMPLATE", template, "start_on"]
    assert xenapi.task.get_result(task) == ""


def test_the_admin_endpoint_is_plain_json_on_its_own_path(simulator):
    parts = urlsplit(simulator.admin_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    connection.request("POST", "/sim/fail_host", b'{"host": "node3"}', {"Content-Type": "application/json"})
    assert connection.getresponse().read() == b'{"result": null}'
    connection.request("GET", "/sim/state")
    state = json.loads(connection.getresponse().read())["result"]
    connection.request("POST", "/sim/no_such_action", b"{}")
    assert connection.getresponse().status == 404
    connection.close()
    assert [h["live"] for h in state["hosts"]] == [True, True, False, True, True]
