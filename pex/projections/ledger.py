"""The ledger: tamper evidence for the event log.

Every stored event gets a SHA-256 digest of exactly what is stored (its notification id,
originator id, version, topic and state bytes), and the digests are chained in log order:
chain(n) = SHA-256(chain(previous) ‖ digest(n)), from a chain of zeros. The ledger is kept
like a read model (a view of the log, written with its tracking position in the same
transaction), in its own tables `pex_ledger` (one row per event) and `pex_ledger_head`.

What it shows, when `pex audit` re-reads the log against it:
- a stored event whose bytes changed: its digest differs from the ledger's;
- a stored event that was removed: the ledger has a row for an id the log no longer has;
- an event slipped in behind the ledger's position: the log has an id the ledger skipped;
- a ledger row edited to match: the chain of digests no longer links up.
Someone who rewrites both the log and the whole ledger consistently is caught only by the
chain digest kept outside the database: `pex audit` prints the head of the chain, and
`pex audit --expect-chain ID:DIGEST` checks a value an operator wrote down earlier.

The ledger only grows. It is never rebuilt by `pex replay`: re-deriving it from the log
would launder whatever was done to the log (see `pex replay --view ledger --reseal`).
"""

from __future__ import annotations

from hashlib import sha256
from typing import Any

from eventsourcing.persistence import Notification

from pex.projections.store import Batch, Table
from pex.projections.views import View

LEDGER = Table(
    "pex_ledger",
    (
        ("notification_id", "int"),
        ("originator_id", "text"),
        ("originator_version", "int"),
        ("topic", "text"),
        ("event_sha256", "text"),
        ("chain_sha256", "text"),
    ),
    key=("notification_id",),
)

LEDGER_HEAD = Table(
    "pex_ledger_head",
    (("name", "text"), ("notification_id", "int"), ("events", "int"), ("chain_sha256", "text")),
    key=("name",),
)

GENESIS = "0" * 64


def event_digest(n: Notification) -> str:
    """SHA-256 of an event exactly as stored."""
    h = sha256(f"{n.id}\x1f{n.originator_id}\x1f{n.originator_version}\x1f{n.topic}\x1f".encode())
    state = n.state
    h.update(state.encode() if isinstance(state, str) else bytes(state))  # str only if someone wrote text there
    return h.hexdigest()


def chained(previous: str, digest: str) -> str:
    return sha256(bytes.fromhex(previous) + bytes.fromhex(digest)).hexdigest()


class LedgerView(View):
    name = "ledger"
    tables = (LEDGER, LEDGER_HEAD)
    rebuildable = False

    def apply(self, batch: Batch, event: Any, notification: Notification) -> None:
        head = batch.get(LEDGER_HEAD, ("head",)) or {"name": "head", "notification_id": 0, "events": 0, "chain_sha256": GENESIS}
        digest = event_digest(notification)
        link = chained(head["chain_sha256"], digest)
        batch.put(
            LEDGER,
            {
                "notification_id": notification.id,
                "originator_id": str(notification.originator_id),
                "originator_version": notification.originator_version,
                "topic": notification.topic,
                "event_sha256": digest,
                "chain_sha256": link,
            },
        )
        head.update(notification_id=notification.id, events=head["events"] + 1, chain_sha256=link)
        batch.put(LEDGER_HEAD, head)
