"""The simulated xapi database: one table of records per class, keyed by OpaqueRef.

Besides the records it keeps what event.from needs: a global generation counter, the
generation at which every object was created and last modified, and a log of deletions.
Set-valued back-reference fields (`host.resident_VMs`, `VM.VBDs`, ...) are not stored but
computed from the forward reference, as in xapi, and changing a forward reference counts
as a modification of the objects on the other side.

Records hold Python values (ints as ints); the wire layer turns them into strings.
Not thread-safe: the pool serialises every access under its lock.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pex.adapters.xen.simulator.wire import NULL_REF, XapiError

CLASSES = ("pool", "host", "host_metrics", "VM", "VM_guest_metrics", "VBD", "VDI", "SR", "VIF", "network", "task")

# (class, forward field) -> (class, set field computed from it)
BACK_REFERENCES = {
    ("VM", "resident_on"): ("host", "resident_VMs"),
    ("VBD", "VM"): ("VM", "VBDs"),
    ("VBD", "VDI"): ("VDI", "VBDs"),
    ("VIF", "VM"): ("VM", "VIFs"),
    ("VIF", "network"): ("network", "VIFs"),
    ("VDI", "SR"): ("SR", "VDIs"),
}


@dataclass(frozen=True)
class Change:
    """One object's coalesced change since some generation, as event.from reports it."""

    cls: str
    ref: str
    operation: str  # "add" | "mod" | "del"
    generation: int


class Database:
    def __init__(self, new_ref: Callable[[], str], on_change: Callable[[], None] = lambda: None):
        self.tables: dict[str, dict[str, dict]] = {cls: {} for cls in CLASSES}
        self.generation = 0
        self._new_ref = new_ref
        self._on_change = on_change
        self._class_of: dict[str, str] = {}
        self._created: dict[str, int] = {}
        self._modified: dict[str, int] = {}
        self._deleted: list[tuple[int, str, str, int]] = []  # (generation, cls, ref, created)

    # -- reading -------------------------------------------------------------------------

    def get(self, cls: str, ref: object) -> dict:
        """The stored record (mutate only through `update`); HANDLE_INVALID if it is not one."""
        record = self.tables[cls].get(ref) if isinstance(ref, str) else None
        if record is None:
            raise XapiError("HANDLE_INVALID", cls, ref)
        return record

    def exists(self, cls: str, ref: object) -> bool:
        return isinstance(ref, str) and ref in self.tables[cls]

    def class_of(self, ref: str) -> str | None:
        return self._class_of.get(ref)

    def view(self, cls: str, ref: str) -> dict:
        """A detached copy of the record with its back-reference sets filled in."""
        record = copy.deepcopy(self.get(cls, ref))
        for (source, forward), (target, field) in BACK_REFERENCES.items():
            if target == cls:
                record[field] = [r for r, rec in self.tables[source].items() if rec.get(forward) == ref]
        return record

    def find(self, cls: str, **fields: object) -> Iterator[tuple[str, dict]]:
        for ref, record in self.tables[cls].items():
            if all(record.get(k) == v for k, v in fields.items()):
                yield ref, record

    def by_uuid(self, cls: str, uuid: object) -> str:
        for ref, record in self.tables[cls].items():
            if record.get("uuid") == uuid:
                return ref
        raise XapiError("UUID_INVALID", cls, uuid)

    # -- writing -------------------------------------------------------------------------

    def create(self, cls: str, record: dict) -> str:
        ref = self._new_ref()
        self.tables[cls][ref] = record
        self._class_of[ref] = cls
        self.generation += 1
        self._created[ref] = self._modified[ref] = self.generation
        self._touch_related(cls, record, {})
        self._on_change()
        return ref

    def update(self, cls: str, ref: str, **fields: object) -> None:
        record = self.get(cls, ref)
        before = dict(record)
        record.update(fields)
        self.touch(ref)
        self._touch_related(cls, record, before)

    def touch(self, ref: str) -> None:
        self.generation += 1
        self._modified[ref] = self.generation
        self._on_change()

    def delete(self, cls: str, ref: str) -> None:
        record = self.get(cls, ref)
        del self.tables[cls][ref]
        self.generation += 1
        self._deleted.append((self.generation, cls, ref, self._created.pop(ref)))
        self._modified.pop(ref, None)
        self._class_of.pop(ref, None)
        self._touch_related(cls, {}, record)
        self._on_change()

    def _touch_related(self, cls: str, after: dict, before: dict) -> None:
        for (source, forward), (target, _) in BACK_REFERENCES.items():
            if source != cls or after.get(forward) == before.get(forward):
                continue
            for other in (before.get(forward), after.get(forward)):
                if other and other != NULL_REF and self.exists(target, other):
                    self.touch(other)

    # -- events --------------------------------------------------------------------------

    def changes_since(self, generation: int | None, classes: set[str] | None) -> list[Change]:
        """Per-object coalesced changes after `generation` (None: every object, as "add").

        `classes` holds lowercase class names (None: all). An object both created and deleted
        inside the window produces nothing, as in xapi.
        """
        wanted = (lambda cls: True) if classes is None else (lambda cls: cls.lower() in classes)
        changes = []
        for cls, table in self.tables.items():
            if not wanted(cls):
                continue
            for ref in table:
                modified = self._modified[ref]
                if generation is None:
                    changes.append(Change(cls, ref, "add", modified))
                elif modified > generation:
                    operation = "add" if self._created[ref] > generation else "mod"
                    changes.append(Change(cls, ref, operation, modified))
        if generation is not None:
            for deleted_at, cls, ref, created in self._deleted:
                if deleted_at > generation and created <= generation and wanted(cls):
                    changes.append(Change(cls, ref, "del", deleted_at))
        changes.sort(key=lambda c: c.generation)
        return changes
