"""Credit (the paper's §5) through the service layer: an administrator grants it, with
PEX_CREDIT=on every CONFIRM is charged in the same save as its booking and refused beyond the
balance (recording nothing), every early end gives back the unused part, and `pex audit`
checks the ledger of credit."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from pex.application import NotFound
from pex.bootstrap import build_application
from pex.domain.user import CreditError, InsufficientCredit, User
from pex.domain.values import Reply, State, Terms
from pex.projections.audit import Auditor
from pex.projections.readmodels import ReadModels
from pex.settings import Settings
from tests.support import T0
from tests.support.api import CHEAP_PASSWORDS, PASSWORD

H = timedelta(hours=1)
ETCH = "PEX Debian Etch 4.0 Template"


@pytest.fixture
def credited(database_url, clock):
    """An application with PEX_CREDIT=on, alice a user and root an administrator."""
    application = build_application(Settings(database_url=database_url, passwords=CHEAP_PASSWORDS, credit=True), clock=clock)
    application.register_user("alice", PASSWORD)
    application.register_user("root", PASSWORD, is_admin=True)
    yield application
    application.close()


def offered(app, fixed=5, start=T0 + H, hours=4, user="alice"):
    """An ACCEPT of XLARGE × `fixed` for `hours`: 0.20 an instance-hour (5 × 4 h: 4.00)."""
    rid = app.initiate_reservation(user)
    assert app.submit_proposal(rid, Terms("XLARGE", ETCH, fixed, 0, start, start + hours * H)).reply == Reply.ACCEPT
    return rid


def audited(app):
    read_models = ReadModels(app)
    read_models.catch_up()
    report = Auditor(app, read_models).run()
    read_models.close()
    return report


def test_a_confirm_beyond_the_credit_is_refused_and_changes_nothing_until_credit_is_granted(credited):
    app = credited
    rid = offered(app)
    with pytest.raises(InsufficientCredit, match="costs 4.00, and your credit is 0.00"):
        app.confirm(rid)
    assert app.get_reservation(rid).state == State.ACCEPTED  # the offer still stands
    assert app.credit("alice").balance == Decimal("0.00") and app.credit("alice").entries == ()
    app.grant_credit("alice", "3.50", by="root", note="a start")
    with pytest.raises(InsufficientCredit) as refused:
        app.confirm(rid)
    assert (refused.value.price, refused.value.balance) == (Decimal("4.00"), Decimal("3.50"))
    app.grant_credit("alice", "1.00", by="root")
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    credit = app.credit("alice")
    assert credit.balance == Decimal("0.50") and credit.enforced
    assert [(e.kind, e.amount, e.balance) for e in credit.entries] == [
        ("grant", Decimal("3.50"), Decimal("3.50")),
        ("grant", Decimal("1.00"), Decimal("4.50")),
        ("charge", Decimal("-4.00"), Decimal("0.50")),
    ]
    assert credit.entries[0].by == "root" and credit.entries[0].note == "a start"
    assert credit.entries[2].reservation_id == rid
    report = audited(app)
    assert report.ok, report.violations
    assert "charges: 1" in report.checked["credit"]


def test_a_release_refunds_the_unused_part_and_a_deletion_before_the_start_all_of_it(credited, clock):
    app = credited
    app.grant_credit("alice", "10", by="root")
    released, deleted = offered(app, fixed=2), offered(app, fixed=2, start=T0 + 8 * H)  # 1.60 each
    assert app.confirm(released).reply == app.confirm(deleted).reply == Reply.REQUEST_SUCCESS
    assert app.credit("alice").balance == Decimal("6.80")
    clock.advance(2 * H)  # one of the four hours used: 0.40 of 1.60
    app.release(released, by="alice", user_id="alice")
    assert app.credit("alice").balance == Decimal("8.00")
    app.cancel(deleted)
    credit = app.credit("alice")
    assert credit.balance == Decimal("9.60")
    assert [(e.kind, e.amount) for e in credit.entries[-2:]] == [("refund", Decimal("1.20")), ("refund", Decimal("1.60"))]
    report = audited(app)
    assert report.ok, report.violations


def test_an_extension_is_charged_when_confirmed_refused_beyond_the_credit_and_refunded_pro_rata(credited, clock):
    app = credited
    app.grant_credit("alice", "2.00", by="root")
    rid = offered(app, fixed=2)  # 09:00-13:00 on two nodes: 1.60
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    assert app.extend(rid, T0 + 7 * H, user_id="alice").reply == Reply.ACCEPT  # two hours more: 0.80
    with pytest.raises(InsufficientCredit, match="the extension costs 0.80, and your credit is 0.40"):
        app.respond(rid, Reply.CONFIRM)
    standing = app.get_reservation(rid)
    assert standing.offer.terms.end == T0 + 5 * H and standing.extension is not None  # nothing was recorded
    assert app.credit("alice").balance == Decimal("0.40")

    app.grant_credit("alice", "1.00", by="root")
    assert app.respond(rid, Reply.CONFIRM).reply == Reply.REQUEST_SUCCESS
    credit = app.credit("alice")
    assert credit.balance == Decimal("0.60") and (credit.entries[-1].kind, credit.entries[-1].amount) == ("charge", Decimal("-0.80"))
    clock.advance(4 * H)  # 12:00: three of the six hours used, half of the 2.40 is due back
    app.release(rid, by="alice", user_id="alice")
    assert app.credit("alice").balance == Decimal("1.80")
    report = audited(app)
    assert report.ok, report.violations


def test_an_administrator_ending_a_running_reservation_refunds_what_is_left(credited, clock):
    app = credited
    app.grant_credit("alice", "4", by="root")
    rid = offered(app)
    app.confirm(rid)
    clock.advance(3 * H)  # two of its four hours used
    app.activate(rid)
    app.terminate(rid, by="root", reason="maintenance")
    assert app.credit("alice").balance == Decimal("2.00")
    assert audited(app).ok


def test_the_second_of_two_bookings_beyond_the_credit_is_refused(credited):
    app = credited
    app.grant_credit("alice", "5", by="root")
    first, second = offered(app, fixed=2, hours=5), offered(app, fixed=2, start=T0 + 8 * H, hours=5)  # 2.00 each... and 2.00
    third = offered(app, fixed=2, start=T0 + 16 * H, hours=5)
    assert app.confirm(first).reply == app.confirm(second).reply == Reply.REQUEST_SUCCESS
    with pytest.raises(InsufficientCredit):
        app.confirm(third)
    assert app.credit("alice").balance == Decimal("1.00")


@pytest.mark.parametrize("amount, field", [
    ("0", "amount"), ("1.005", "amount"), ("abc", "amount"), ("1e3", "amount"), (True, "amount"), (1.5, "amount"),
    ("2000000000", "amount"), ("-0.01", "amount"),
])
def test_a_malformed_grant_or_one_that_takes_more_than_the_balance_is_refused(credited, amount, field):
    with pytest.raises(CreditError) as refused:
        credited.grant_credit("alice", amount, by="root")
    assert refused.value.field == field
    assert credited.credit("alice").entries == ()


def test_credit_is_taken_back_never_below_zero_and_an_unknown_user_has_none(credited):
    app = credited
    app.grant_credit("alice", 7, by="root")
    assert app.grant_credit("alice", "-7.00", by="root").balance == Decimal("0.00")
    with pytest.raises(NotFound):
        app.grant_credit("nobody", "1", by="root")
    rid = offered(app, user="carol")  # never registered: no credit at all
    with pytest.raises(InsufficientCredit):
        app.confirm(rid)


def test_without_credit_enforced_bookings_are_not_charged_and_grants_still_count(memory_app):
    app = memory_app
    app.register_user("alice", PASSWORD)
    rid = offered(app)
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    assert app.grant_credit("alice", "2", by="root").balance == Decimal("2.00")
    app.cancel(rid)  # never charged: nothing to give back
    credit = app.credit("alice")
    assert not credit.enforced and [e.kind for e in credit.entries] == ["grant"]
    assert build_application(Settings(database_url="memory:", credit=True)).credit_enforced


def test_the_audit_finds_a_charge_that_is_not_the_confirmed_price_and_a_balance_below_zero(memory_app):
    app = memory_app
    app.credit_enforced = True
    app.register_user("alice", PASSWORD)
    app.grant_credit("alice", "5", by="root")
    rid = offered(app)
    app.confirm(rid)
    assert audited(app).ok
    user = app.repository.get(app._user("alice").id)
    # A charge recorded beside the log's honest one: another amount, a balance below zero.
    user.trigger_event(User.CreditCharged, reservation_id=offered(app, fixed=1, start=T0 + 10 * H), amount=Decimal("9.00"),
                       balance=Decimal("-8.00"), at=T0)
    app.save(user)
    report = audited(app)
    messages = [v.message for v in report.violations if v.promise == "credit"]
    assert any("below zero" in m for m in messages), messages
    assert any("not confirmed with it" in m for m in messages), messages


def test_the_audit_finds_an_extension_charged_without_its_confirmation(credited):
    app = credited
    app.grant_credit("alice", "5", by="root")
    rid = offered(app, fixed=2)
    app.confirm(rid)
    user = app.repository.get(app._user("alice").id)
    user.charge_extension(rid, Decimal("0.80"), T0)  # no extension confirmed with it
    app.save(user)
    messages = [v.message for v in audited(app).violations if v.promise == "credit"]
    assert any("not extended then" in m for m in messages), messages


def test_an_operator_grants_and_shows_credit_with_the_cli(tmp_path):
    from click.testing import CliRunner

    from pex.cli import main

    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    app = build_application(Settings(database_url=url, passwords=CHEAP_PASSWORDS))
    app.register_user("alice", PASSWORD)
    app.close()

    def run(*args: str, credit: str = "off"):
        result = CliRunner().invoke(main, list(args), env={"PEX_DATABASE_URL": url, "PEX_CREDIT": credit}, catch_exceptions=False)
        return result.exit_code, result.output

    code, granted = run("admin", "credit", "alice", "--grant", "12.5", "--note", "the course", "--by", "root")
    assert code == 0 and "alice: 12.50 USD of credit, not charged (PEX_CREDIT=off)" in granted
    assert "grant         12.50  balance        12.50  by root: the course" in granted
    code, shown = run("admin", "credit", "alice", credit="on")
    assert code == 0 and "12.50 USD of credit, charged on every confirmation" in shown
    code, refused = run("admin", "credit", "alice", "--grant", "-20")
    assert code != 0 and "at most that much can be taken back" in refused
    code, unknown = run("admin", "credit", "nobody", "--grant", "1")
    assert code != 0 and "no user 'nobody'" in unknown


def test_two_processes_confirming_on_one_credit_at_once_never_spend_it_twice(tmp_path, clock):
    """Process B has taken alice's price from the balance it loaded when process A confirms
    her other reservation (on another node, so no node's version tells them apart): B's save
    loses on alice's version, and B decides again on the balance A left."""
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    a = build_application(Settings(database_url=url, passwords=CHEAP_PASSWORDS, credit=True), clock=clock)
    b = build_application(Settings(database_url=url, passwords=CHEAP_PASSWORDS, credit=True), clock=clock)
    try:
        a.register_user("alice", PASSWORD)
        a.grant_credit("alice", "1.00", by="root")
        first, second = offered(a, fixed=1), offered(a, fixed=1)  # 0.80 each, on node1 and node2
        assert {n for r in (first, second) for n in a.get_reservation(r).offer.nodes} == {"node1", "node2"}
        charge, racing = b._charge, {"done": False}

        def b_charges_while_a_confirms(reservation, at):
            charged = charge(reservation, at)
            if not racing["done"]:
                racing["done"] = True
                assert a.confirm(first).reply == Reply.REQUEST_SUCCESS
            return charged

        b._charge = b_charges_while_a_confirms
        with pytest.raises(InsufficientCredit) as refused:
            b.confirm(second)
        assert refused.value.balance == Decimal("0.20")
        assert b.get_reservation(second).state == State.ACCEPTED
        credit = b.credit("alice")
        assert credit.balance == Decimal("0.20") and [e.kind for e in credit.entries] == ["grant", "charge"]
        assert audited(b).ok
    finally:
        a.close()
        b.close()
