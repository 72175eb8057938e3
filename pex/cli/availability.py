"""`pex availability`, `pex release` and `pex extend`: ask when something is free without
holding it, end a reservation early, or ask for it to end later."""

from __future__ import annotations

import json

import click

from pex.cli.common import DurationParam, TimeParam, build, parse_id, print_outcome
from pex.domain.errors import DomainError


@click.command("availability")
@click.option("--type", "size", default="SMALL", show_default=True, help="VM size (Table 1).")
@click.option("--count", type=click.IntRange(1), default=1, show_default=True, help="Instances that must fit.")
@click.option("--duration", type=DurationParam(), default="1h", show_default=True)
@click.option("--from", "earliest", type=TimeParam(), help="The earliest start [default: now].")
@click.option("--to", "latest", type=TimeParam(), help="The latest start [default: a week after --from].")
@click.option("--limit", type=click.IntRange(1, 50), default=5, show_default=True, help="At most this many windows.")
@click.option("--user", default="cli", show_default=True, help="Whose horizon applies.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON (GET /OpenPEX/availability).")
def availability_command(size, count, duration, earliest, latest, limit, user, as_json) -> None:
    """Print the next windows in which COUNT instances of TYPE fit for DURATION, earliest
    first, with how many would fit and the price of COUNT; nothing is held or recorded."""
    from pex.application.errors import InvalidQuery
    from pex.wire import window_json

    app = build()
    try:
        windows = app.availability(user, size, count, duration, earliest, latest, limit)
    except InvalidQuery as error:
        raise click.BadParameter(error.detail, param_hint=f"--{error.field}") from None
    finally:
        app.close()
    if as_json:
        click.echo(json.dumps([window_json(w) for w in windows], indent=2))
        return
    if not windows:
        click.echo(f"no window for {count} {size} of {duration} in that range")
        return
    click.echo(f"{'start':<26} {'end':<26} {'fit':>4} {'price':>10}")
    for w in windows:
        click.echo(f"{w.start.isoformat():<26} {w.end.isoformat():<26} {w.available:>4} {w.price:>10}")


@click.command("release")
@click.argument("reservation_id")
@click.option("--user", help="Release only if it is this user's reservation [default: any, as an operator].")
@click.option("--by", default=None, help="Who releases it, as recorded [default: --user, or operator].")
def release_command(reservation_id, user, by) -> None:
    """End a confirmed or activated reservation now: its capacity is free from now, its VMs
    are shut down by the worker, and it costs the used part of its price."""
    from pex.application import NotFound

    app = build()
    try:
        view = app.release(parse_id(reservation_id), by or user or "operator", user)
    except (DomainError, NotFound) as error:
        raise click.ClickException(str(error)) from None
    finally:
        app.close()
    terms = view.offer.terms if view.offer else None
    ended = f" at {terms.end.isoformat()}, for {terms.price}" if terms else ""
    click.echo(f"reservation {str(view.id).upper()} released ({view.state.value}){ended}")


@click.command("extend")
@click.argument("reservation_id")
@click.option("--end", type=TimeParam(), required=True, help="The end asked instead of the agreed one (a time, or now+2h).")
@click.option("--user", help="Extend only if it is this user's reservation [default: any, as an operator].")
@click.option("--json", "as_json", is_flag=True, help="Print the API's reply object (PUT .../extend).")
def extend_command(reservation_id, end, user, as_json) -> None:
    """Ask a confirmed or activated reservation to end at END instead: the provider answers
    ACCEPT, COUNTER (the longest extension its nodes can take, or other nodes for instances
    not started yet, with its price) or REJECT, and holds the offer for a while; `pex respond
    ID CONFIRM` books it (REJECT walks away)."""
    from pex.application import NotFound

    app = build()
    try:
        print_outcome(app, app.extend(parse_id(reservation_id), end, user), as_json)
    except (DomainError, NotFound) as error:
        raise click.ClickException(str(error)) from None
    finally:
        app.close()
