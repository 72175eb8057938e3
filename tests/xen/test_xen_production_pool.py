"""A pool as it is in production: https with the pool's own certificates, members that
redirect to the master, a master that moves or dies, sessions that expire and event tokens
that outlive the xapi that issued them. The real `XenAPI` client against the simulator."""

from __future__ import annotations

import logging
import threading

import pytest
import XenAPI
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from pex.adapters.xen.changes import VmPowerStateChanged, WatcherResynced
from pex.adapters.xen.errors import XenError, XenTlsError, XenTransportError
from pex.adapters.xen.records import PowerState
from pex.adapters.xen.simulator import run_simulator, serve
from pex.adapters.xen.transport import TlsPolicy, normalized_fingerprint, transport_for
from pex.bootstrap import build_worker_process
from pex.cli import main
from pex.settings import Settings, SettingsError, WorkerSettings
from tests.support import waiting
from tests.support.certificates import CertificateAuthority, self_signed
from tests.support.xen import PASSWORD, TEMPLATE, USERNAME

pytestmark = pytest.mark.xen

ADDRESSES = [f"127.0.0.{i}" for i in range(1, 6)]  # the paper hosts' addresses


def create(dispatcher, instance_id, host="node1"):
    return dispatcher.create_vm(instance_id, f"pex-{instance_id}", TEMPLATE, host, 1, 768, 10)


def of_type(changes, cls):
    return [c for c in changes if isinstance(c, cls)]


def login(url, **options):
    session = XenAPI.Session(url, **options)
    session.xenapi.login_with_password(USERNAME, PASSWORD, "1.2", "pex-tests")
    return session


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority(tmp_path)


@pytest.fixture
def pool(make_pool):
    """Five hosts, each listening on its own address: node1 is the master."""
    return make_pool()


@pytest.fixture
def make_pool():
    running = []

    def make(**options):
        context = run_simulator(5, members=True, guest_ip_delay=0.05, seed=3, **options)
        running.append(context)
        return context.__enter__()

    yield make
    for context in running:
        context.__exit__(None, None, None)


@pytest.fixture
def connect(make_dispatcher):
    def connect_to(simulator, host="node1", **options):
        return make_dispatcher(url=simulator.url_of(host), **options)

    return connect_to


class TestCertificates:
    def test_a_certificate_signed_by_the_configured_ca_is_trusted(self, make_pool, connect, ca):
        simulator = make_pool(tls=ca.issue("pool", ADDRESSES).files)
        dispatcher = connect(simulator, tls=TlsPolicy(ca_file=str(ca.pem)))
        assert simulator.url.startswith("https://")
        assert [h.name for h in dispatcher.hosts()] == ["node1", "node2", "node3", "node4", "node5"]

    def test_an_unknown_ca_is_refused_with_what_to_configure(self, make_pool, connect, ca):
        simulator = make_pool(tls=ca.issue("pool", ADDRESSES).files)
        with pytest.raises(XenTlsError) as refused:
            connect(simulator).hosts()  # the system's CAs never signed it
        assert "PEX_XEN_CA_FILE" in str(refused.value) and "PEX_XEN_CERT_SHA256" in str(refused.value)

    def test_a_certificate_for_another_address_is_refused(self, make_pool, connect, ca):
        simulator = make_pool(tls=ca.issue("elsewhere", ["192.0.2.1"]).files)
        with pytest.raises(XenTlsError):
            connect(simulator, tls=TlsPolicy(ca_file=str(ca.pem))).hosts()

    def test_a_pinned_self_signed_certificate_is_trusted_and_any_other_refused(self, make_pool, connect, tmp_path):
        mine = self_signed(tmp_path, "node1", ADDRESSES)
        other = self_signed(tmp_path, "impostor", ADDRESSES)
        simulator = make_pool(tls=mine.files)
        assert len(connect(simulator, tls=TlsPolicy(fingerprints=(mine.sha256,))).hosts()) == 5
        with pytest.raises(XenTlsError) as refused:
            connect(simulator, tls=TlsPolicy(fingerprints=(other.sha256,))).hosts()
        assert normalized_fingerprint(mine.sha256) in str(refused.value)

    def test_ignoring_certificates_works_but_is_logged_as_a_risk(self, make_pool, connect, tmp_path, caplog):
        simulator = make_pool(tls=self_signed(tmp_path, "node1", ADDRESSES).files)
        with caplog.at_level(logging.WARNING, logger="pex.adapters.xen.session"):
            dispatcher = connect(simulator, ignore_ssl=True)
        assert len(dispatcher.hosts()) == 5
        assert any("NOT verified" in record.getMessage() for record in caplog.records)

    def test_every_host_has_its_own_certificate_and_the_pins_follow_the_master(self, make_pool, connect, tmp_path):
        issued = {f"node{i}": self_signed(tmp_path, f"node{i}", [ADDRESSES[i - 1]]) for i in range(1, 6)}
        simulator = make_pool(tls={name: i.files for name, i in issued.items()})
        all_pins = connect(simulator, tls=TlsPolicy(fingerprints=tuple(i.sha256 for i in issued.values())))
        first_only = connect(simulator, tls=TlsPolicy(fingerprints=(issued["node1"].sha256,)))
        assert len(all_pins.hosts()) == len(first_only.hosts()) == 5

        simulator.control.switch_master("node2")

        assert len(all_pins.hosts()) == 5 and all_pins.url == simulator.url_of("node2")
        with pytest.raises(XenTlsError):  # node2's certificate was never pinned: do not trust it
            first_only.hosts()

    @pytest.mark.parametrize("text", ["", "abc", "zz" * 32, "ab:" * 31 + "ab:cd"])
    def test_fingerprints_that_are_not_sha256_are_refused(self, text):
        with pytest.raises(ValueError):
            TlsPolicy(fingerprints=(text,))

    @given(st.binary(min_size=32, max_size=32), st.booleans(), st.booleans())
    def test_any_digest_reads_the_same_in_every_spelling(self, digest, colons, upper):
        spelled = (":" if colons else "").join(f"{b:02x}" for b in digest)
        assert normalized_fingerprint(spelled.upper() if upper else spelled) == digest.hex()

    def test_fingerprints_are_read_with_or_without_colons(self, tmp_path):
        issued = self_signed(tmp_path, "node1", ADDRESSES)
        plain = issued.sha256.replace(":", "").lower()
        assert TlsPolicy(fingerprints=(issued.sha256,)) == TlsPolicy(fingerprints=(plain,))

    def test_ignoring_contradicts_a_ca_or_a_pin(self, ca):
        with pytest.raises(ValueError):
            TlsPolicy(ca_file=str(ca.pem), ignore=True)


class TestMembers:
    def test_a_member_answers_host_is_slave_with_the_master_address(self, pool):
        with pytest.raises(XenAPI.Failure) as redirected:
            login(pool.url_of("node3"))
        assert redirected.value.details == ["HOST_IS_SLAVE", "127.0.0.1"]

    def test_a_member_turns_away_calls_with_a_session_of_the_master(self, pool):
        session = login(pool.url_of("node1"))
        member = XenAPI.Session(pool.url_of("node4"))
        get_all = getattr(member, "host.get_all")  # the raw envelope: no re-login by the client
        assert get_all(session.handle) == {"Status": "Failure", "ErrorDescription": ["HOST_IS_SLAVE", "127.0.0.1"]}
        assert get_all("OpaqueRef:unknown")["ErrorDescription"] == ["SESSION_INVALID", "OpaqueRef:unknown"]

    def test_pex_pointed_at_a_member_works_on_the_master_and_remembers_it(self, pool, connect):
        dispatcher = connect(pool, host="node4")
        assert len(dispatcher.hosts()) == 5
        assert dispatcher.url == pool.url_of("node1")
        assert dispatcher.connection.members == tuple(ADDRESSES)


class TestMasterChanges:
    def test_a_designated_new_master_is_followed_and_nothing_is_lost(self, pool, connect):
        dispatcher = connect(pool)
        create(dispatcher, "stays")
        pool.control.switch_master("node2")  # node1 is a member now; xapi restarted on node2

        dispatcher.hard_shutdown("stays")

        assert dispatcher.url == pool.url_of("node2")
        assert dispatcher.power_state("stays") == PowerState.HALTED

    def test_a_call_the_old_master_turned_away_runs_once_on_the_new_one(self, pool, connect):
        dispatcher = connect(pool)
        dispatcher.hosts()
        pool.control.switch_master("node2")

        create(dispatcher, "fresh")  # its first call meets the old master

        assert [vm["pex_instance"] for vm in pool.control.state()["vms"]] == ["fresh"]

    def test_a_master_that_died_is_replaced_by_the_member_that_took_over(self, pool, connect):
        dispatcher = connect(pool)
        create(dispatcher, "survivor", host="node2")
        pool.control.switch_master("node3", old_master_gone=True)  # node1 refuses connections now

        assert dispatcher.power_state("survivor") == PowerState.RUNNING
        assert dispatcher.url == pool.url_of("node3")
        assert {h.name: h.live for h in dispatcher.hosts()}["node1"] is False

    def test_a_process_starting_while_the_master_is_down_finds_it_among_the_configured_members(
            self, pool, tmp_path):
        pool.control.switch_master("node5", old_master_gone=True)
        worker_settings = WorkerSettings.from_env({
            "PEX_XEN_URL": pool.url_of("node5").replace("127.0.0.5", "127.0.0.1"),  # the master it was told of
            "PEX_XEN_USERNAME": USERNAME, "PEX_XEN_PASSWORD": PASSWORD, "PEX_XEN_MEMBERS": "127.0.0.2, 127.0.0.3"})
        worker = build_worker_process(Settings(database_url=f"sqlite:///{tmp_path}/pex.sqlite3"), worker_settings)
        try:
            assert len(worker.dispatcher.hosts()) == 5  # node1 refused; node2 named node5
            assert worker.dispatcher.url == pool.url_of("node5")
        finally:
            worker.dispatcher.close()
            worker.app.close()

    def test_a_pool_whose_every_host_is_unreachable_is_a_transport_error(self, pool, connect):
        dispatcher = connect(pool)
        dispatcher.hosts()
        for host in ["node1", "node2", "node3", "node4", "node5"]:
            pool.silence_host(pool.control.host_ref(host))
        with pytest.raises(XenTransportError):
            dispatcher.hosts()

    def test_the_watcher_follows_the_master_and_resyncs_there(self, pool, connect, watch_for):
        dispatcher = connect(pool)
        create(dispatcher, "watched")
        with dispatcher.watcher(timeout=0.3, retry_delay=0.01) as watcher:
            watcher.poll()
            pool.control.switch_master("node5")
            dispatcher.hard_shutdown("watched")

            changes = watch_for(watcher, lambda c: isinstance(c, VmPowerStateChanged))

        assert of_type(changes, WatcherResynced)
        (halted,) = of_type(changes, VmPowerStateChanged)
        assert (halted.previous, halted.power_state) == (PowerState.RUNNING, PowerState.HALTED)
        assert watcher.connection.url == pool.url_of("node5")

    def test_an_event_from_waiting_on_the_old_master_ends_when_the_master_moves(self, pool, connect):
        dispatcher = connect(pool)
        create(dispatcher, "waiting")
        waiting.eventually(lambda: dispatcher.ip_address("waiting"))  # nothing left to report: the next call waits
        with dispatcher.watcher(timeout=60.0, retry_delay=0.01) as watcher:
            watcher.poll()
            outcome: list = []
            poller = threading.Thread(target=lambda: outcome.append(watcher.poll()))
            poller.start()
            waiting.eventually(lambda: pool.control.state()["waiting_event_calls"] == 1)

            pool.control.switch_master("node2")
            poller.join()  # long before its 60 s: the old master dropped the call

            assert outcome == [[]] and watcher.token == ""
            dispatcher.hard_shutdown("waiting")
            changes = watcher.poll()
        assert changes[0] == WatcherResynced("the pool master changed")
        assert [c.power_state for c in of_type(changes, VmPowerStateChanged)] == [PowerState.HALTED]

    def test_the_watcher_finds_the_new_master_when_the_old_one_died(self, pool, connect):
        dispatcher = connect(pool)
        create(dispatcher, "orphan", host="node4")
        with dispatcher.watcher(timeout=0.3, retry_delay=0.01) as watcher:
            watcher.poll()
            pool.control.switch_master("node4", old_master_gone=True)
            with pytest.raises(XenTransportError):
                watcher.poll()  # its connection to node1 is gone
            dispatcher.hard_shutdown("orphan")

            changes = watcher.poll()

        assert changes[0] == WatcherResynced("reconnected after a transport error")
        assert [c.power_state for c in of_type(changes, VmPowerStateChanged)] == [PowerState.HALTED]


class TestSessions:
    def test_an_expired_session_is_renewed_by_one_login_and_the_call_repeated(self, simulator, dispatcher):
        create(dispatcher, "renewed")
        simulator.control.expire_sessions()

        dispatcher.hard_shutdown("renewed")

        assert dispatcher.power_state("renewed") == PowerState.HALTED
        assert simulator.control.state()["sessions"] == 1  # this thread's, logged in once more

    def test_a_session_that_cannot_be_renewed_fails_cleanly(self, simulator, dispatcher):
        dispatcher.hosts()
        simulator.control.expire_sessions()
        simulator.control.fail_next("session.login_with_password", ["SESSION_AUTHENTICATION_FAILED", "root", "x"])
        with pytest.raises(XenError) as refused:
            dispatcher.hosts()
        assert refused.value.code == "SESSION_AUTHENTICATION_FAILED"
        assert len(dispatcher.hosts()) == 5  # and the next call logs in afresh


class TestEventTokens:
    def test_a_token_from_before_a_restart_blocks_and_reports_nothing(self, simulator, xenapi):
        token = xenapi.event_from(["vm"], "", 1.0)["token"]
        simulator.control.restart_xapi()
        session = login(simulator.url)
        session.xenapi.VM.set_name_description(session.xenapi.VM.get_all()[0], "changed")

        batch = session.xenapi.event_from(["vm"], token, 0.2)

        assert (batch["events"], batch["token"]) == ([], token)  # what xapi does: the change is missed

    def test_the_watcher_resyncs_after_a_restart_and_reports_what_changed(self, simulator, dispatcher, watcher):
        create(dispatcher, "restarted")
        watcher.poll()
        simulator.control.restart_xapi()
        dispatcher.hard_shutdown("restarted")

        changes = watcher.poll()

        assert changes[0] == WatcherResynced("the session was renewed")
        assert [c.power_state for c in of_type(changes, VmPowerStateChanged)] == [PowerState.HALTED]

    def test_events_lost_resyncs(self, simulator, dispatcher, watcher):
        create(dispatcher, "lost")
        watcher.poll()
        simulator.control.fail_next("event.from", ["EVENTS_LOST"])
        assert watcher.poll() == [] and watcher.token == ""
        dispatcher.hard_shutdown("lost")

        changes = watcher.poll()

        assert changes[0] == WatcherResynced("xapi answered EVENTS_LOST")
        assert [c.power_state for c in of_type(changes, VmPowerStateChanged)] == [PowerState.HALTED]


class TestSettings:
    def test_the_worker_settings_carry_the_certificate_checks_to_the_dispatcher(self, make_pool, tmp_path):
        issued = {f"node{i}": self_signed(tmp_path, f"node{i}", [ADDRESSES[i - 1]]) for i in range(1, 6)}
        simulator = make_pool(tls={name: i.files for name, i in issued.items()})
        pins = " , ".join(i.sha256 for i in issued.values())  # as pasted from `openssl x509 -fingerprint`
        worker_settings = WorkerSettings.from_env({
            "PEX_XEN_URL": simulator.url_of("node3"), "PEX_XEN_USERNAME": USERNAME, "PEX_XEN_PASSWORD": PASSWORD,
            "PEX_XEN_CERT_SHA256": pins})
        worker = build_worker_process(Settings(database_url=f"sqlite:///{tmp_path}/pex.sqlite3"), worker_settings)
        try:
            assert len(worker.dispatcher.hosts()) == 5
            assert worker.dispatcher.url == simulator.url_of("node1")
        finally:
            worker.dispatcher.close()
            worker.app.close()

    def test_a_ca_file_is_read_and_must_exist(self, ca, tmp_path):
        assert WorkerSettings.from_env({"PEX_XEN_CA_FILE": str(ca.pem)}).xen_ca_file == str(ca.pem)
        with pytest.raises(SettingsError, match="PEX_XEN_CA_FILE"):
            WorkerSettings.from_env({"PEX_XEN_CA_FILE": str(tmp_path / "missing.pem")})

    @pytest.mark.parametrize("pins", ["abc", "ab" * 31, "ab" * 32 + ",xyz"])
    def test_a_fingerprint_that_is_not_sha256_is_a_settings_error(self, pins):
        with pytest.raises(SettingsError, match="PEX_XEN_CERT_SHA256"):
            WorkerSettings.from_env({"PEX_XEN_CERT_SHA256": pins})

    def test_ignoring_certificates_cannot_be_combined_with_checking_them(self, ca):
        with pytest.raises(SettingsError, match="PEX_XEN_IGNORE_SSL"):
            WorkerSettings.from_env({"PEX_XEN_IGNORE_SSL": "y", "PEX_XEN_CA_FILE": str(ca.pem)})
        assert WorkerSettings.from_env({}).xen_cert_sha256 == ()


def test_pex_xen_sim_serves_a_pool_of_members_over_https(tmp_path, ca):
    issued = ca.issue("pool", ADDRESSES)
    stop, announced = threading.Event(), []
    result = CliRunner().invoke(main, ["xen-sim", "--tls-cert", issued.files.certfile], catch_exceptions=False)
    assert result.exit_code != 0 and "--tls-key" in result.output
    server = threading.Thread(target=serve, args=("127.0.0.1:0", 5), daemon=True,
                              kwargs={"announce": announced.append, "stop": stop, "tls": issued.files,
                                      "members": True})
    server.start()
    try:
        waiting.eventually(lambda: len(announced) == 2)
        member = announced[1].split(": ", 1)[1].split(", ")[0]  # node2's URL
        assert member.startswith("https://127.0.0.2:")
        with pytest.raises(XenAPI.Failure) as redirected:
            login(member, transport=transport_for(member, 5.0, tls=TlsPolicy(ca_file=str(ca.pem))))
        assert redirected.value.details == ["HOST_IS_SLAVE", "127.0.0.1"]
    finally:
        stop.set()
        server.join()
