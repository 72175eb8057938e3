"""A model of json-lib 2.3 (net.sf.json, its jdk15 build), the JSON library of the original
OpenPEX reference client, over the original's bean classes.

Debian packages no json-lib, so its client cannot be run here; this model decides instead
whether that client could read a reply. It follows json-lib's `JSONObject.toBean` with
ezmorph's standard morphers and the client's HTTPDateMorpher:

* a field the bean has no property for is skipped if it is a string, number or boolean, and
  is an error (`Unknown property 'x' on class ...`) if it is an array, an object or null;
* a property with a getter but no public setter is skipped, whatever its value;
* a number property (int, short, long) takes a number as Java narrows it; a string is parsed
  up to its first ".", and is 0 if that fails; a boolean is 0; null is an error (a primitive);
* an enum property takes the name of one of its constants, anything else is an error;
* a Date property takes an RFC 1123 time; a string that does not parse is null, as the
  client's HTTPDateMorpher makes it; anything else is an error;
* a String property takes any scalar as its text;
* a bean property takes an object, mapped by these same rules.

Where json-lib would do something more elaborate (an object into a String or Date property,
an array into a collection property the original's servers never sent), the model refuses:
it is stricter than json-lib there, never more lenient. `to_json` writes a bean as the
client's JSONSerializer.toJSON does: properties sorted by name, dates as RFC 1123.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class JsonLibError(Exception):
    """What json-lib (or the client's cast of its result) would throw."""


@dataclass(frozen=True)
class Number:
    java: str  # short, int or long
    bits: int


@dataclass(frozen=True)
class Text:
    pass


@dataclass(frozen=True)
class Date:
    pass


@dataclass(frozen=True)
class Enum:
    java: str
    constants: tuple[str, ...]


@dataclass(frozen=True)
class Bean:
    java: str
    properties: dict[str, Any]  # name → kind, for the properties with a public setter
    defaults: dict[str, Any] = field(default_factory=dict)  # what the constructor leaves
    read_only: frozenset[str] = frozenset()  # a getter without a public setter


SHORT, INT, LONG, TEXT, DATE = Number("short", 16), Number("int", 32), Number("long", 64), Text(), Date()

INSTANCE_TYPE = Enum("InstanceType", ("SMALL", "MEDIUM", "LARGE", "XLARGE"))
REPLY_TYPE = Enum(
    "ReservationReply$ReservationReplyType",
    ("ACCEPT", "REJECT", "COUNTER", "CONFIRM", "CONFIRM_REQUEST", "REQUEST_SUCCESS", "REQUEST_FAILED"),
)
RESERVATION_STATUS = Enum(
    "Constants$ReservationStatus",
    ("INITIATED", "SUBMITTED", "ACCEPTED", "COUNTERED", "REJECTED", "CONFIRMED", "ACTIVATED", "EXPIRED"),
)
VM_STATUS = ("UNRECOGNIZED", "HALTED", "PAUSED", "RUNNING", "SUSPENDED", "DELETED", "NOT_PROVISIONED", "UNDER_MIGRATION")

RESERVATION_PROPOSAL = Bean(
    "org.unimelb.openpex.reservation.ReservationProposal",
    {
        "duration": LONG, "id": TEXT, "numInstancesFixed": INT, "numInstancesOption": INT,
        "startTime": DATE, "template": TEXT, "type": INSTANCE_TYPE, "userid": INT,
    },
    {
        "duration": 0, "id": "", "numInstancesFixed": 0, "numInstancesOption": 0,
        "startTime": None, "template": "", "type": None, "userid": 0,
    },
)  # fmt: skip
RESERVATION_REPLY = Bean(
    "org.unimelb.openpex.reservation.ReservationReply",
    {"proposal": RESERVATION_PROPOSAL, "reply": REPLY_TYPE},
    {"proposal": None, "reply": None},
)
# Its vmSet and nodes (collections of entities) were filtered out by the original's server.
RESERVATION_ENTITY = Bean(
    "org.unimelb.openpex.reservation.ReservationEntity",
    {
        "activatedInstances": INT, "endTime": DATE, "numInstancesFixed": SHORT, "numInstancesOption": SHORT,
        "requestId": TEXT, "startTime": DATE, "status": RESERVATION_STATUS, "template": TEXT,
        "type": INSTANCE_TYPE, "userid": SHORT,
    },
    {
        "activatedInstances": 0, "endTime": None, "numInstancesFixed": 0, "numInstancesOption": 0,
        "requestId": None, "startTime": None, "status": None, "template": None, "type": None, "userid": 0,
    },
)  # fmt: skip
# VMInstance is abstract; a client reads an instance into its concrete XenVMInstance, whose
# `status` setter is protected and whose `record` has no setter. Its clusterNode and
# reservation (entities) were filtered out by the original's server.
VM_INSTANCE = Bean(
    "org.unimelb.openpex.xen.XenVMInstance",
    {
        "end_time": DATE, "ipAddress": TEXT, "name": TEXT, "start_time": DATE, "userID": SHORT,
        "vmID": TEXT, "vmPassword": TEXT,
    },
    {
        "end_time": None, "ipAddress": None, "name": None, "start_time": None, "userID": 0, "vmID": None,
        "vmPassword": None,
    },
    read_only=frozenset({"status", "record"}),
)  # fmt: skip

_JAVA_INTEGER = re.compile(r"^[+-]?[0-9]+$")  # what Integer.parseInt accepts
_RFC_1123 = "%a, %d %b %Y %H:%M:%S %Z"


def parse(text: str) -> Any:
    """`JSONSerializer.toJSON(text)`."""
    try:
        return json.loads(text)
    except ValueError as error:
        raise JsonLibError(f"net.sf.json.JSONException: {error}") from None


def to_java(text: str, bean: Bean) -> dict[str, Any]:
    """`(ReservationReply) JSONSerializer.toJava((JSONObject) JSONSerializer.toJSON(text), config)`."""
    value = parse(text)
    if not isinstance(value, dict):
        raise JsonLibError(f"java.lang.ClassCastException: {type(value).__name__} is not a net.sf.json.JSONObject")
    return to_bean(value, bean)


def to_collection(text: str, bean: Bean) -> list[dict[str, Any]]:
    """`JSONArray.toCollection((JSONArray) JSONSerializer.toJSON(text), bean)`: a list reply."""
    value = parse(text)
    if not isinstance(value, list):
        raise JsonLibError(f"java.lang.ClassCastException: {type(value).__name__} is not a net.sf.json.JSONArray")
    items = []
    for item in value:
        if not isinstance(item, dict):
            raise JsonLibError(f"net.sf.json.JSONException: {item!r} is not a {bean.java}")
        items.append(to_bean(item, bean))
    return items


def to_bean(obj: dict[str, Any], bean: Bean) -> dict[str, Any]:
    result = dict(bean.defaults)
    for name, value in obj.items():
        if name in bean.read_only:
            continue  # "Property 'status' has no write method. SKIPPED."
        kind = bean.properties.get(name)
        if kind is None:
            if _is_scalar(value):
                continue  # "Tried to assign property ... to bean of class ...": a warning
            raise JsonLibError(
                f"net.sf.json.JSONException: java.lang.NoSuchMethodException: Unknown property '{name}' on class '{bean.java}'"
            )
        result[name] = _convert(name, value, kind, bean)
    return result


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _convert(name: str, value: Any, kind: Any, bean: Bean) -> Any:
    where = f"property={name} of {bean.java}"
    if value is None:
        if isinstance(kind, Number):
            raise JsonLibError(f"net.sf.json.JSONException: Error while setting {where}: null for a {kind.java}")
        return None
    if isinstance(value, list):
        raise JsonLibError(f"net.sf.json.JSONException: Error while setting {where}: an array")
    if isinstance(value, dict):
        if isinstance(kind, Bean):
            return to_bean(value, kind)
        raise JsonLibError(f"net.sf.json.JSONException: Error while setting {where}: an object (the model is strict here)")
    if isinstance(kind, Number):
        return _number(value, kind)
    if isinstance(kind, Text):
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)
    if isinstance(kind, Date):
        if not isinstance(value, str):
            raise JsonLibError(f"net.sf.json.JSONException: Error while setting {where}: argument type mismatch")
        return _http_date(value)
    if isinstance(kind, Enum):
        if isinstance(value, str) and value in kind.constants:
            return value
        raise JsonLibError(
            f"net.sf.json.JSONException: Error while setting {where}: "
            f"No enum const class org.unimelb.openpex.{kind.java}.{value}"
        )
    raise JsonLibError(f"net.sf.json.JSONException: Error while setting {where}: a {type(value).__name__}")


def _number(value: Any, kind: Number) -> int:
    if isinstance(value, bool):
        return 0  # Integer.parseInt("true") fails; the standard morphers default to 0
    if isinstance(value, int):
        return _wrap(value, kind.bits)  # Number.intValue() and friends keep the low bits
    if isinstance(value, float):
        if math.isnan(value):
            return 0
        # A double narrows to int (or long) saturating, then to short by keeping the low bits.
        limit = 2 ** (63 if kind.bits == 64 else 31)
        narrowed = limit - 1 if value >= limit else -limit if value < -limit else math.trunc(value)
        return _wrap(narrowed, kind.bits)
    text = value.split(".", 1)[0]
    if not _JAVA_INTEGER.match(text):
        return 0
    number = int(text)
    return number if -(2 ** (kind.bits - 1)) <= number < 2 ** (kind.bits - 1) else 0


def _wrap(number: int, bits: int) -> int:
    number &= (1 << bits) - 1
    return number - (1 << bits) if number >= 1 << (bits - 1) else number


def _http_date(value: str) -> datetime | None:
    """The client's HTTPDateMorpher: SimpleDateFormat("E, dd MMM yyyy HH:mm:ss z"), GMT; a
    ParseException is logged and the date is null. (The model reads only GMT and UTC zones.)"""
    try:
        parsed = datetime.strptime(value, _RFC_1123)
    except ValueError:
        return None
    if not value.endswith((" GMT", " UTC")):
        return None
    return parsed.replace(tzinfo=UTC)


def to_json(values: dict[str, Any], bean: Bean, leave_out: frozenset[str] = frozenset()) -> str:
    """`JSONSerializer.toJSON(bean, config).toString(3)`, with the client's date processor."""
    return json.dumps(_bean_json(values, bean, leave_out), indent=3)


def _bean_json(values: dict[str, Any], bean: Bean, leave_out: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted(bean.properties):
        if name in leave_out:
            continue
        kind, value = bean.properties[name], values.get(name)
        if isinstance(kind, Bean):
            out[name] = None if value is None else _bean_json(value, kind, frozenset())
        elif isinstance(kind, Date):
            out[name] = None if value is None else value.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        elif isinstance(kind, Text):
            out[name] = "" if value is None else value  # json-lib writes a null String as ""
        else:
            out[name] = value
    return out
