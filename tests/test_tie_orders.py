"""Best fit between nodes nothing tells apart: in name order, or in a tie order of the
process's own, which pex serve gives each of its HTTP workers, so that workers deciding side
by side seldom take the same free node (pex.domain.placement.tie_order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import falcon.testing

from pex import bootstrap
from pex.bootstrap import build_application
from pex.domain import Terms
from pex.domain.placement import tie_order
from pex.http import server, wsgi
from pex.settings import Settings
from tests.support.api import RICH, basic, cheap_settings, proposal

DEMO = [f"node{i}" for i in range(1, 6)]
ETCH = "PEX Debian Etch 4.0 Template"


def in_order(names, ties):
    return sorted(names, key=lambda name: tie_order(name, ties))


def test_order_zero_is_by_name_and_the_others_start_on_different_nodes():
    names = [f"node{i}" for i in range(1, 51)]
    assert in_order(names, 0) == sorted(names)
    assert in_order(names, 3) == in_order(list(reversed(names)), 3)  # a function of the names alone
    firsts = [in_order(names, ties)[0] for ties in range(8)]
    assert len(set(firsts)) >= 5, firsts  # eight workers on 50 equal nodes: mostly each its own


def test_a_proposal_on_an_empty_pool_goes_to_the_first_node_of_the_applications_tie_order(clock):
    for ties in (0, 1, 2):
        app = build_application(Settings(database_url="memory:", placement_ties=ties), clock=clock)
        start = clock() + timedelta(hours=2)
        rid = app.initiate_reservation("alice")
        outcome = app.submit_proposal(rid, Terms("SMALL", ETCH, 1, 0, start, start + timedelta(hours=1)))
        assert [a.node for a in outcome.reservation.placement] == [in_order(DEMO, ties)[0]]
        app.close()


def test_each_http_worker_builds_its_application_in_a_tie_order_of_its_own(tmp_path, monkeypatch):
    """gunicorn numbers the workers it starts from 1 (worker.age): the first keeps order 0,
    the second (here) takes order 1, whose first node on the demo pool is not node1."""
    assert in_order(DEMO, 1)[0] != "node1"
    settings = cheap_settings(f"sqlite:///{tmp_path}/pex.sqlite3")
    bootstrap.prepare_store(settings)  # as pex serve does before it starts its workers
    monkeypatch.setattr(wsgi, "_settings", settings)
    monkeypatch.setattr(server.gc, "freeze", lambda: None)  # not this test process's heap
    try:
        server.post_worker_init(SimpleNamespace(age=2))
        client = falcon.testing.TestClient(wsgi.get_app())
        registered = client.simulate_post("/OpenPEX/users", json={"username": "alice", "password": "correct horse battery"})
        assert registered.status_code == 201, registered.text
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        answer = client.simulate_post("/OpenPEX/reservations", json=proposal(start=start),
                                      headers={**basic("alice", "correct horse battery"), **RICH})
        assert answer.status_code == 201, answer.text
        assert answer.json["reply"] == "ACCEPT"
        assert answer.json["proposal"]["placement"] == [{"node": in_order(DEMO, 1)[0], "instances": 1}]
    finally:
        wsgi.close()
