"""The OpenAPI document (pex/http/openapi.yaml) as a contract the server keeps.

Requests to resources that declare `contract = True` are validated before the responder runs;
a violation is a 400 (415 for a media type) problem listing every error with a JSON pointer.
openapi-core builds its validators afresh for every request (pure Python: half the cost of a
negotiation step), so each operation's rules are also compiled once from the same document
(`CompiledOperation`, with jsonschema_rs): a request they vouch for goes straight through, and
any other is validated by openapi-core, which decides and says what is wrong. With `validate_responses` on (tests), every response is checked against
the document too, and violations are collected in `ResponseContract.violations`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

import falcon
import jsonschema_rs
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


def _pointer(*parts: str) -> str:
    """A URI fragment of JSON pointer to `parts` (`{username}` percent-encoded, as a URI needs)."""
    return "#/" + "/".join(quote(p.replace("~", "~0").replace("/", "~1"), safe="~") for p in parts)


@dataclass(frozen=True)
class _Parameter:
    name: str
    location: str  # path or header: the only ones compiled (a query goes to openapi-core)
    required: bool
    validator: Any
    segment: int  # for a path parameter, its index among the path's segments


@dataclass(frozen=True)
class CompiledOperation:
    """One operation's request rules, compiled once from the OpenAPI document.

    `vouches_for` is one-sided: True only for a request openapi-core accepts too (the same
    schemas, formats checked, the same reading of the body and the security requirement);
    False for anything it is unsure of (a query string, an unexpected media type, any schema
    error), which openapi-core then validates. So the document stays the one contract and
    the errors keep openapi-core's words."""

    parameters: tuple[_Parameter, ...]
    security: tuple[tuple[str, ...], ...] | None  # the http schemes of each alternative; None: open
    bodies: dict[str, Any] | None  # media type → validator; None: the operation takes no body
    segments: int

    def vouches_for(self, req: falcon.Request) -> bool:
        if req.params:
            return False
        if self.security is not None and not any(self._authorized(req, schemes) for schemes in self.security):
            return False
        segments = req.path.split("/")
        if len(segments) != self.segments or "." in segments or ".." in segments:
            return False  # a dot segment: openapi-core resolves it to another path, so it decides
        for p in self.parameters:
            value = segments[p.segment] if p.location == "path" else req.get_header(p.name)
            if value is None:
                if p.required:
                    return False
            elif not p.validator.is_valid(value):
                return False
        if self.bodies is None:
            return True
        media_type = (req.content_type or req.options.default_media_type).split(";", 1)[0].strip().lower()
        validator = self.bodies.get(media_type)
        # openapi-core reads an empty body as {} (its falcon adapter's default), and so does this.
        return validator is not None and validator.is_valid(req.get_media(default_when_empty={}))

    @staticmethod
    def _authorized(req: falcon.Request, schemes: tuple[str, ...]) -> bool:
        header = req.get_header("Authorization")
        if not schemes:
            return True
        if header is None or " " not in header:
            return False
        return all(header.split(" ", 1)[0].lower() == scheme for scheme in schemes)

    @classmethod
    def compile(cls, path: str, method: str) -> CompiledOperation | None:
        """The rules of `method` on the document's `path`; None if some rule is not one this
        compiles (then openapi-core validates every such request)."""
        spec = spec_dict()
        item = spec["paths"].get(path)
        if item is None or method not in item:
            return None
        operation = item[method]

        def validator(pointer: str) -> Any:
            # The whole document is the root, so that its $refs resolve as openapi-core resolves them.
            return jsonschema_rs.validator_for({**spec, "$ref": pointer}, validate_formats=True)

        def resolved(node: dict, pointer: str) -> tuple[dict, str]:
            while "$ref" in node:
                pointer = node["$ref"]
                node = spec
                for part in pointer.removeprefix("#/").split("/"):
                    node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
            return node, pointer

        path_segments = path.split("/")
        parameters = []
        declared = [(p, _pointer("paths", path, "parameters", str(i))) for i, p in enumerate(item.get("parameters", []))]
        declared += [(p, _pointer("paths", path, method, "parameters", str(i))) for i, p in enumerate(operation.get("parameters", []))]
        for raw, pointer in declared:
            parameter, pointer = resolved(raw, pointer)
            schema, schema_pointer = resolved(parameter.get("schema", {}), pointer + "/schema")
            location = parameter["in"]
            if location not in ("path", "header") or schema.get("type") != "string":
                return None  # casting (numbers, arrays, booleans) is openapi-core's to do
            field = "{" + parameter["name"] + "}"
            if location == "path" and field not in path_segments:
                return None
            segment = path_segments.index(field) if location == "path" else -1
            parameters.append(_Parameter(parameter["name"], location, parameter.get("required", location == "path"), validator(schema_pointer), segment))
        requirements = operation.get("security", spec.get("security"))
        security = None
        if requirements:
            schemes_declared = spec.get("components", {}).get("securitySchemes", {})
            alternatives = []
            for requirement in requirements:
                schemes = []
                for name in requirement:
                    scheme = schemes_declared.get(name)
                    if scheme is None or scheme.get("type") != "http":
                        return None
                    schemes.append(scheme["scheme"].lower())
                alternatives.append(tuple(schemes))
            security = tuple(alternatives)
        bodies = None
        if "requestBody" in operation:
            body, pointer = resolved(operation["requestBody"], _pointer("paths", path, method, "requestBody"))
            bodies = {}
            for media_type, content in body.get("content", {}).items():
                if "*" in media_type or "schema" not in content:
                    return None
                bodies[media_type.lower()] = validator(pointer + "/content/" + _pointer(media_type)[2:] + "/schema")
        return cls(tuple(parameters), security, bodies, len(path_segments))


def compiled_operation(uri_template: str, method: str) -> CompiledOperation | None:
    """The compiled rules for a route (a Falcon URI template) and method."""
    return CompiledOperation.compile(re.sub(r"\{(\w+):\w+\}", r"{\1}", uri_template), method.lower())


class RequestContract:
    """Falcon middleware: validates requests to contract resources against the document.

    openapi-core ignores query parameters the document does not declare; PEX refuses them,
    so that a misspelt filter (?stat=CONFIRMED) is not silently a list of everything."""

    def __init__(self, spec: OpenAPI):
        self.spec = spec
        self._declared = functools.lru_cache(maxsize=256)(declared_query_parameters)
        self._compiled = functools.lru_cache(maxsize=256)(compiled_operation)

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
        compiled = self._compiled(req.uri_template, req.method)
        if compiled is not None and compiled.vouches_for(req):
            return
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
