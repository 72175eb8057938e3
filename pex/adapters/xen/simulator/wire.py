"""XML-RPC the way xapi writes it, and the failures xapi answers with.

xapi encodes with ocaml-rpc, not with Python's marshaller: strings and 64-bit ints go out as
untyped `<value>text</value>` (so every int arrives as a decimal string), only Int32 fields
use `<i4>`, and API errors travel inside a normal response as
`{"Status": "Failure", "ErrorDescription": [code, *params]}`, never as an XML-RPC `<fault>`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.sax.saxutils import escape

NULL_REF = "OpaqueRef:NULL"


class Int32(int):
    """An int that goes on the wire as `<i4>`: xapi's only Int32 is event.from's valid_ref_counts."""


class XapiError(Exception):
    """A failure xapi reports as ErrorDescription: `[code, *params]`, every param a string."""

    def __init__(self, code: str, *params: object):
        self.code = code
        self.params = [str(p) for p in params]
        super().__init__(self.description)

    @property
    def description(self) -> list[str]:
        return [self.code, *self.params]


class ConnectionDropped(Exception):  # noqa: N818 - what happens, not an error xapi names
    """The call ends without an answer: the xapi serving it went away meanwhile (restarted,
    or is no longer the master), so the client's connection just closes."""


def encode_value(value: object) -> str:
    """One `<value>` element as ocaml-rpc's `Xmlrpc.to_string` would write it."""
    if isinstance(value, bool):
        return f"<value><boolean>{int(value)}</boolean></value>"
    if isinstance(value, Int32):
        return f"<value><i4>{int(value)}</i4></value>"
    if isinstance(value, int):
        return f"<value>{value}</value>"
    if isinstance(value, float):
        return f"<value><double>{value:.16g}</double></value>"
    if isinstance(value, str):
        return f"<value>{escape(value)}</value>"
    if isinstance(value, datetime):
        utc = value.astimezone(UTC)
        return f"<value><dateTime.iso8601>{utc:%Y%m%dT%H:%M:%SZ}</dateTime.iso8601></value>"
    if isinstance(value, dict):
        members = "".join(
            f"<member><name>{escape(str(k))}</name>{encode_value(v)}</member>" for k, v in value.items()
        )
        return f"<value><struct>{members}</struct></value>"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"<value><array><data>{''.join(encode_value(v) for v in value)}</data></array></value>"
    if value is None:
        return "<value><nil/></value>"
    raise TypeError(f"cannot encode {type(value).__name__} for XML-RPC")


def success(value: object) -> dict:
    # Void calls answer "" rather than nil: the client must never see None for a typed result.
    return {"Status": "Success", "Value": "" if value is None else value}


def failure(description: list[str]) -> dict:
    return {"Status": "Failure", "ErrorDescription": list(description)}


def method_response(envelope: dict) -> bytes:
    param = encode_value(envelope)
    return f'<?xml version="1.0"?><methodResponse><params><param>{param}</param></params></methodResponse>'.encode()


def task_result(value: object) -> str:
    """`task.result`: the XML of the value as a string, "" for void (as xapi stores it)."""
    return "" if value is None else encode_value(value)


def as_int(value: object, field: str = "value") -> int:
    """xapi accepts `<int>`/`<i4>`/`<i8>` and decimal strings for its 64-bit ints."""
    if isinstance(value, bool):
        raise XapiError("FIELD_TYPE_ERROR", field)
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise XapiError("FIELD_TYPE_ERROR", field) from None


def as_bool(value: object, field: str = "value") -> bool:
    if isinstance(value, bool):
        return value
    raise XapiError("FIELD_TYPE_ERROR", field)


def as_float(value: object, field: str = "value") -> float:
    if isinstance(value, bool):
        raise XapiError("FIELD_TYPE_ERROR", field)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise XapiError("FIELD_TYPE_ERROR", field) from None
