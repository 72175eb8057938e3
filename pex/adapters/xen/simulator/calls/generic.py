"""The messages every xapi class has: get_record, get_all(_records), get_by_uuid, field getters,
get_by_name_label, get_all_records_where, and add_to_/remove_from_ for map fields.

Only fields the simulated record really has get a getter, so an adapter cannot come to rely
on a field that the simulator invented or real xapi lacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pex.adapters.xen.simulator.database import BACK_REFERENCES
from pex.adapters.xen.simulator.record_defaults import new_record
from pex.adapters.xen.simulator.wire import XapiError

if TYPE_CHECKING:
    from pex.adapters.xen.simulator.pool import SimulatedPool

# The few plain field setters PEX might use; the rest of xapi's setters are not simulated.
SETTABLE_FIELDS = frozenset({"name_label", "name_description", "other_config", "tags", "affinity"})

@dataclass(frozen=True)
class ApiMethod:
    """One xapi message the simulator answers (pex.adapters.xen.simulator.api)."""

    handler: Callable[..., object]
    arity: int  # including the session argument
    can_be_async: bool



_WHERE_CLAUSE = re.compile(r'\s*field\s+"(?P<field>[^"]+)"\s*=\s*"(?P<value>[^"]*)"\s*')


def generic_method(pool: SimulatedPool, cls: str, msg: str) -> ApiMethod | None:
    db = pool.db
    defaults = new_record(cls)
    fields = set(defaults) | {f for (_, _), (target, f) in BACK_REFERENCES.items() if target == cls}
    handler: Callable[..., object] | None = None

    if msg == "get_all":
        def handler(session):
            return list(db.tables[cls])
    elif msg == "get_all_records":
        def handler(session):
            return {ref: db.view(cls, ref) for ref in db.tables[cls]}
    elif msg == "get_all_records_where":
        def handler(session, expression):
            wanted = _parse_where(expression)
            return {ref: db.view(cls, ref) for ref, rec in db.tables[cls].items()
                    if all(_as_text(rec.get(f)) == v for f, v in wanted)}
    elif msg == "get_record":
        def handler(session, ref):
            return db.view(cls, ref)
    elif msg == "get_by_uuid":
        def handler(session, uuid):
            return db.by_uuid(cls, uuid)
    elif msg == "get_by_name_label" and "name_label" in fields:
        def handler(session, label):
            return [ref for ref, _ in db.find(cls, name_label=label)]
    elif msg.startswith("get_") and msg[4:] in fields:
        field = msg[4:]

        def handler(session, ref):
            return db.view(cls, ref)[field]
    elif msg.startswith("set_") and msg[4:] in SETTABLE_FIELDS & fields:
        field = msg[4:]

        def handler(session, ref, value):
            db.update(cls, ref, **{field: value})
    elif msg.startswith("add_to_") and isinstance(defaults.get(msg[7:]), dict):
        field = msg[7:]

        def handler(session, ref, key, value):
            current = db.get(cls, ref)[field]
            if key in current:
                raise XapiError("MAP_DUPLICATE_KEY", cls, field, ref, key)
            db.update(cls, ref, **{field: {**current, key: value}})
    elif msg.startswith("remove_from_") and isinstance(defaults.get(msg[12:]), dict):
        field = msg[12:]

        def handler(session, ref, key):
            current = db.get(cls, ref)[field]
            if key in current:  # removing an absent key is not an error in xapi
                db.update(cls, ref, **{field: {k: v for k, v in current.items() if k != key}})
    if handler is None:
        return None
    arity = handler.__code__.co_argcount
    return ApiMethod(handler, arity, can_be_async=False)


def _parse_where(expression: object) -> list[tuple[str, str]]:
    text = str(expression).strip()
    if not text or text.lower() == "true":
        return []
    clauses = []
    for part in re.split(r"\s+and\s+", text):
        match = _WHERE_CLAUSE.fullmatch(part)
        if not match:
            raise XapiError("INVALID_VALUE", "expression", text)
        clauses.append((match["field"], match["value"]))
    return clauses


def _as_text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
