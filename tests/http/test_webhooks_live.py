"""Users are told, end to end (issue 14, item 6): `pex serve` (gunicorn and its embedded worker)
on PostgreSQL, a user's webhook registered over HTTP, and a real receiver on loopback that
checks every signature with the secret the registration answered. A slow receiver holds the
notifier's delivery, never the user's commands."""

from __future__ import annotations

import threading

import pytest

from tests.http.test_live import Client, H, figure_7, tomorrow_at
from tests.support.server import serving
from tests.support.waiting import eventually
from tests.support.webhooks import Receiver

pytestmark = [pytest.mark.gunicorn, pytest.mark.postgres]

# The receiver is on loopback; an offer's "about to lapse" is due as soon as it is made.
ENV = {"PEX_WEBHOOK_ALLOW_PRIVATE": "on", "PEX_WEBHOOK_LAPSE_LEAD_SECONDS": "3600", "PEX_WEBHOOK_INTERVAL_SECONDS": "0.2",
       "PEX_XEN_URL": "", "PEX_EMBEDDED_WORKER": "y", "PEX_WORKER_TICK_SECONDS": "0.2"}


@pytest.fixture
def server(postgres_url, tmp_path):
    with serving(postgres_url, tmp_path, workers=2, extra_env=ENV) as server:
        yield server


def test_a_slow_receiver_gets_the_signed_notification_while_the_users_commands_go_on(server):
    alice = Client(server, "alice")
    with Receiver() as receiver:
        receiver.gate = threading.Event()
        registered = alice.session.put(f"{server.url}/OpenPEX/users/alice/webhook", json={"url": receiver.url}, timeout=30)
        assert registered.status_code == 200
        receiver.secret = registered.json()["secret"]

        first = alice.post(figure_7("SMALL", 1, tomorrow_at(10), 1))
        assert first.json()["reply"] == "ACCEPT"
        assert receiver.waiting.wait(timeout=60)  # the notifier is in the receiver, which does not answer
        # Meanwhile: a confirmation, a new negotiation, the lists, the webhook itself.
        rid = first.json()["proposal"]["id"].lower()  # the original's form writes it in capitals
        assert alice.step(rid, "CONFIRM").json()["reply"] == "REQUEST_SUCCESS"
        second = alice.post(figure_7("SMALL", 1, tomorrow_at(10) + 2 * H, 1))
        assert second.status_code == 201
        assert alice.get("/OpenPEX/reservations").status_code == 200
        log = alice.get("/OpenPEX/users/alice/webhook/deliveries").json()["deliveries"]
        assert receiver.received == [] and not receiver.gate.is_set()  # all of it while the receiver held on
        assert [d["status"] for d in log if d["body"]["reservationId"] == rid] == ["PENDING"]

        receiver.gate.set()

        def delivered():
            log = alice.get("/OpenPEX/users/alice/webhook/deliveries").json()["deliveries"]
            return [d for d in log if d["status"] == "DELIVERED"]

        done = eventually(delivered, timeout=60, interval=0.2, what="a delivery in the log")
        assert done[0]["type"] == "offer.lapsing" and done[0]["lastStatus"] == 200 and done[0]["attempts"] == 1
        got = eventually(lambda: receiver.received, timeout=10)
        assert got[0].signed and got[0].json["type"] == "offer.lapsing"
        assert got[0].json["reservationId"] == rid
