"""The compiled request rules (pex.http.contract.CompiledOperation) are a shortcut, never a
second contract: whatever they let through, openapi-core accepts too, and the requests PEX's
clients send every day do take the shortcut."""

from __future__ import annotations

import json
import uuid

import falcon.testing
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from openapi_core.contrib.falcon.requests import FalconOpenAPIRequest

from pex.http.contract import CompiledOperation, openapi, spec_dict
from pex.wire import rfc1123
from tests.support import T0
from tests.support.api import basic, proposal

METHODS = ("get", "post", "put", "delete", "patch")
OPERATIONS = sorted((path, method) for path, item in spec_dict()["paths"].items() for method in item if method in METHODS)


def property_names(node, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        found.update(node.get("properties", {}))
        for value in node.values():
            property_names(value, found)
    elif isinstance(node, list):
        for value in node:
            property_names(value, found)
    return found


NAMES = sorted(property_names(spec_dict(), set()))
ID = str(uuid.UUID(int=0x1234))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**13), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["SMALL", "XLARGE", "PEX Debian Etch 4.0 Template", "CONFIRM", "ACCEPT", "COUNTER", "node1",
                     rfc1123(T0), "2026-01-01T00:00:00Z", ID, ID.upper(), "", " ", "0.5", "a" * 300]),
    st.text(max_size=8),
)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=4), max_leaves=12)
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(NAMES), JSON, max_size=8),
    st.builds(lambda extra, drop: {k: v for k, v in {**proposal(), **extra}.items() if k not in drop},
              st.dictionaries(st.sampled_from(NAMES), SCALARS, max_size=2), st.sets(st.sampled_from(sorted(proposal())), max_size=2)),
    JSON,
)
SEGMENTS = st.one_of(st.sampled_from([ID, ID.upper(), ID.replace("-", ""), "node1", "alice", "SMALL", "x" * 65]), st.text("abcXYZ019-._", min_size=0, max_size=70))
CONTENT_TYPES = st.sampled_from([None, "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", "application/vnd.pex+json"])
AUTHORIZATIONS = st.sampled_from([None, basic("alice")["Authorization"], "Bearer abc", "Basic", "basic YWxpY2U6eA=="])
HEADERS = st.dictionaries(st.sampled_from(["Idempotency-Key", "If-Match", "Accept"]), st.text("abc\"019", max_size=260), max_size=2)


def request(path: str, method: str, segments: list[str], body, content_type, authorization, headers) -> falcon.Request:
    parts = iter(segments)
    concrete = "/".join(next(parts) if s.startswith("{") else s for s in path.split("/"))
    sent = dict(headers)
    if content_type:
        sent["Content-Type"] = content_type
    if authorization:
        sent["Authorization"] = authorization
    return falcon.testing.create_req(path=concrete, method=method.upper(), headers=sent, body=None if body is None else json.dumps(body))


@settings(max_examples=400)
@given(
    operation=st.sampled_from(OPERATIONS), segments=st.lists(SEGMENTS, min_size=3, max_size=3),
    body=st.none() | BODIES, content_type=CONTENT_TYPES, authorization=AUTHORIZATIONS, headers=HEADERS,
)
def test_a_request_the_compiled_rules_let_through_is_one_openapi_core_accepts(operation, segments, body, content_type, authorization, headers):
    path, method = operation
    compiled = CompiledOperation.compile(path, method)
    req = request(path, method, segments, body, content_type, authorization, headers)
    if "//" in req.path or req.path.endswith("/") and req.path != "/":
        return  # an empty segment is not a path this API routes
    try:
        req.get_media(default_when_empty=None)
    except falcon.HTTPError:
        return  # answered (400, 415) before the contract is consulted, as RequestContract does
    vouched = compiled is not None and compiled.vouches_for(req)
    event("vouched for" if vouched else "left to openapi-core")
    if vouched:
        assert openapi().unmarshal_request(FalconOpenAPIRequest(req)).errors == []


@pytest.mark.parametrize("path, method, segments, body", [
    ("/OpenPEX/reservations", "post", [], proposal()),
    ("/OpenPEX/reservations/{reservation_id}", "put", [ID], {"reply": "CONFIRM"}),
    ("/OpenPEX/reservations/{reservation_id}", "put", [ID], {"reply": "ACCEPT"}),
    ("/OpenPEX/reservations/{reservation_id}", "get", [ID], None),
    ("/OpenPEX/users", "post", [], {"username": "alice", "password": "correct horse battery"}),
])
def test_the_requests_of_a_negotiation_take_the_compiled_rules(path, method, segments, body):
    req = request(path, method, segments, body, "application/json" if body is not None else None, basic("alice")["Authorization"], {})
    compiled = CompiledOperation.compile(path, method)
    assert openapi().unmarshal_request(FalconOpenAPIRequest(req)).errors == []
    assert compiled is not None and compiled.vouches_for(req)


def test_a_proposal_with_a_wrong_field_is_left_to_openapi_core():
    req = request("/OpenPEX/reservations", "post", [], proposal(numInstancesFixed="two"), "application/json", basic("alice")["Authorization"], {})
    compiled = CompiledOperation.compile("/OpenPEX/reservations", "post")
    assert compiled is not None and not compiled.vouches_for(req)
    assert openapi().unmarshal_request(FalconOpenAPIRequest(req)).errors
