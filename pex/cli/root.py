"""The `pex` group and its commands for operating the pool and negotiating from a terminal."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, InvalidOperation

import click

from pex.cli.common import (
    DurationParam,
    TimeParam,
    build,
    parse_id,
    parse_time,
    price_text,
    print_json,
    print_outcome,
    print_table,
    read_settings,
)
from pex.domain.errors import DomainError
from pex.domain.lifecycle import PHASE_WORDS
from pex.domain.values import Reply, Resources, Size, Terms, time_text


@click.group()
@click.version_option(package_name="openpex")
def main() -> None:
    """PEX: reserve virtual machines ahead of time, and negotiate the terms.

    Settings come from the environment: PEX_DATABASE_URL (default sqlite:///var/pex.sqlite3),
    PEX_OFFER_TTL_SECONDS, PEX_MAX_ROUNDS, PEX_HORIZON_DAYS, PEX_PRICING, PEX_PLACEMENT, PEX_CREDIT, PEX_CURRENCY (default
    USD), PEX_DEMO_POOL."""


@main.command()
def init() -> None:
    """Create the tables (the read models' too, caught up) and, on an empty store, the paper's
    demo pool."""
    from pex.projections.readmodels import prepare_read_models

    app = build(create_tables=True)
    try:
        progress = prepare_read_models(app)
        if app.pool_configured:
            sync_pools(app)
        click.echo(
            f"store ready; {len(app.nodes())} nodes, sizes {', '.join(sorted(app.catalogue().sizes))}; "
            f"read models and ledger at #{progress.position}"
        )
    finally:
        app.close()


@main.command()
@click.option("--user", required=True, help="Whose reservation this is: a registered user (pex users add).")
@click.option("--type", "size", default="SMALL", show_default=True, help="VM size (Table 1).")
@click.option("--template", default="PEX Debian Etch 4.0 Template", show_default=True)
@click.option("--instances", "fixed", type=click.IntRange(0), default=1, show_default=True, help="Instances needed.")
@click.option("--optional", "option", type=click.IntRange(0), default=0, show_default=True, help="Further instances welcome.")
@click.option("--start", type=TimeParam(), default="now+1h", show_default=True)
@click.option("--duration", type=DurationParam(), default="1h", show_default=True)
@click.option("--price", help="The most you will pay (in PEX_CURRENCY).")
@click.option(
    "--latest-start", type=TimeParam(),
    help="Flexible: any start from --start to this one will do; the provider picks the earliest that fits.",
)
@click.option(
    "--min-duration", type=DurationParam(),
    help="Flexible: the provider may shorten the duration down to this; it picks the longest that fits.",
)
@click.option("--manual-start", is_flag=True, help="Start the VMs only once the reservation is activated (default: by themselves).")
@click.option("--confirm", is_flag=True, help="Accept whatever the provider offers and confirm it.")
@click.option("--json", "as_json", is_flag=True, help="Print the wire JSON of each reply.")
def negotiate(
    user, size, template, fixed, option, start, duration, price, latest_start, min_duration, manual_start, confirm, as_json,
) -> None:
    """Propose a reservation for a registered user and print the provider's answer (and confirm
    it with --confirm). Once confirmed, its VMs start by themselves at the start, unless
    --manual-start. With --latest-start or --min-duration the proposal is flexible: the
    provider ACCEPTs with the terms it chose inside that freedom."""
    try:
        max_price = Decimal(price) if price is not None else None
    except InvalidOperation:
        raise click.BadParameter(f"{price!r} is not a price", param_hint="--price") from None
    app = build()
    account = app.get_user(user)
    if account is None:  # capacity is booked for someone who can log in and see it, or nobody
        raise click.BadParameter(f"no user {user!r}: create it first (pex users add {user})", param_hint="--user")
    terms = Terms(
        size, template, fixed, option, start, start + duration, max_price, auto_start=not manual_start,
        latest_start=latest_start, min_duration=min_duration,
    )
    try:
        rid = app.initiate_reservation(account.username)
        outcome = app.submit_proposal(rid, terms)
        print_outcome(app, outcome, as_json)
        if confirm and outcome.reply in (Reply.ACCEPT, Reply.COUNTER):
            if outcome.reply == Reply.COUNTER:
                print_outcome(app, app.respond(rid, Reply.ACCEPT), as_json)
            print_outcome(app, app.respond(rid, Reply.CONFIRM), as_json)
    except DomainError as error:
        raise click.ClickException(str(error)) from None


@main.command()
@click.argument("reservation_id")
@click.argument("reply", type=click.Choice(["CONFIRM", "ACCEPT", "REJECT"], case_sensitive=False))
def respond(reservation_id, reply) -> None:
    """Answer the provider's offer: CONFIRM an ACCEPT, ACCEPT or REJECT a COUNTER."""
    app = build()
    try:
        print_outcome(app, app.respond(parse_id(reservation_id), Reply(reply.upper())), False)
    except DomainError as error:
        raise click.ClickException(str(error)) from None


@main.group("reservations", invoke_without_command=True)
@click.option("--user", help="Only this user's.")
@click.option("--json", "as_json", is_flag=True, help="Print them as the API's PEX form does.")
@click.pass_context
def list_reservations(ctx, user, as_json) -> None:
    """List reservations with where each stands and its terms (or, with `end`, end one)."""
    if ctx.invoked_subcommand is not None:
        return
    from pex.wire import reservation_json

    app = build()
    now = app.clock()
    views = [(r, app.reservation_phase(r, now)) for r in app.list_reservations(user)]
    if as_json:
        print_json({"reservations": [reservation_json(r, phase, app.currency) for r, phase in views]})
        return
    rows = []
    for r, phase in views:
        t = r.terms
        terms = [f"{t.instances} × {t.size}", time_text(t.start), time_text(t.end), price_text(t.price, app.currency)] if t else ["-"] * 4
        rows.append([str(r.id).upper(), r.user_id, r.state.value, PHASE_WORDS[phase], *terms])
    print_table(["RESERVATION", "USER", "STATE", "WHERE IT STANDS", "MACHINES", "START", "END", "PRICE"], rows)


@list_reservations.command("end")
@click.argument("reservation_id")
@click.option("--reason", required=True, help="Why it is ended (recorded with who ended it).")
@click.option("--by", default="operator", show_default=True, help="Who ends it.")
def end_reservation(reservation_id, reason, by) -> None:
    """End a reservation now, whatever its state (an activated one too): its capacity is
    released and the worker shuts down and destroys its VMs."""
    from pex.application import NotFound

    app = build()
    try:
        view = app.terminate(parse_id(reservation_id), by, reason)
    except (DomainError, NotFound) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"reservation {str(view.id).upper()} ended ({view.state.value}) by {by}: {reason}")


@main.group()
def quotas() -> None:
    """Show or change the quotas: the longest reservation, the horizon, the CPU-hours and the
    live offers one user may have."""


def print_quotas(app, user: str | None = None) -> None:
    q, policy = app.quotas(user), app.policy
    if user is not None:
        click.echo(f"{user}: {'quotas of their own' if app.has_own_quotas(user) else 'the quotas everyone has'}")
    cpu_default = " (default: a quarter of the pool over 30 days)" if q.max_cpu_hours is None else ""
    horizon_default = " (default: PEX_HORIZON_DAYS)" if q.horizon is None else ""
    click.echo(f"longest reservation  {q.max_duration // timedelta(hours=1)} hours")
    click.echo(f"horizon              {q.horizon_in_force(policy.horizon).days} days{horizon_default}")
    click.echo(f"CPU-hours per user   {q.cpu_hours_in_force(app.pool_cpus())}{cpu_default}")
    click.echo(f"live offers per user {q.max_live_offers}")


@quotas.command("show")
@click.option("--user", help="The quotas in force for this user.")
def quotas_show(user) -> None:
    """Print the quotas in force."""
    print_quotas(build(), user)


@quotas.command("set")
@click.option("--max-duration", type=DurationParam(), help="The longest reservation, like 14d.")
@click.option("--horizon", type=DurationParam(), help="How far ahead one may start, like 60d.")
@click.option("--max-cpu-hours", type=click.IntRange(0), help="CPU-hours one user may have booked or held.")
@click.option("--max-live-offers", type=click.IntRange(0), help="Offers one user may hold at once.")
@click.option("--default", "defaults", multiple=True,
              type=click.Choice(["max-duration", "horizon", "max-cpu-hours", "max-live-offers"]),
              help="Put this quota back to its default (repeatable).")
@click.option("--user", help="Change only this user's quotas (they get quotas of their own).")
@click.option("--clear", is_flag=True, help="With --user: put the user back under everyone's quotas.")
@click.option("--by", default="operator", show_default=True, help="Who changes them.")
def quotas_set(max_duration, horizon, max_cpu_hours, max_live_offers, defaults, user, clear, by) -> None:
    """Change the quotas named; the others stay as they are."""
    from pex.domain.quotas import DEFAULT_MAX_DURATION, DEFAULT_MAX_LIVE_OFFERS

    app = build()
    if clear:
        if user is None:
            raise click.UsageError("--clear needs --user")
        app.set_user_quotas(user, None, by)
        print_quotas(app, user)
        return
    changes: dict = {}
    for name, value, default in (
        ("max_duration", max_duration, DEFAULT_MAX_DURATION),
        ("horizon", horizon, None),
        ("max_cpu_hours", max_cpu_hours, None),
        ("max_live_offers", max_live_offers, DEFAULT_MAX_LIVE_OFFERS),
    ):
        if name.replace("_", "-") in defaults:
            changes[name] = default
        elif value is not None:
            changes[name] = value
    if not changes:
        raise click.UsageError("name a quota to change (see --help)")
    try:
        if user is None:
            app.set_quotas(app.quotas().but(**changes), by)
        else:
            app.set_user_quotas(user, app.quotas(user).but(**changes), by)
    except DomainError as error:
        raise click.ClickException(str(error)) from None
    print_quotas(app, user)


def resources_text(r: Resources) -> str:
    return f"{r.cpus} CPU{'s' * (r.cpus != 1)} · {r.memory_mb} MB · {r.disk_gb} GB"


@main.command("nodes")
@click.option("--json", "as_json", is_flag=True, help="Print them as the API's GET /OpenPEX/nodes/{name} does.")
def nodes_command(as_json) -> None:
    """List the pool's nodes, then what is booked or held on them from now on."""
    app = build()
    try:
        print_nodes(app, as_json)
    finally:
        app.close()


def print_nodes(app, as_json: bool = False) -> None:
    from pex.http.pool import allocation_json, node_json

    pool = [(node, app.node_allocations(node.name)) for node in app.nodes()]
    if as_json:
        print_json({"nodes": [{**node_json(n), "allocations": [allocation_json(a) for a in allocs]} for n, allocs in pool]})
        return
    pools = {n.pool for n, _ in pool}
    if len(pools) > 1:  # PEX_POOLS: each node's Xen pool
        print_table(
            ["NODE", "POOL", "STATE", "CAPACITY"],
            [[n.name, n.pool, "up" if n.available else "LOST", resources_text(n.capacity)] for n, _ in pool],
        )
        unreachable = app.catalogue().unreachable_pools
        if unreachable:
            click.echo(f"pools whose master does not answer (first offers avoid them): {', '.join(unreachable)}")
    else:
        print_table(
            ["NODE", "STATE", "CAPACITY"],
            [[n.name, "up" if n.available else "LOST", resources_text(n.capacity)] for n, _ in pool],
        )
    taken = [
        [n.name, str(a.reservation_id).upper()[:8], f"{a.instances} × {resources_text(a.per_instance)}",
         time_text(a.start), time_text(a.end), f"held until {time_text(a.hold_until)}" if a.is_hold else "booked"]
        for n, allocs in pool for a in allocs
    ]  # fmt: skip
    click.echo("")
    if taken:
        print_table(["NODE", "RESERVATION", "INSTANCES", "FROM", "TO", "KIND"], taken)
    else:
        click.echo("Nothing is booked or held: every node is free.")


def sync_pools(app, echo: bool = True) -> None:
    """Sync the nodes with every Xen pool (PEX_POOLS, or the one at PEX_XEN_URL), and echo
    what changed; a pool that cannot be read is reported, after the others are synced, as a
    click error."""
    from pex.adapters.xen.errors import XenAdapterError
    from pex.bootstrap import build_pool_enactment
    from pex.settings import SettingsError

    settings = read_settings()
    failed = []
    for pool in settings.pools:
        try:
            enactment = build_pool_enactment(settings, pool)
        except SettingsError as error:
            raise click.ClickException(str(error)) from None
        try:
            result = app.sync_pool(enactment.inventory(), pool.pool_reserve, pool.pool)
        except XenAdapterError as error:
            failed.append(f"cannot read the Xen pool {pool.pool} at {pool.xen_url}: {error}")
            continue
        finally:
            enactment.dispatcher.close()
        if echo:
            echo_sync(result, pool.pool if len(settings.pools) > 1 else None)
    if failed:
        raise click.ClickException("; ".join(failed))


def echo_sync(result, pool: str | None = None) -> None:
    prefix = f"pool {pool}: " if pool else ""
    for what in ("registered", "resized", "lost", "returned"):
        names = getattr(result, what)
        if names:
            click.echo(f"{prefix}nodes {what}: {', '.join(names)}")
    if result.refused:
        click.echo(f"{prefix}not synced (more is booked than the host offers now, or its name is another pool's node's): "
                   f"{', '.join(result.refused)}", err=True)


@main.group("pool")
def pool() -> None:
    """The Xen pools (PEX_POOLS, or the one at PEX_XEN_URL): their hosts are the nodes, their
    templates the ones to offer."""


@pool.command("sync")
def pool_sync() -> None:
    """Make every host of every pool a node (named by its name_label, after its pool's name but
    in the pool `default`, with what it can give guests less PEX_POOL_RESERVE); mark the nodes
    of hosts that left or are disabled lost."""
    app = build()
    try:
        sync_pools(app)
        print_nodes(app)
        templates = app.pool_templates() or {}
        click.echo("templates in the pool (offer one with `pex admin template NAME`):")
        offered = app.catalogue().templates
        for uuid, name in sorted(templates.items(), key=lambda t: t[1]):
            click.echo(f"    {name} ({uuid}){'  offered' if name in offered else ''}")
    finally:
        app.close()


@main.group()
def admin() -> None:
    """Change the catalogue (sizes, templates) and the pool (nodes)."""


@admin.command("size")
@click.argument("name")
@click.option("--cpus", type=click.IntRange(0), required=True)
@click.option("--memory-mb", type=click.IntRange(0), required=True)
@click.option("--disk-gb", type=click.IntRange(0), required=True)
@click.option("--hourly-price", default="0", show_default=True)
def admin_size(name, cpus, memory_mb, disk_gb, hourly_price) -> None:
    """Define or change a VM size."""
    try:
        app = build()
        app.define_size(Size(name, cpus, memory_mb, disk_gb, Decimal(hourly_price)))
    except (DomainError, InvalidOperation) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"size {name} defined")


@admin.command("template")
@click.argument("name")
@click.option("--description", default="")
def admin_template(name, description) -> None:
    """Offer a template by name; with PEX_XEN_URL, one of the pool's, by name or uuid."""
    app = build()
    try:
        if app.pool_configured:
            sync_pools(app, echo=False)  # checked against the pools as they are now
        offered = app.register_template(name, description)
    except DomainError as error:
        raise click.ClickException(str(error)) from None
    finally:
        app.close()
    click.echo(f"template {offered!r} registered")


@admin.command("node")
@click.argument("name")
@click.option("--cpus", type=click.IntRange(1), help="With --memory-mb and --disk-gb: register or resize it.")
@click.option("--memory-mb", type=click.IntRange(1))
@click.option("--disk-gb", type=click.IntRange(0))
@click.option("--drain-from", "drain_from", metavar="TIME",
              help="Put it into maintenance from TIME (RFC 3339, RFC 1123 or now+2h): re-place its bookings, "
                   "live-migrate its running VMs; again, retry what could not move.")
@click.option("--undrain", is_flag=True, help="End its maintenance: it takes bookings again.")
@click.option("--by", default="operator", show_default=True, help="Who drains it, as recorded.")
def admin_node(name, cpus, memory_mb, disk_gb, drain_from, undrain, by) -> None:
    """Register a node, resize it, drain it or end its drain; with no option, show it and its drain."""
    sizing = (cpus, memory_mb, disk_gb)
    if any(v is not None for v in sizing) and None in sizing:
        raise click.UsageError("--cpus, --memory-mb and --disk-gb go together")
    if sum((cpus is not None, drain_from is not None, undrain)) > 1:
        raise click.UsageError("size, --drain-from and --undrain are separate changes: one at a time")
    when = parse_time(drain_from) if drain_from is not None else None
    app = build()
    try:
        known = name in {n.name for n in app.nodes()}
        if cpus is not None:
            capacity = Resources(cpus, memory_mb, disk_gb)
            if known:
                app.resize_node(name, capacity)
                click.echo(f"node {name} resized")
            else:
                app.register_node(name, capacity)
                click.echo(f"node {name} registered")
            return
        if not known:
            raise click.ClickException(f"no node {name!r}")
        if when is not None:
            print_drain(app.drain_node(name, when, by))
        elif undrain:
            app.undrain_node(name, by)
            click.echo(f"node {name} takes bookings again")
        else:
            print_node(app, name)
    except DomainError as error:
        raise click.ClickException(str(error)) from None
    finally:
        app.close()


def print_node(app, name: str) -> None:
    node = next(n for n in app.nodes() if n.name == name)
    c = node.capacity
    state = "available" if node.available else "lost"
    click.echo(f"node {name}: {c.cpus} CPUs, {c.memory_mb} MB, {c.disk_gb} GB, {state}")
    drain = app.drain(name)
    if drain is None:
        click.echo("not drained")
    else:
        print_drain(drain)


def print_drain(drain) -> None:
    click.echo(f"drained from {time_text(drain.drain_from)} by {drain.by}")
    for item in drain.moved:
        click.echo(f"  moved {item.name} to {item.moved_to} (its booking with it)")
    waiting = [i for i in drain.leaving if i.reason is None]
    for item in waiting:
        doing = f"live-migrating to {item.migrating_to}" if item.migrating_to else "waiting for its turn"
        click.echo(f"  leaving {item.name} ({item.status}, until {time_text(item.end)}): {doing}")
    for item in drain.stuck:
        click.echo(f"  NOT MOVED {item.name} ({item.status}, until {time_text(item.end)}): {item.reason}")
    if not drain.leaving:
        click.echo("  nothing left on it that lasts until then")


@admin.command("credit")
@click.argument("username")
@click.option("--grant", "amount", help="Add this much to the user's credit, like 25.00 (negative takes it back).")
@click.option("--note", default="", help="For the user's statement.")
@click.option("--by", default="operator", show_default=True, help="Who grants it.")
@click.option("--entries", type=click.IntRange(0), default=10, show_default=True, help="Statement lines shown.")
def admin_credit(username, amount, note, by, entries) -> None:
    """Show a user's credit (simulated money in PEX_CURRENCY) and its latest statement lines;
    with --grant, grant some first. With PEX_CREDIT=on every confirmation is charged to it."""
    from pex.application import NotFound

    app = build()
    try:
        if amount is not None:
            app.grant_credit(username, amount, by, note)
        credit = app.credit(username, entries)
    except (DomainError, NotFound) as error:
        raise click.ClickException(str(error)) from None
    finally:
        app.close()
    enforced = "charged on every confirmation" if credit.enforced else "not charged (PEX_CREDIT=off)"
    click.echo(f"{credit.username}: {price_text(credit.balance, app.currency)} of credit, {enforced}")
    for e in credit.entries:
        what = f"reservation {str(e.reservation_id).upper()}" if e.reservation_id else f"by {e.by}" + (f": {e.note}" if e.note else "")
        click.echo(f"  {time_text(e.at)}  {e.kind:<6} {e.amount:>12}  balance {e.balance:>12}  {what}")


@main.command("policies")
def policies_command() -> None:
    """Print the provider's policies in force: placement (PEX_PLACEMENT), pricing (PEX_PRICING)
    and whether bookings are charged to credit (PEX_CREDIT)."""
    app = build()
    try:
        p = app.policies()
    finally:
        app.close()
    click.echo(f"placement  {p.placement}")
    market = f" (flat × ({p.market_floor} + {p.market_ceiling - p.market_floor} × utilization))" if (
        p.market_floor is not None and p.market_ceiling is not None) else ""
    click.echo(f"pricing    {p.pricing}{market}, in {p.currency}")
    click.echo(f"credit     {'on: every confirmation is charged to its user' if p.credit else 'off: nothing is charged'}")

