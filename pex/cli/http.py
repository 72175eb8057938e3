"""`pex serve` and `pex users`: the HTTP edge's commands."""

from __future__ import annotations

import sys
import tempfile

import click

from pex.cli.common import build, read_settings
from pex.domain.errors import DomainError


@click.command()
@click.option("--bind", help="HOST:PORT to listen on [default: PEX_BIND or 127.0.0.1:8080].")
@click.option("--workers", type=click.IntRange(1), help="gunicorn worker processes [default: PEX_WORKERS or 2].")
@click.option("--threads", type=click.IntRange(1), help="Threads per worker [default: PEX_THREADS or 4].")
def serve(bind, workers, threads) -> None:
    """Serve the REST API (/OpenPEX/) with gunicorn.

    The store is prepared once (tables, and the demo pool on an empty store) before the
    workers start; every worker then builds its own application."""
    from dataclasses import replace

    store = read_settings()
    http = replace(store.http, **{k: v for k, v in {"bind": bind, "workers": workers, "threads": threads}.items() if v})
    if store.database_url.startswith("memory:") and http.workers > 1:
        raise click.ClickException("PEX_DATABASE_URL=memory: lives in one process; use --workers 1 or a real store")
    if not http.metrics_dir:  # the workers' metrics are merged in one directory (pex.http.observability)
        http = replace(http, metrics_dir=tempfile.mkdtemp(prefix="pex-metrics-"))
    store = replace(store, http=http)
    url = f"http://{http.bind}"
    click.echo(
        f"PEX serving {url}/OpenPEX/ on {store.database_url} ({http.workers} workers × {http.threads} threads)\n"
        f"  contract:  {url}/OpenPEX/openapi.json     docs: docs/api.md\n"
        + (
            f"  register:  curl -X POST {url}/OpenPEX/users -H 'Content-Type: application/json' "
            "-d '{\"username\": \"alice\", \"password\": \"change-me-now\"}'\n"
            if http.registration
            else "  registration is off: create users with `pex users add NAME`\n"
        )
        + f"  then:      curl -u alice:change-me-now {url}/OpenPEX/sizes\n"
        + "  admin:     pex users add NAME --admin   (manages nodes, sizes, templates over the API)",
        err=True,
    )
    from pex.bootstrap import start_embedded
    from pex.http.server import serve as run

    # The embedded default (no PEX_XEN_URL): a worker and a simulated pool beside the API.
    embedded = start_embedded(store)
    try:
        run(store)
    finally:
        embedded.stop()


@click.group()
def users() -> None:
    """Manage user accounts."""


@users.command("add")
@click.argument("username")
@click.option("--admin", is_flag=True, help="May manage the pool and see every reservation.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def add_user(username, admin, password_stdin) -> None:
    """Create an account (the password is prompted for, never an argument)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = build().register_user(username, password, is_admin=admin)
    except DomainError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"user {user.username} created{' (administrator)' if user.is_admin else ''}")


@users.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
def set_password(username, password_stdin) -> None:
    """Give an account a new password; its portal sessions and remembered checks end."""
    from pex.application import NotFound
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        build().set_password(username, password)
    except (DomainError, NotFound) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{username}: password changed; every session of theirs has ended")


@users.command("grant-admin")
@click.argument("username")
def grant_admin(username) -> None:
    """Make an existing user an administrator."""
    from pex.application import NotFound
    try:
        build().grant_admin(username)
    except (DomainError, NotFound) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{username} is an administrator")


@users.command("ssh-keys")
@click.argument("username")
@click.option("--set", "keys_file", type=click.File("r"),
              help="Replace the keys with those of this file, one a line, as in ~/.ssh/id_ed25519.pub "
                   "('-': standard input; an empty file clears them).")
def ssh_keys(username, keys_file) -> None:
    """Show (or, with --set, replace) the SSH public keys the user's new VMs let in."""
    from pex.application import NotFound
    app = build()
    try:
        if keys_file is not None:
            app.set_ssh_keys(username, [line for line in keys_file.read().splitlines() if line.strip()])
        user = app.get_user(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
    except (DomainError, NotFound) as error:
        raise click.ClickException(str(error)) from None
    for key in user.ssh_keys:
        click.echo(key)
    if not user.ssh_keys:
        click.echo(f"{user.username} has no SSH key", err=True)


@click.group()
def webhook() -> None:
    """A user's webhook: where PEX tells them of their offers, reservations and instances
    (docs/api.md, "Users are told"), and its delivery log."""


def _webhook_app():
    return build()


@webhook.command("show")
@click.argument("username")
def webhook_show(username) -> None:
    """Print where the user's notifications go (never the secret)."""
    from pex.application import NotFound
    app = _webhook_app()
    try:
        if app.get_user(username) is None:
            raise NotFound(f"no user {username!r}")
        view = app.webhook_of(username)
    except NotFound as error:
        raise click.ClickException(str(error)) from None
    if view is None:
        click.echo(f"{username} has no webhook", err=True)
        return
    click.echo(f"{view.url}  (since {view.since:%Y-%m-%d %H:%M} UTC)" if view.since else view.url)


@webhook.command("set")
@click.argument("username")
@click.argument("url")
@click.option("--rotate-secret", is_flag=True, help="Make a new signing secret (printed once); the old one stops at once.")
def webhook_set(username, url, rotate_secret) -> None:
    """Send the user's notifications to URL. A new signing secret (the first time, or with
    --rotate-secret) is printed once, on standard output: give it to the user."""
    from pex.application import NotFound
    try:
        view = _webhook_app().set_webhook(username, url, rotate_secret=rotate_secret)
    except (DomainError, NotFound) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{view.username}'s notifications go to {view.url}", err=True)
    if view.secret is not None:
        click.echo(view.secret)
        click.echo("that is the signing secret: it is shown this once", err=True)


@webhook.command("remove")
@click.argument("username")
def webhook_remove(username) -> None:
    """Tell the user nothing any more (what is pending for them is dropped)."""
    from pex.application import NotFound
    try:
        had = _webhook_app().remove_webhook(username)
    except NotFound as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{username}'s webhook removed" if had else f"{username} had no webhook")


@webhook.command("deliveries")
@click.argument("username")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="The newest this many.")
def webhook_deliveries(username, limit) -> None:
    """Print the user's delivery log, newest first: when it was due, what, its status, the
    attempts, and the receiver's last answer or error."""
    from datetime import UTC, datetime

    from pex.application import NotFound
    try:
        deliveries = _webhook_app().webhook_deliveries(username, limit)
    except NotFound as error:
        raise click.ClickException(str(error)) from None
    if not deliveries:
        click.echo(f"{username} has no delivery", err=True)
    for d in deliveries:
        due = datetime.fromtimestamp(d.due, UTC).strftime("%Y-%m-%d %H:%M:%S")
        last = f"HTTP {d.last_code}" if d.last_code is not None else ""
        if d.last_error and d.status != "delivered":
            last = f"{last} {d.last_error}".strip()
        click.echo(f"{due}  {d.kind:<20} {d.status.upper():<9} {d.attempts} attempt{'s' if d.attempts != 1 else ''}"
                   + (f"  {last}" if last else ""))
