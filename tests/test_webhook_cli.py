"""`pex webhook` (issue 14, item 6): the operator shows, sets (the secret printed once, on
standard output), removes a user's webhook and prints their delivery log. On a SQLite store."""

from __future__ import annotations

from click.testing import CliRunner

from pex.bootstrap import build_application
from pex.cli import main
from pex.projections.webhooks import Delivery
from tests.support.api import cheap_settings
from tests.test_cli import store_with_alice


def run(url: str, *args: str):
    result = CliRunner().invoke(main, list(args), env={"PEX_DATABASE_URL": url}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_set_prints_the_secret_once_show_never_and_remove_removes(tmp_path):
    url = store_with_alice(tmp_path)
    code, out, err = run(url, "webhook", "set", "alice", "https://hooks.example.org/pex")
    secret = out.strip()
    assert code == 0 and secret.startswith("whsec_") and "shown this once" in err
    code, out, _ = run(url, "webhook", "show", "alice")
    assert code == 0 and out.startswith("https://hooks.example.org/pex") and secret not in out
    code, out, _ = run(url, "webhook", "set", "alice", "https://other.example.org/h")
    assert code == 0 and out == ""  # the same secret: not shown again
    code, out, _ = run(url, "webhook", "set", "alice", "https://other.example.org/h", "--rotate-secret")
    assert code == 0 and out.strip().startswith("whsec_") and out.strip() != secret
    assert run(url, "webhook", "remove", "alice")[1] == "alice's webhook removed\n"
    assert run(url, "webhook", "show", "alice")[2] == "alice has no webhook\n"


def test_a_refused_url_or_an_unknown_user_is_an_error_and_changes_nothing(tmp_path):
    url = store_with_alice(tmp_path)
    code, _, err = run(url, "webhook", "set", "alice", "http://127.0.0.1:9/")
    assert code == 1 and "non-public address" in err
    assert run(url, "webhook", "show", "alice")[2] == "alice has no webhook\n"
    code, _, err = run(url, "webhook", "deliveries", "nobody")
    assert code == 1 and "no user 'nobody'" in err


def test_deliveries_prints_the_log_newest_first_with_the_last_answer(tmp_path):
    url = store_with_alice(tmp_path)
    app = build_application(cheap_settings(url))
    try:
        now = app.clock().timestamp()
        state = app.webhook_state
        state.add(Delivery("offer.lapsing:r1", "alice", "offer.lapsing", "{}", due=now - 60, next=now - 60, created=now - 60))
        state.add(Delivery("instance.failed:i1", "alice", "instance.failed", "{}", due=now, next=now, created=now))
        first, second = state.due(now, 10)
        state.finish(state.claim(first, now, now + 60), "delivered", now, code=204)
        state.finish(state.claim(second, now, now + 60), "pending", now, now + 5, error="ConnectionError: refused")
    finally:
        app.close()
    code, out, _ = run(url, "webhook", "deliveries", "alice")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert "instance.failed" in lines[0] and "PENDING" in lines[0] and "ConnectionError: refused" in lines[0]
    assert "offer.lapsing" in lines[1] and "DELIVERED" in lines[1] and "1 attempt" in lines[1] and "HTTP 204" in lines[1]
