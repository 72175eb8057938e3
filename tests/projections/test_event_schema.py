"""Events are schema: what was stored by an older PEX is still read by this one.

- Every topic PEX has ever stored still resolves (a rename needs register_topic).
- A log written by an earlier PEX (tests/projections/golden/) loads into aggregates, folds into
  the read models and passes the audit.
- The policy of docs/events.md ("Changing events"), shown on an aggregate of this test: an
  event stored in an older shape is read through its upcasters, and a renamed class is found
  under its old topic once that is registered.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import TopicError, get_topic, register_topic, resolve_topic

from pex.domain.instance import instance_id
from pex.domain.node import node_id
from pex.domain.values import State
from pex.projections.audit import Auditor
from pex.projections.readmodels import ReadModels

# Every topic stored by PEX so far. Add new ones; never remove one (docs/events.md).
STORED_TOPICS = """
pex.domain.catalogue:Catalogue pex.domain.catalogue:Catalogue.Opened pex.domain.catalogue:Catalogue.SizeDefined
pex.domain.catalogue:Catalogue.SizeWithdrawn pex.domain.catalogue:Catalogue.TemplateRegistered
pex.domain.catalogue:Catalogue.TemplateWithdrawn pex.domain.catalogue:Catalogue.QuotasChanged
pex.domain.catalogue:Catalogue.UserQuotasSet pex.domain.catalogue:Catalogue.PoolSynced
pex.domain.instance:Instance pex.domain.instance:Instance.Scheduled pex.domain.instance:Instance.Cancelled
pex.domain.instance:Instance.ClaimReleased pex.domain.instance:Instance.DeleteRequested
pex.domain.instance:Instance.Destroyed pex.domain.instance:Instance.DispatchClaimed
pex.domain.instance:Instance.DispatchFailed pex.domain.instance:Instance.Ended
pex.domain.instance:Instance.IpAddressReported pex.domain.instance:Instance.Lost pex.domain.instance:Instance.Moved
pex.domain.instance:Instance.PowerStateObserved pex.domain.instance:Instance.Provisioned
pex.domain.instance:Instance.RebootRequested pex.domain.instance:Instance.Rebooted
pex.domain.instance:Instance.StartRequested pex.domain.instance:Instance.Started
pex.domain.instance:Instance.StopRequested pex.domain.instance:Instance.Stopped pex.domain.instance:Instance.Stranded
pex.domain.instance:Instance.Unresponsive pex.domain.instance:Instance.Vanished
pex.domain.instance:Instance.Failed pex.domain.instance:Instance.Relocated pex.domain.instance:Instance.Repacked
pex.domain.node:Node pex.domain.node:Node.Registered pex.domain.node:Node.Resized pex.domain.node:Node.CapacityHeld
pex.domain.node:Node.HoldReleased pex.domain.node:Node.CapacityBooked pex.domain.node:Node.BookingReleased
pex.domain.node:Node.Lost pex.domain.node:Node.Returned
pex.domain.reservation:Reservation pex.domain.reservation:Reservation.Initiated
pex.domain.reservation:Reservation.ProposalSubmitted pex.domain.reservation:Reservation.Accepted
pex.domain.reservation:Reservation.CounterOffered pex.domain.reservation:Reservation.Rejected
pex.domain.reservation:Reservation.CounterAccepted pex.domain.reservation:Reservation.Declined
pex.domain.reservation:Reservation.Confirmed pex.domain.reservation:Reservation.OfferExpired
pex.domain.reservation:Reservation.Activated pex.domain.reservation:Reservation.Cancelled
pex.domain.reservation:Reservation.PlacementChanged pex.domain.reservation:Reservation.Expired
pex.domain.reservation:Reservation.Terminated pex.domain.reservation:Reservation.Released
pex.domain.reservation:Reservation.ExtensionOffered pex.domain.reservation:Reservation.ExtensionRejected
pex.domain.reservation:Reservation.ExtensionConfirmed pex.domain.reservation:Reservation.ExtensionDeclined
pex.domain.reservation:Reservation.ExtensionLapsed pex.domain.instance:Instance.Extended
pex.domain.quotas:QuotaAccount pex.domain.quotas:QuotaAccount.Opened pex.domain.quotas:QuotaAccount.OfferCharged
pex.domain.user:User pex.domain.user:User.Registered pex.domain.user:User.PasswordChanged
pex.domain.user:User.AdminGranted
pex.domain.user:User.CreditGranted pex.domain.user:User.CreditCharged pex.domain.user:User.CreditRefunded
pex.domain.catalogue:Catalogue.PoolUnreachable pex.domain.catalogue:Catalogue.PoolReachable
""".split()

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("topic", STORED_TOPICS)
def test_every_topic_pex_has_stored_still_resolves(topic):
    """If this fails, an event class (or its aggregate) was renamed or moved: register its
    old topic with eventsourcing.utils.register_topic (docs/events.md, "Changing events")."""
    cls = resolve_topic(topic)
    assert issubclass(cls, Aggregate) or hasattr(cls, "mutate")


def insert(app, events: list[dict]) -> None:
    app.recorder.insert_events(
        [StoredEvent(UUID(e["originator_id"]), e["originator_version"], e["topic"], e["state"].encode()) for e in events]
    )


def test_a_log_written_by_an_earlier_pex_is_read_folded_and_audited(memory_app):
    events = json.loads((GOLDEN / "v1-negotiation.json").read_text())["events"]
    rid = UUID("5d0fa0eb-90a8-f4e6-1dff-61b2cec6ad91")
    app = memory_app
    before = app.recorder.max_notification_id()
    stored = [e for e in events if not (e["topic"].endswith("Node.Registered") and e["originator_id"] == str(node_id("node1")))]
    insert(app, stored)  # the demo pool already registered node1 the same way

    reservation = app.get_reservation(rid)
    assert reservation.state == State.CONFIRMED and reservation.user_id == "alice"
    assert reservation.offer.terms.size == "XLARGE" and reservation.offer.placement[0].node == "node1"
    assert [s.reply for s in reservation.history] == ["PROPOSE", "ACCEPT", "CONFIRM", "REQUEST_SUCCESS"]
    assert app.get_instance(instance_id(rid, 0)).node == "node1"
    assert str(rid) in app.repository.get(node_id("node1")).allocations

    read_models = ReadModels(app)
    [row] = read_models.reservations(user_id="alice")
    assert (row.id, row.state, row.instances) == (rid, State.CONFIRMED, 1)
    report = Auditor(app, read_models).run()
    assert report.ok, report.render()
    assert report.events == before + len(stored)


# --- the policy, shown on an aggregate of this test --------------------------------------


class Lease(Aggregate):
    class Event(Aggregate.Event):
        at: datetime

    class Granted(Aggregate.Created):
        holder: str
        at: datetime

    class Extended(Event):
        """v1 had `hours` only; v2 added `reason` (old events: "unspecified"); v3 counts
        `minutes` instead of hours."""

        class_version = 3
        minutes: int
        reason: str

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            state["reason"] = "unspecified"

        @staticmethod
        def upcast_v2_v3(state: dict) -> None:
            state["minutes"] = state.pop("hours") * 60

        def apply(self, lease: Lease) -> None:
            lease.minutes += self.minutes
            lease.reasons.append(self.reason)

    def __init__(self, holder: str, at: datetime):
        self.holder, self.minutes, self.reasons = holder, 0, []


def stamp(when: str) -> dict:
    return {"_type_": "datetime_iso", "_data_": when}


def test_an_event_stored_in_an_older_shape_is_read_through_its_upcasters(memory_app, clock):
    lease_id = uuid4()
    at = stamp("2026-03-02T08:00:00+00:00")
    granted = {"timestamp": at, "originator_topic": get_topic(Lease), "at": at, "holder": "alice"}
    v1 = {"timestamp": at, "at": at, "hours": 2}  # no class_version: version 1
    v2 = {"timestamp": at, "at": at, "hours": 1, "reason": "overtime", "class_version": 2}
    insert(
        memory_app,
        [
            {"originator_id": str(lease_id), "originator_version": 1, "topic": get_topic(Lease.Granted), "state": json.dumps(granted)},
            {"originator_id": str(lease_id), "originator_version": 2, "topic": get_topic(Lease.Extended), "state": json.dumps(v1)},
            {"originator_id": str(lease_id), "originator_version": 3, "topic": get_topic(Lease.Extended), "state": json.dumps(v2)},
        ],
    )

    lease = memory_app.repository.get(lease_id)
    assert (lease.minutes, lease.reasons) == (180, ["unspecified", "overtime"])

    lease.trigger_event(Lease.Extended, minutes=30, reason="new", at=clock())
    memory_app.save(lease)
    newest = memory_app.recorder.select_events(lease_id, desc=True, limit=1)[0]
    assert json.loads(newest.state)["class_version"] == 3  # written in today's shape
    assert memory_app.repository.get(lease_id).minutes == 210


def test_a_renamed_event_class_is_found_under_its_old_topic_once_registered(memory_app):
    """Lease and Lease.Granted were once `pex.domain.permits:Permit` and `Permit.Issued`."""
    old_class, old_event = "pex.domain.permits:Permit", "pex.domain.permits:Permit.Issued"
    at = stamp("2026-03-02T08:00:00+00:00")
    permit_id = uuid4()
    issued = {"timestamp": at, "originator_topic": old_class, "at": at, "holder": "bob"}
    insert(memory_app, [{"originator_id": str(permit_id), "originator_version": 1, "topic": old_event, "state": json.dumps(issued)}])
    with pytest.raises(TopicError):
        memory_app.repository.get(permit_id)

    register_topic(old_class, Lease)  # in the module that defines the new names, at import
    register_topic(old_event, Lease.Granted)

    assert memory_app.repository.get(permit_id).holder == "bob"
