"""The provider's answer to a request to extend a confirmed or activated reservation.

`evaluate_extension` is a pure function, as `pex.domain.negotiation.evaluate` is: given the
agreed offer, the end the user asks for (already cut to the quotas), a CapacityView, the
decision time and the pricing, it answers ACCEPT (the end asked), COUNTER (the longest
extension it can give, with its price) or REJECT (not a minute more fits).

Instances stay where they are booked, so that running VMs keep running: their nodes hold
[agreed end, new end) until the user confirms. Only where a node cannot take the end asked
and none of its instances has started yet (the caller says which nodes: `movable`) may those
instances move, whole, to other nodes that take them from the start to that end; those
nodes then hold [start, new end), and the CONFIRM books them there and gives back the
node they leave. Moving is tried only when it gives a later end than staying.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from pex.domain.negotiation import format_span
from pex.domain.placement import CapacityView, fitting_counts
from pex.domain.pricing import PricingPolicy
from pex.domain.values import Allocation, Offer, Reply, Resources, Size, time_text


@dataclass(frozen=True)
class ExtensionDecision:
    reply: Reply
    end: datetime | None = None
    price: Decimal | None = None
    placement: tuple[Allocation, ...] = ()
    changes: tuple[str, ...] = field(default=())
    reason: str = ""
    # The placement it was offered against when instances move to other nodes (empty: none move).
    moved_from: tuple[Allocation, ...] = ()


def longest_end(
    view: CapacityView, node: str, demand: Resources, start: datetime, asked_end: datetime, at: datetime,
    excluding: UUID | None = None,
) -> datetime:
    """The latest end in [start, asked_end] such that `node` has `demand` free over all of
    [start, end), seen at `at` (not counting `excluding`'s own hold). The free capacity over
    [start, end) only shrinks as the end grows, and changes only at the view's change points,
    so the longest end is `asked_end` or the first change point past which it no longer fits."""
    if node not in set(view.node_names()):
        return start  # lost: it takes nothing new
    if demand.fits_in(view.free(node, start, asked_end, at, excluding)):
        return asked_end
    best = start
    for point in view.change_points(start, asked_end, at):
        if point >= asked_end:
            break
        if not demand.fits_in(view.free(node, start, point, at, excluding)):
            break
        best = point
    return best


def evaluate_extension(
    agreed: Offer, size: Size, asked_end: datetime, view: CapacityView, at: datetime, pricing: PricingPolicy,
    excluding: UUID | None = None, cut: tuple[str, ...] = (), movable: frozenset[str] = frozenset(),
) -> ExtensionDecision:
    """Answer a request to move `agreed`'s end to `asked_end` (later than its end). `cut` says
    why `asked_end` is already less than the user asked (the quotas), and makes it a COUNTER.
    `movable`: the nodes of `agreed`'s placement none of whose instances has started yet."""
    old_end = agreed.terms.end
    in_place = {
        a.node: longest_end(view, a.node, agreed.per_instance * a.instances, old_end, asked_end, at, excluding)
        for a in agreed.placement
    }
    end = min(in_place.values(), default=asked_end)
    if end < asked_end and movable:
        moved = _moved_elsewhere(agreed, in_place, asked_end, view, at, excluding, movable)
        if moved is not None and moved.end is not None and moved.end > end:
            return _offered(moved, size, asked_end, cut, pricing, agreed)
    blocked = next((a for a in agreed.placement if in_place[a.node] <= old_end), None)
    if blocked is not None:
        return ExtensionDecision(
            Reply.REJECT,
            reason=f"node {blocked.node} has no room for its {blocked.instances} {size.name} "
            f"instance{'s' * (blocked.instances != 1)} after {time_text(old_end)}",
        )
    return _offered(ExtensionDecision(Reply.ACCEPT, end, placement=agreed.placement), size, asked_end, cut, pricing,
                    agreed)


def _moved_elsewhere(
    agreed: Offer, in_place: dict[str, datetime], asked_end: datetime, view: CapacityView, at: datetime,
    excluding: UUID | None, movable: frozenset[str],
) -> ExtensionDecision | None:
    """The longest end, later than staying gives, for which the instances of the movable nodes
    that cannot take it fit, best fit (as `pex.domain.placement.place`), on nodes the
    reservation does not use, from its start to that end; None if no such end exists. The
    fixed nodes' longest end caps it; below that, whether the movers fit changes only at the
    view's change points, so those are the candidates, latest first."""
    terms = agreed.terms
    cap = min([asked_end, *(e for node, e in in_place.items() if node not in movable)])
    staying_end = min(in_place.values())
    if cap <= max(staying_end, terms.end) or terms.start <= at:
        return None
    later = [p for p in view.change_points(max(staying_end, terms.end), cap, at) if p < cap]
    for end in [cap, *reversed(later)]:
        leaving = [a for a in agreed.placement if in_place[a.node] < end]
        targets = _elsewhere(agreed, leaving, end, view, at, excluding)
        if targets is None:
            continue
        staying = tuple(a for a in agreed.placement if a not in leaving)
        placement = tuple(sorted((*staying, *targets), key=lambda a: a.node))
        moved = sum(a.instances for a in leaving)
        changes = (
            f"{moved} instance{'s' * (moved != 1)} not started yet move from {', '.join(a.node for a in leaving)} "
            f"to {', '.join(a.node for a in targets)}, which take them until {time_text(end)}",
        )
        return ExtensionDecision(Reply.ACCEPT, end, placement=placement, changes=changes, moved_from=agreed.placement)
    return None


def _elsewhere(
    agreed: Offer, leaving: list[Allocation], end: datetime, view: CapacityView, at: datetime, excluding: UUID | None,
) -> list[Allocation] | None:
    """Where the instances of `leaving` go, best fit, on nodes `agreed` does not use, over
    [its start, `end`); None if they do not all fit."""
    used = {a.node for a in agreed.placement}
    fits = [f for f in fitting_counts(view, agreed.per_instance, agreed.terms.start, end, at, excluding)
            if f[0] not in used]
    fits.sort(key=lambda f: (-f[2], f[1], f[0]))
    needed = sum(a.instances for a in leaving)
    targets: list[Allocation] = []
    for node, room, _ in fits:
        if needed == 0:
            break
        take = min(room, needed)
        targets.append(Allocation(node, take))
        needed -= take
    return None if needed > 0 else targets


def _offered(
    decision: ExtensionDecision, size: Size, asked_end: datetime, cut: tuple[str, ...], pricing: PricingPolicy,
    agreed: Offer,
) -> ExtensionDecision:
    """`decision`'s end priced, with what was cut and why: ACCEPT if it is the end asked (and
    the quotas cut nothing), else COUNTER."""
    old_end, end = agreed.terms.end, decision.end
    assert end is not None
    price = pricing.quote(size, agreed.terms.instances, old_end, end)
    changes = list(cut)
    if end < asked_end and not cut:
        changes.append(
            f"extension cut from {format_span(asked_end - old_end)} to {format_span(end - old_end)}, "
            f"to {time_text(end)}: the nodes are taken from then"
        )
    elif end < asked_end:
        changes.append(f"the nodes are taken from {time_text(end)}")
    reply = Reply.COUNTER if end < asked_end or cut else Reply.ACCEPT
    return replace(decision, reply=reply, price=price, changes=(*changes, *decision.changes))
