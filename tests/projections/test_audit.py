"""`pex audit` passes on honest histories and catches what it promises to catch: overbooking
written past the Node invariant, illegal protocol moves, events altered or removed in the
database, read models that drifted, instances running outside their reservations."""

from __future__ import annotations

import gc
from datetime import timedelta
from uuid import uuid4

import pytest
from click.testing import CliRunner

from pex.cli import main
from pex.domain import Node, Reservation, Resources
from pex.domain.instance import Instance
from pex.domain.node import node_id
from pex.projections.audit import Auditor
from pex.projections.history import reservation_history
from pex.projections.readmodels import ReadModels
from tests.projections.histories import FIXED_HISTORY, H, play

XLARGE = Resources(4, 3584, 60)


def audit(app, **options):
    read_models = ReadModels(app)
    read_models.catch_up()
    return Auditor(app, read_models, **options).run()


def messages(report, promise):
    return [v.message for v in report.violations if v.promise == promise]


def execute(app, sqlite_statement: str, postgres_statement: str, params=()):
    """Change the store behind the application's back, as someone with database access might."""
    module = type(app.recorder).__module__
    statement = sqlite_statement if module.endswith("sqlite") else postgres_statement
    with app.recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(statement, params)
        try:
            return cursor.fetchall()
        except Exception:
            return None


def stored_event(app, topic_suffix: str, last: bool = False):
    """(notification id, state) of the first (or last) stored event whose topic ends so."""
    order = "DESC" if last else "ASC"
    rows = execute(
        app,
        f"SELECT rowid AS id, state FROM stored_events WHERE topic LIKE ? ORDER BY rowid {order} LIMIT 1",
        f"SELECT notification_id AS id, state FROM pex_events WHERE topic LIKE %s ORDER BY notification_id {order} LIMIT 1",
        ("%" + topic_suffix,),
    )
    row = rows[0]
    return row["id"], bytes(row["state"])


def test_an_honest_history_passes(app, clock):
    play(app, clock, FIXED_HISTORY)
    report = audit(app)
    assert report.ok, report.render()
    assert report.events == app.recorder.max_notification_id()
    assert {"capacity", "bookings", "protocol", "versions", "ledger", "read models"} <= set(report.checked)
    assert report.reservation_states["CANCELLED"] == 1 and report.bookings >= 3


def test_an_audit_gives_the_collector_back_what_it_kept_from_it(memory_app, clock):
    """While it runs, the audit keeps what it has rebuilt out of the collector's full passes
    (gc.freeze after each page); a process that audits and goes on must get all of it back."""
    play(memory_app, clock, FIXED_HISTORY)
    read_models = ReadModels(memory_app)
    read_models.catch_up()
    auditor = Auditor(memory_app, read_models)
    auditor.page_size = 5  # several pages of the log, each frozen after it is folded
    assert gc.get_freeze_count() == 0
    report = auditor.run()
    assert report.ok, report.render()
    assert report.events > 3 * auditor.page_size
    assert gc.get_freeze_count() == 0


def test_an_overbooking_written_past_the_node_invariant_is_caught(memory_app, clock):
    play(memory_app, clock, [("propose", "alice", "XLARGE", 5, 0, 2, 2, None), ("confirm", 0)])  # the pool is full
    node = memory_app.repository.get(node_id("node1"))
    start = clock() + 2 * H
    intruder = uuid4()
    node.trigger_event(
        Node.CapacityBooked, reservation_id=intruder, start=start, end=start + H, instances=1, per_instance=XLARGE, at=clock()
    )
    memory_app.save(node)

    report = audit(memory_app)

    capacity = messages(report, "capacity")
    assert any("node1 was over capacity when it took a booking" in m for m in capacity)
    assert any("node1 is booked above capacity from" in m and "8 CPU" in m for m in capacity)
    assert any(f"reservation {str(intruder).upper()[:8]}" in m and "without a confirmation" in m for m in messages(report, "bookings"))
    evidence = next(v for v in report.violations if "booked above capacity" in v.message).evidence
    assert {e.topic.rpartition(":")[2] for e in evidence} == {"Node.CapacityBooked"} and len(evidence) == 2


def test_an_illegal_protocol_move_is_caught(memory_app, clock):
    rid = memory_app.initiate_reservation("mallory")
    reservation = memory_app.repository.get(rid)
    reservation.trigger_event(Reservation.Confirmed, instance_ids=(), at=clock())  # confirm what was never offered
    memory_app.save(reservation)

    report = audit(memory_app)

    protocol = messages(report, "protocol")
    assert any("confirm is not a legal move while INITIATED" in m for m in protocol)
    assert any("lapsed" in m for m in protocol)
    assert not report.ok


def test_confirming_a_lapsed_offer_and_an_accept_that_changes_the_terms_are_caught(memory_app, clock):
    play(memory_app, clock, [("propose", "alice", "SMALL", 1, 0, 2, 1, None)])
    [r] = memory_app.list_reservations()
    reservation = memory_app.repository.get(r.id)
    reservation.trigger_event(Reservation.Confirmed, instance_ids=(), at=r.valid_until + timedelta(seconds=1))
    memory_app.save(reservation)
    rid = memory_app.initiate_reservation("alice")
    reservation = memory_app.repository.get(rid)
    reservation.submit(r.proposal, r.offer.per_instance, clock())
    reservation.accept(r.offer.__class__(r.offer.terms.but(start=r.offer.terms.start + H), r.offer.per_instance, ()), clock() + H, clock())
    memory_app.save(reservation)

    protocol = messages(audit(memory_app), "protocol")

    assert any("confirm of an offer that lapsed" in m for m in protocol)
    assert any("ACCEPT changed the proposed terms" in m for m in protocol)


@pytest.mark.parametrize("database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_an_event_altered_in_the_database_is_caught(app, clock):
    play(app, clock, FIXED_HISTORY[:6])
    ReadModels(app).catch_up()  # seals what is there
    altered, state = stored_event(app, "Node.CapacityBooked")
    forged = state.replace(b'"instances":1', b'"instances":0', 1)
    assert forged != state
    execute(
        app,
        "UPDATE stored_events SET state = ? WHERE rowid = ?",
        "UPDATE pex_events SET state = %s WHERE notification_id = %s",
        (forged, altered),
    )

    report = Auditor(app, ReadModels(app, create_tables=False)).run()

    assert f"event #{altered} was altered after it was sealed: what is stored differs from the ledger's digest" in messages(report, "ledger")
    assert any("differs from the log" in m for m in messages(report, "read models"))


@pytest.mark.parametrize("database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_an_event_removed_from_the_database_is_caught(app, clock):
    play(app, clock, FIXED_HISTORY[:6])
    ReadModels(app).catch_up()
    removed, _ = stored_event(app, "Reservation.CounterAccepted")
    last, _ = stored_event(app, "", last=True)
    for victim in (removed, last):
        execute(app, "DELETE FROM stored_events WHERE rowid = ?", "DELETE FROM pex_events WHERE notification_id = %s", (victim,))

    report = Auditor(app, ReadModels(app, create_tables=False)).run()

    ledger = messages(report, "ledger")
    assert any(m.startswith(f"event #{removed} (Reservation.CounterAccepted v") and "was removed from the log" in m for m in ledger)
    assert any(m.startswith(f"event #{last} ") and "was removed" in m for m in ledger)
    assert any("an event is missing" in m for m in messages(report, "versions"))


def test_an_event_that_no_longer_decodes_is_reported_not_fatal(tmp_path, clock):
    from pex.bootstrap import build_application
    from pex.settings import Settings

    app = build_application(Settings(database_url=f"sqlite:///{tmp_path}/pex.sqlite3"), clock=clock)
    play(app, clock, FIXED_HISTORY[:2])
    ReadModels(app).catch_up()
    victim, _ = stored_event(app, "Reservation.Confirmed")
    execute(app, "UPDATE stored_events SET state = ? WHERE rowid = ?", "", (b"{not json", victim))

    report = Auditor(app, ReadModels(app, create_tables=False)).run()

    assert any(m.startswith(f"event #{victim} cannot be decoded") for m in messages(report, "decoding"))
    assert any(f"event #{victim} was altered" in m for m in messages(report, "ledger"))
    app.close()


def test_a_drifted_read_model_and_an_edited_ledger_are_caught(tmp_path, clock):
    from pex.bootstrap import build_application
    from pex.settings import Settings

    app = build_application(Settings(database_url=f"sqlite:///{tmp_path}/pex.sqlite3"), clock=clock)
    play(app, clock, FIXED_HISTORY[:2])
    ReadModels(app).catch_up()
    execute(app, "UPDATE pex_view_reservations SET state = 'CANCELLED'", "")
    execute(app, "UPDATE pex_ledger SET event_sha256 = ? WHERE notification_id = 3", "", ("ab" * 32,))

    report = Auditor(app, ReadModels(app, create_tables=False)).run()

    assert any("the stored reservations view" in m and ".state: stored 'CANCELLED', rebuilt 'CONFIRMED'" in m for m in messages(report, "read models"))
    ledger = messages(report, "ledger")
    assert "the ledger's chain breaks at #3: the ledger itself was edited" in ledger
    assert any("event #3 was altered" in m for m in ledger)
    app.close()


def test_a_log_rewritten_together_with_its_ledger_is_caught_by_a_chain_written_down_before(tmp_path, clock):
    from pex.bootstrap import build_application
    from pex.settings import Settings

    app = build_application(Settings(database_url=f"sqlite:///{tmp_path}/pex.sqlite3"), clock=clock)
    play(app, clock, FIXED_HISTORY[:6])
    first = audit(app)
    written_down = (first.last_id, first.chain)
    victim, state = stored_event(app, "Reservation.Initiated", last=True)  # bob's: make it eve's
    assert b'"bob"' in state
    execute(app, "UPDATE stored_events SET state = ? WHERE rowid = ?", "", (state.replace(b'"bob"', b'"eve"'), victim))
    ReadModels(app).rebuild(reseal=True, names=["ledger", "reservations", "instances", "calendar"])  # a thorough forger

    assert Auditor(app, ReadModels(app)).run().ok
    report = Auditor(app, ReadModels(app), expect_chain=written_down).run()
    assert any("not the" in m and "the log was rewritten" in m for m in messages(report, "ledger"))
    app.close()


def test_until_audits_the_log_as_it_stood_at_that_time(memory_app, clock):
    play(memory_app, clock, FIXED_HISTORY[:6])
    midway, events_then = clock(), memory_app.recorder.max_notification_id()
    clock.advance(H)
    play(memory_app, clock, FIXED_HISTORY[6:])
    report = audit(memory_app, until=midway)
    assert report.ok, report.render()
    assert report.events == events_then
    assert audit(memory_app, until_id=10).events == 10


# Instance events of the kind the Xen work adds (the audit follows them through their apply).
class Started(Instance.Event):
    node: str

    def apply(self, instance: Instance) -> None:
        instance.status, instance.node = "RUNNING", self.node


class Stopped(Instance.Event):
    def apply(self, instance: Instance) -> None:
        instance.status = "HALTED"


class Migrated(Instance.Event):
    node: str
    reason: str

    def apply(self, instance: Instance) -> None:
        instance.node = self.node


def run_instance(app, instance_id, at, node=None, then_stop_at=None, migrate_to=None):
    instance = app.repository.get(instance_id)
    instance.trigger_event(Started, node=node or instance.node, at=at)
    if migrate_to:
        instance.trigger_event(Migrated, node=migrate_to, reason="node1 lost", at=at + timedelta(minutes=1))
    if then_stop_at:
        instance.trigger_event(Stopped, at=then_stop_at)
    app.save(instance)


def test_instances_must_run_inside_their_reservation_on_a_booked_node_or_say_why(memory_app, clock):
    play(memory_app, clock, [("propose", "alice", "SMALL", 4, 0, 2, 2, None), ("confirm", 0)])
    first, second, third, fourth = memory_app.list_instances()
    start, end = first.start, first.end
    run_instance(memory_app, first.id, start, then_stop_at=end)  # as promised
    run_instance(memory_app, second.id, start - H, then_stop_at=end)  # too early
    run_instance(memory_app, third.id, start, node="node5", then_stop_at=end)  # on a node not booked
    run_instance(memory_app, fourth.id, start, migrate_to="node4", then_stop_at=end)  # moved, and said why

    report = audit(memory_app)

    problems = messages(report, "instances")
    assert report.instances_ran == 4
    assert len(problems) == 2, problems
    assert any(second.name in m and "before its reservation's start" in m for m in problems)
    assert any(third.name in m and "ran on node5, where its reservation had no booking then" in m for m in problems)
    assert any(fourth.name in m and "explained by" in m for m in report.explained)


def test_an_instance_still_running_long_after_its_end_is_caught(memory_app, clock):
    play(memory_app, clock, [("propose", "alice", "SMALL", 1, 0, 2, 2, None), ("confirm", 0)])
    [instance] = memory_app.list_instances()
    run_instance(memory_app, instance.id, instance.start)
    clock.set(instance.end + timedelta(hours=1))
    play(memory_app, clock, [("wait", 2)])  # the log goes on: the reservation expires

    problems = messages(audit(memory_app), "instances")
    assert any("after its reservation's end" in m for m in problems)


def test_a_stranded_instance_booked_again_on_its_returned_node_is_a_move_not_a_booking_without_confirmation(
        memory_app, clock):
    # Found by tests/reliability/test_xen_faults.py: the Scheduler's Moved from node3 back to
    # node3 changes no node, and was taken for a booking made without a confirmation.
    play(memory_app, clock, [("propose", "alice", "XLARGE", 5, 0, 2, 2, None), ("confirm", 0)])  # the pool is full
    instance = next(i for i in memory_app.list_instances() if i.node == "node3")
    clock.advance(H)
    memory_app.mark_node_lost("node3")
    memory_app.lose_instances("node3", [instance.id])
    assert memory_app.replace_instances([instance.id]) == (0, 1)  # nowhere else has room
    clock.advance(H / 2)
    memory_app.mark_node_returned("node3")
    assert memory_app.replace_instances([instance.id]) == (1, 0)  # booked on node3 again

    report = audit(memory_app)

    assert report.ok, report.render()


def test_history_tells_a_negotiation_as_it_happened(memory_app, clock):
    play(memory_app, clock, FIXED_HISTORY[:6])
    [_, rid] = [r.id for r in memory_app.list_reservations()][:2]
    lines = [(line.who, line.what) for line in reservation_history(memory_app, rid)]
    assert lines[:2] == [("user", "INITIATE"), ("user", "PROPOSE")]
    assert ("provider", "COUNTER") in lines and ("provider", "CONFIRM_REQUEST") in lines
    holds = [i for i, (_, what) in enumerate(lines) if what == "HOLD"]
    counter = lines.index(("provider", "COUNTER"))
    assert holds and holds[0] < counter  # the capacity is held as the counter-offer is made
    assert lines.index(("user", "CONFIRM")) < [i for i, (_, what) in enumerate(lines) if what == "BOOK"][0]
    assert lines[-1] == ("provider", "REQUEST_SUCCESS") and sum(what == "Scheduled" for _, what in lines) == 2


# --- the commands, on the stores `make run` and production use ---------------------------


def run(runner, *args, env=None):
    result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def a_user(runner, env=None) -> str:
    """A registered user to negotiate for (`pex negotiate` refuses anyone else)."""
    name = f"op-{uuid4().hex[:8]}"
    added = runner.invoke(main, ["users", "add", name, "--password-stdin"], input="correct horse battery\n",
                          env={**(env or {}), "PEX_PASSWORD_PROFILE": "cheapest"}, catch_exceptions=False)
    assert added.exit_code == 0, added.output
    return name


def test_audit_replay_and_history_on_the_sqlite_database_make_run_uses(monkeypatch, tmp_path):
    monkeypatch.delenv("PEX_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # `make run` keeps its store at ./var/pex.sqlite3
    runner = CliRunner()
    assert run(runner, "init")[0] == 0
    user = a_user(runner)
    code, out = run(runner, "negotiate", "--user", user, "--type", "XLARGE", "--instances", "2", "--start", "now+1h",
                    "--duration", "2h", "--confirm")
    assert code == 0 and "REQUEST_SUCCESS" in out
    rid = out.split()[1].rstrip(":")
    assert (tmp_path / "var" / "pex.sqlite3").exists()

    code, out = run(runner, "replay")
    assert code == 0 and "rebuilt reservations, instances, calendar" in out
    code, out = run(runner, "audit")
    assert code == 0, out
    assert "no violations" in out and "✓ ledger" in out and "events/s" in out
    code, out = run(runner, "replay", "--view", "calendar")
    assert code == 0 and "rebuilt calendar" in out
    code, out = run(runner, "replay", "--view", "ledger")
    assert code != 0 and "--reseal" in out

    code, out = run(runner, "history", rid)
    assert code == 0 and "PROPOSE" in out and "REQUEST_SUCCESS" in out and "BOOK" in out

    import sqlite3

    with sqlite3.connect(tmp_path / "var" / "pex.sqlite3") as db:
        db.execute("UPDATE stored_events SET state = replace(state, 'XLARGE', 'SMALL') WHERE topic LIKE '%ProposalSubmitted'")
    code, out = run(runner, "audit")
    assert code == 1
    assert "was altered after it was sealed" in out and "✗ ledger" in out


@pytest.mark.postgres
def test_audit_and_replay_on_postgresql(postgres_url):
    runner = CliRunner()
    env = {"PEX_DATABASE_URL": postgres_url}
    assert run(runner, "init", env=env)[0] == 0
    code, out = run(runner, "negotiate", "--user", a_user(runner, env), "--type", "SMALL", "--instances", "3", "--confirm", env=env)
    assert code == 0 and "REQUEST_SUCCESS" in out
    assert run(runner, "replay", env=env)[0] == 0
    code, out = run(runner, "audit", "--json", env=env)
    assert code == 0 and '"ok": true' in out
    assert "password" not in out

    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:  # auditors get a role that only reads
        db.execute("CREATE ROLE auditor LOGIN")
        db.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO auditor")
    as_auditor = {"PEX_DATABASE_URL": postgres_url.replace("://pex@", "://auditor@", 1)}
    assert "://auditor@" in as_auditor["PEX_DATABASE_URL"]
    code, out = run(runner, "audit", env=as_auditor)
    assert code == 0 and "✓ ledger" in out and "✓ read models" in out, out

    with psycopg.connect(postgres_url) as db:
        db.execute("DELETE FROM pex_events WHERE notification_id = (SELECT min(notification_id) FROM pex_events WHERE topic LIKE '%Instance.Scheduled')")
    code, out = run(runner, "audit", env=env)
    assert code == 1 and "was removed from the log after it was sealed" in out
