"""At the door: what slow or malformed clients do to a real `pex serve` (gunicorn, 2 workers, the
embedded default on SQLite) on loopback, spoken to over raw sockets where requests cannot."""

from __future__ import annotations

import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import requests

from pex.http.contract import spec_dict
from pex.wire import rfc1123
from tests.support.api import ETCH
from tests.support.server import serving

pytestmark = pytest.mark.gunicorn

HOLD_SECONDS = 15  # PEX_REQUEST_TIMEOUT_SECONDS of the server under test
ANSWER_SECONDS = 5  # the clients' timeout: generous for a loaded CI, far below HOLD_SECONDS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("door")
    with serving(
        f"sqlite:///{tmp_path}/pex.sqlite3", tmp_path, workers=2,
        extra_env={"PEX_REQUEST_TIMEOUT_SECONDS": str(HOLD_SECONDS)},
    ) as server:
        yield server


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=ANSWER_SECONDS)


def send(server, raw: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    with connect(server) as sock:
        sock.sendall(raw)
        sock.settimeout(HOLD_SECONDS + 10)
        return read_to_close(sock)


def read_to_close(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def problem_of(answer: bytes) -> dict:
    """The problem+json body of a raw answer, checked against the OpenAPI document's Problem."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    jsonschema.validate(problem, spec_dict()["components"]["schemas"]["Problem"])
    assert f"x-request-id: {problem['request_id']}".encode() in head.lower()
    return problem


def figure_7(start: datetime) -> dict:
    return {"duration": 3600_000, "numInstancesFixed": 1, "numInstancesOption": 0,
            "startTime": rfc1123(start), "template": ETCH, "type": "SMALL"}


def test_fifty_slow_bodies_hold_no_thread_and_each_gets_a_408_then_a_closed_connection(server):
    alice = server.session(server.register("alice"))
    slow = []
    for _ in range(50):
        sock = connect(server)
        sock.sendall(b"POST /OpenPEX/users HTTP/1.1\r\nHost: pex\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        slow.append(sock)
    try:
        health = requests.get(f"{server.url}/healthz", timeout=ANSWER_SECONDS)
        start = datetime.now(UTC) + timedelta(days=1)
        negotiated = alice.post(f"{server.url}/OpenPEX/reservations", json=figure_7(start), timeout=ANSWER_SECONDS)
        assert health.status_code == 200
        assert negotiated.status_code == 201, negotiated.text
        for sock in slow:  # still held: the answers above came while every slow client waited
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        for sock in slow:
            sock.setblocking(True)
            sock.settimeout(HOLD_SECONDS + 20)
            answer = read_to_close(sock)  # returns only once the server closed the connection
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"application/problem+json" in answer and b"request-timeout" in answer
    finally:
        for sock in slow:
            sock.close()


def test_a_request_that_arrives_in_pieces_within_the_timeout_is_served(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: pex\r\n")
        sock.sendall(b"Connection: close\r\n\r\n")
        assert read_to_close(sock).startswith(b"HTTP/1.1 200 ")


def test_pipelined_and_kept_alive_requests_are_all_answered_in_order(server):
    ask = b"GET /healthz HTTP/1.1\r\nHost: pex\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(ask + ask + b"GET /nowhere HTTP/1.1\r\nHost: pex\r\nConnection: close\r\n\r\n")
        answer = read_to_close(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 2 and answer.rfind(b"HTTP/1.1 200 ") < answer.find(b"HTTP/1.1 404 ")


def test_a_client_that_expects_100_continue_is_told_to_send_its_body(server):
    body = b'{"username": "bob", "password": "correct horse battery"}'
    with connect(server) as sock:
        sock.sendall(b"POST /OpenPEX/users HTTP/1.1\r\nHost: pex\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert b"HTTP/1.1 201 " in read_to_close(sock)


def test_an_oversized_body_a_chunked_body_and_oversized_headers_are_refused_before_they_arrive(server):
    too_large = send(server, b"POST /OpenPEX/users HTTP/1.1\r\nHost: pex\r\nContent-Length: 100000000\r\n\r\n{")
    chunked = send(server, b"POST /OpenPEX/users HTTP/1.1\r\nHost: pex\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{")
    headers = send(server, b"GET /healthz HTTP/1.1\r\nHost: pex\r\n" + b"X-Pad: " + b"a" * 70_000)
    assert too_large.startswith(b"HTTP/1.1 413 ") and problem_of(too_large)["type"].endswith("/payload-too-large")
    assert chunked.startswith(b"HTTP/1.1 411 ") and problem_of(chunked)["type"].endswith("/length-required")
    assert headers.startswith(b"HTTP/1.1 431 ") and problem_of(headers)["instance"] == "/healthz"
    assert problem_of(too_large)["instance"] == "/OpenPEX/users"


def test_a_request_line_too_long_is_refused_as_a_problem(server):
    # gunicorn's own parser would answer an HTML page; the door answers at the same limit.
    long_line = send(server, b"GET /OpenPEX/reservations?cursor=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: pex\r\n\r\n")
    assert long_line.startswith(b"HTTP/1.1 414 ")
    problem = problem_of(long_line)  # the whole Problem the OpenAPI document promises (schemathesis checks it)
    assert problem["type"].endswith("/uri-too-long") and problem["instance"] == "/OpenPEX/reservations"
    path_too_long = problem_of(send(server, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: pex\r\n\r\n"))
    assert path_too_long["instance"] == f"urn:uuid:{uuid.UUID(path_too_long['request_id'])}"  # not echoed


def test_each_request_is_logged_once_and_gunicorns_own_lines_once(server):
    with requests.Session() as session:  # one kept-alive connection: the second request is served after the first
        session.get(f"{server.url}/nowhere-first-4f1c", timeout=ANSWER_SECONDS)
        session.get(f"{server.url}/nowhere-second-4f1c", timeout=ANSWER_SECONDS)
    for _ in range(100):
        if "nowhere-second-4f1c" in server.log():
            break
        time.sleep(0.1)
    lines = server.log().splitlines()
    assert len([line for line in lines if "nowhere-first-4f1c" in line]) == 1
    assert len([line for line in lines if "Starting gunicorn" in line]) == 1


@pytest.mark.parametrize("length", [b"00000000000000000000001000000", b"100, 100", b"+100", b"1e2"])
def test_a_content_length_the_door_cannot_read_as_bytes_is_refused_without_waiting_for_a_body(server, length):
    answer = send(server, b"POST /OpenPEX/users HTTP/1.1\r\nHost: pex\r\nContent-Length: " + length + b"\r\n\r\n{")
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 413 ")), answer


def test_two_content_lengths_are_refused(server):
    answer = send(server, b"POST /OpenPEX/users HTTP/1.1\r\nHost: pex\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 400 "), answer


@pytest.mark.parametrize("raw", [
    b"GET /healthz HTTP/1.1\r\nHost: pex\r\nX-Bad: a\x01b\r\n\r\n",  # a control character in a field value
    b"GET /healthz HTTP/1.1\r\nHost: pex\r\nBad Name: x\r\n\r\n",  # a space in a field name
    b"G@T /healthz HTTP/1.1\r\nHost: pex\r\n\r\n",  # not a method
    b"GET /healthz HTTP/9.9\r\nHost: pex\r\n\r\n",  # not a version
    b"GET /healthz HTTP/1.1\r\nHost: pex\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",  # one field over gunicorn's limit
], ids=["control-character", "field-name", "method", "version", "field-size"])
def test_what_gunicorns_parser_refuses_is_answered_as_a_problem_too(server, raw):
    answer = send(server, raw)
    assert answer[9:10] == b"4", answer[:200]  # a 4xx, never gunicorn's 500 or its HTML page
    problem = problem_of(answer)
    assert problem["status"] == int(answer[9:12]) and problem["detail"]
