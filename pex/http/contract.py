"""The OpenAPI document (pex/http/openapi.yaml) as a contract the server keeps.

Requests to resources that declare `contract = True` are validated by openapi-core before
the responder runs; a violation is a 400 (415 for a media type) problem listing every error
with a JSON pointer. With `validate_responses` on (tests), every response is checked against
the document too, and violations are collected in `ResponseContract.violations`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from importlib import resources
from typing import Any

import falcon
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.falcon.requests import FalconOpenAPIRequest
from openapi_core.contrib.falcon.responses import FalconOpenAPIResponse
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.validation.request.exceptions import (
    InvalidRequestBody,
    MissingRequestBodyError,
    ParametersError,
    ParameterValidationError,
)

from pex.http.problems import Problem

log = logging.getLogger("pex.http")

SPEC_RESOURCE = "openapi.yaml"


@functools.cache
def spec_dict() -> dict[str, Any]:
    """The OpenAPI document, parsed once per process from the package data."""
    text = resources.files("pex.http").joinpath(SPEC_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@functools.cache
def spec_json() -> str:
    return json.dumps(spec_dict(), indent=1)


@functools.cache
def openapi() -> OpenAPI:
    config = Config(
        extra_media_type_deserializers={"application/problem+json": json.loads, "application/vnd.pex+json": json.loads}
    )
    return OpenAPI.from_dict(spec_dict(), config=config)


_REQUIRED = re.compile(r"^'([^']*)' is a required property")
_UNEXPECTED = re.compile(r"\((.*) (?:was|were) unexpected\)")
_QUOTED = re.compile(r"'([^']*)'")


def _schema_errors(error: Exception, base: str) -> list[tuple[str, str]]:
    """jsonschema errors under an openapi-core error → (JSON pointer, detail) pairs."""
    cause = error.__cause__
    schema_errors = list(getattr(cause, "schema_errors", None) or [])
    if not schema_errors:
        return [(base or "/", str(cause or error))]
    found = []
    for e in schema_errors:
        path = "".join(f"/{str(p).replace('~', '~0').replace('/', '~1')}" for p in getattr(e, "absolute_path", []))
        message = getattr(e, "message", str(e))
        missing = _REQUIRED.match(message)
        unexpected = _UNEXPECTED.search(message) if getattr(e, "validator", None) == "additionalProperties" else None
        if missing:
            found.append((f"{base}{path}/{missing.group(1)}", "is required"))
        elif unexpected:
            found.extend((f"{base}{path}/{name}", "is not a known field") for name in _QUOTED.findall(unexpected.group(1)))
        else:
            found.append((base + path or "/", message))
    return found


def request_problem(errors: list[Exception]) -> Problem:
    status = 400
    found: list[tuple[str, str]] = []
    for error in errors:
        if isinstance(error, ParametersError):
            for inner in error.errors:
                name = getattr(inner, "name", "?")
                location = getattr(inner, "location", "query")
                found.extend((f"#{location}/{name}", d) for _, d in _schema_errors(inner, ""))
        elif isinstance(error, ParameterValidationError):
            found.extend((f"#{error.location}/{error.name}", d) for _, d in _schema_errors(error, ""))
        elif isinstance(error, InvalidRequestBody):
            found.extend(_schema_errors(error, ""))
        elif isinstance(error, MissingRequestBodyError):
            found.append(("/", "a JSON request body is required"))
        elif isinstance(error, MediaTypeNotFound) or isinstance(error.__cause__, MediaTypeNotFound):
            status = 415
            found.append(("/", "send the body as application/json"))
        else:
            found.append(("/", str(error)))
    if status == 415:
        return Problem(415, "unsupported-media-type", "Unsupported media type", "Send JSON (application/json).", found)
    detail = "; ".join(f"{p}: {d}" for p, d in found)
    return Problem(400, "invalid-request", "The request does not match the API's contract", detail, found)


def declared_query_parameters(uri_template: str, method: str) -> frozenset[str] | None:
    """The query parameters the document declares for a route (a Falcon URI template)."""
    path = re.sub(r"\{(\w+):\w+\}", r"{\1}", uri_template)
    item = spec_dict()["paths"].get(path)
    if item is None or method.lower() not in item:
        return None
    parameters = [*item.get("parameters", []), *item[method.lower()].get("parameters", [])]
    shared = spec_dict()["components"]["parameters"]
    parameters = [shared[p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p for p in parameters]
    return frozenset(p["name"] for p in parameters if p.get("in") == "query")


class RequestContract:
    """Falcon middleware: validates requests to contract resources against the document.

    openapi-core ignores query parameters the document does not declare; PEX refuses them,
    so that a misspelt filter (?stat=CONFIRMED) is not silently a list of everything."""

    def __init__(self, spec: OpenAPI):
        self.spec = spec
        self._declared = functools.lru_cache(maxsize=256)(declared_query_parameters)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
        if resource is None or not getattr(resource, "contract", False):
            return
        if not hasattr(resource, f"on_{req.method.lower()}"):
            return  # falcon answers 405 with Allow
        declared = self._declared(req.uri_template, req.method)
        unknown = sorted(set(req.params) - declared) if declared is not None else []
        if unknown:
            found = [(f"#query/{name}", "is not a parameter of this operation") for name in unknown]
            raise Problem(400, "invalid-request", "Unknown query parameter", "; ".join(f"{p}: {d}" for p, d in found), found)
        if req.method in ("POST", "PUT", "PATCH") and (req.content_length or 0) > 0:
            # Malformed JSON surfaces here as falcon's own 400, before openapi-core sees it.
            req.get_media(default_when_empty=None)
        result = self.spec.unmarshal_request(FalconOpenAPIRequest(req))
        if result.errors:
            raise request_problem(list(result.errors))
        req.context.openapi = result


class _SentRequest(FalconOpenAPIRequest):
    """The request as the response check sees it: a body falcon could not parse counts as none."""

    @property
    def body(self) -> bytes | None:
        try:
            return super().body
        except falcon.HTTPError:
            return None


class _RenderedResponse(FalconOpenAPIResponse):
    """openapi-core reads resp.text; PEX's resources set resp.media, so render it first."""

    @property
    def data(self) -> bytes:
        if self.response.text is None and self.response.media is not None:
            return self.response.render_body() or b""
        return super().data


class ResponseContract:
    """Falcon middleware for tests: checks each response to a contract resource."""

    def __init__(self, spec: OpenAPI):
        self.spec = spec
        self.violations: list[str] = []
        self._lock = threading.Lock()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        if resource is None or not getattr(resource, "contract", False) or req.method == "OPTIONS":
            return
        if resp.status_code in (404, 405) and not hasattr(resource, f"on_{req.method.lower()}"):
            return
        try:
            result = self.spec.unmarshal_response(_SentRequest(req), _RenderedResponse(resp))
            errors = [f"{type(e).__name__}: {e} {getattr(e.__cause__, 'schema_errors', '')}" for e in result.errors]
        except Exception as error:  # the contract check must never break the response itself
            errors = [f"{type(error).__name__}: {error}"]
        if errors:
            violation = f"{req.method} {req.relative_uri} → {resp.status}: " + "; ".join(errors)
            log.error("response breaks the OpenAPI contract", extra={"violation": violation})
            with self._lock:
                self.violations.append(violation)
