"""`pex audit`, `pex history` and `pex replay`: the read side's commands."""

from __future__ import annotations

import json
import sys

import click

from pex.cli.common import build, parse_duration, parse_id, parse_time, read_settings
from pex.projections.views import VIEW_NAMES

REPLAYABLE = [*VIEW_NAMES, "ledger"]


def _build(**overrides):
    return build(install_demo_pool=False, **overrides)


def _source() -> str:
    url = read_settings().database_url
    return url.split("@")[-1] if "@" in url else url  # no password in a report


def _time(ctx, param, value):
    if value is None:
        return None
    return parse_time(value)


@click.command("audit")
@click.option("--until", callback=_time, help="Audit the log as it stood at this time (RFC 3339 or RFC 1123).")
@click.option("--until-id", type=click.IntRange(1), help="Audit the log up to this notification id.")
@click.option("--expect-chain", metavar="ID:SHA256", help="A chain digest written down from an earlier audit.")
@click.option("--grace", default="5m", show_default=True, help="How late an instance may stop after its end.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def audit_command(until, until_id, expect_chain, grace, as_json) -> None:
    """Re-read the event log, rebuild every projection and check PEX's promises.

    No node above capacity, every confirmation booked, instances inside their reservations,
    every negotiation a sequence of legal moves, versions without gaps, no stored event
    altered or removed since the ledger sealed it, the stored read models as the log says.
    Exits 1 on any violation. Reads only: it may run under a read-only database role."""
    from pex.projections.audit import Auditor
    from pex.projections.readmodels import ReadModels

    expected = None
    if expect_chain:
        at, _, digest = expect_chain.partition(":")
        if not at.isdigit() or len(digest) != 64:
            raise click.BadParameter("give ID:SHA256, as an audit report prints it", param_hint="--expect-chain")
        expected = (int(at), digest)
    app = _build(create_tables=False)
    try:
        read_models = ReadModels(app, create_tables=False)
        try:
            report = Auditor(
                app, read_models, until=until, until_id=until_id, expect_chain=expected,
                grace=parse_duration(grace), source=_source(),
            ).run()  # fmt: skip
        except Exception as error:
            raise click.ClickException(f"cannot read the event log: {error}") from None
        finally:
            read_models.close()
    finally:
        app.close()
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.render())
    sys.exit(0 if report.ok else 1)


@click.command("history")
@click.argument("reservation_id")
def history_command(reservation_id) -> None:
    """Print one reservation's negotiation and life as a timeline."""
    from pex.application import NotFound
    from pex.projections.history import render_history

    app = _build(create_tables=False)
    try:
        click.echo(render_history(app, parse_id(reservation_id)))
    except NotFound:
        raise click.ClickException(f"no reservation {reservation_id}") from None
    finally:
        app.close()


@click.command("replay")
@click.option("--view", "views", multiple=True, type=click.Choice(REPLAYABLE), help="Only this view (repeatable).")
@click.option("--follow", is_flag=True, help="Then keep following the log (a read-model worker).")
@click.option("--interval", default=0.5, show_default=True, help="Seconds between polls when following.")
@click.option("--reseal", is_flag=True, help="Allow rebuilding the ledger: accept the log as it now is.")
def replay_command(views, follow, interval, reseal) -> None:
    """Drop the read models (or the named ones) and rebuild them from the event log."""
    from pex.projections.readmodels import ReadModelError, ReadModels

    app = _build()
    read_models = ReadModels(app)
    try:
        names = list(views) or [v.name for v in read_models.views if v.rebuildable]
        progress = read_models.rebuild(names, reseal=reseal)
        click.echo(
            f"rebuilt {', '.join(names)}: {progress.events} events in {progress.seconds:.2f} s "
            f"({progress.rate:,.0f} events/s); at #{progress.position}"
        )
        if follow:
            click.echo("following the log; Ctrl-C stops")
            read_models.follow(interval)
    except ReadModelError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:  # pragma: no cover
        pass
    finally:
        read_models.close()
        app.close()
