"""CLI commands of the workers: `pex worker` and `pex xen-sim`."""

from __future__ import annotations

import logging
import os
import signal
import threading

import click

from pex.cli.common import read_settings

log = logging.getLogger("pex.workers")


def _configure_logging(level: str) -> None:
    """JSON lines on stderr, as the servers write them (docs/operations.md): one object a line."""
    from pex.http.logs import configure_logging

    configure_logging(level, everything=True)


@click.command()
@click.option("--once", is_flag=True, help="One timer tick and one monitor poll, then exit.")
@click.option("--exit-with-parent", type=int, hidden=True, help="Exit when this process id is no longer our parent.")
@click.option("--pool", "pool_name", metavar="NAME", help="The pool of PEX_POOLS to work on (needed when it names several).")
def worker(once: bool, exit_with_parent: int | None, pool_name: str | None) -> None:
    """Run the timer worker and the node and VM monitors, and keep the read models current.

    They dispatch to the Xen pool at PEX_XEN_URL (PEX_XEN_USERNAME, PEX_XEN_PASSWORD) or, when
    it is unset, to an in-process simulated pool with the paper's testbed; with PEX_POOLS, to
    the pool named by --pool, whose instances only it dispatches and watches (run workers for
    every pool). Several workers may run at once against one store, for one pool or many. Tuning: PEX_WORKER_TICK_SECONDS, PEX_WORKER_THREADS,
    PEX_DISPATCH_LEASE_SECONDS, PEX_NODE_GRACE_SECONDS, PEX_GUEST_TIMEOUT_SECONDS,
    PEX_RESYNC_SECONDS (docs/operations.md)."""
    from pex.bootstrap import build_worker_process

    settings = read_settings()
    _configure_logging(settings.worker.log_level)
    try:
        process = build_worker_process(settings, settings.pool(pool_name))
    except ValueError as error:  # SettingsError too: a pricing policy that does not load
        raise click.ClickException(str(error)) from None
    if once:
        try:
            process.monitors.poll()
            report = process.timer.tick()
            click.echo(f"tick: {report}")
            position = process.catch_up_read_models()
            if position is not None:
                click.echo(f"read models and ledger at #{position}")
        finally:
            process.stop()
        return
    stop = threading.Event()
    if exit_with_parent:
        def watch_parent() -> None:
            while not stop.wait(1.0):
                if os.getppid() != exit_with_parent:
                    stop.set()

        threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    log.info("worker running (Ctrl-C to stop)", extra={"xen_url": process.dispatcher.url, "pool": process.settings.pool})
    process.run_until_signalled(stop)


@click.command("xen-sim")
@click.option("--bind", default="127.0.0.1:8090", show_default=True, help="HOST:PORT to serve XAPI on.")
@click.option("--hosts", type=click.IntRange(1), default=5, show_default=True, help="Hosts of the paper's testbed.")
@click.option("--host-names", default=None, metavar="PATTERN",
              help="Name the hosts by PATTERN, numbered from 0 (e.g. sim-host-{}), not node1…node5.")
@click.option("--guest-ip-delay", type=float, default=2.0, show_default=True, help="Seconds from boot to the guest's IP.")
@click.option("--members", is_flag=True, help="Every host listens on its own 127.0.0.N (same port), as master or member.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this PEM certificate.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="The certificate's PEM private key.")
def xen_sim(bind: str, hosts: int, host_names: str | None, guest_ip_delay: float, members: bool, tls_cert: str | None,
            tls_key: str | None) -> None:
    """Serve a simulated XAPI pool (user root, password xenroot) until SIGTERM or Ctrl-C.

    Point PEX at it with PEX_XEN_URL=http://HOST:PORT/ PEX_XEN_USERNAME=root
    PEX_XEN_PASSWORD=xenroot; inject faults with POST /sim/<action> (e.g. fail_host,
    switch_master, restart_xapi)."""
    from pex.adapters.xen.simulator import TlsFiles, serve
    from pex.settings import SettingsError, WorkerSettings

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    tls = TlsFiles(tls_cert, tls_key) if tls_cert and tls_key else None

    try:
        _configure_logging(WorkerSettings.from_env().log_level)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # A background job (`nohup pex xen-sim &`) inherits SIGINT ignored and keeps it so;
        # SIGTERM, what supervisors and tests send, always stops it cleanly.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, lambda signum, frame: stop.set())
    serve(bind, hosts, announce=lambda line: click.echo(line, err=True), stop=stop, guest_ip_delay=guest_ip_delay,
          tls=tls, members=members, host_names=host_names)
