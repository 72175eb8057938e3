"""The provider's answer to a request to extend a confirmed or activated reservation.

`evaluate_extension` is a pure function, as `pex.domain.negotiation.evaluate` is: given the
agreed offer, the end the user asks for (already cut to the quotas), a CapacityView, the
decision time and the pricing, it answers ACCEPT (the end asked, on the same nodes), COUNTER
(the longest extension the same nodes can take, with its price) or REJECT (not a minute
more fits). The instances stay where they are booked, so that running VMs keep running; the
nodes then hold [agreed end, new end) until the user confirms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from pex.domain.negotiation import format_span
from pex.domain.placement import CapacityView
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
    excluding: UUID | None = None, cut: tuple[str, ...] = (),
) -> ExtensionDecision:
    """Answer a request to move `agreed`'s end to `asked_end` (later than its end). `cut` says
    why `asked_end` is already less than the user asked (the quotas), and makes it a COUNTER."""
    old_end = agreed.terms.end
    end = asked_end
    for allocation in agreed.placement:
        demand = agreed.per_instance * allocation.instances
        end = min(end, longest_end(view, allocation.node, demand, old_end, end, at, excluding))
        if end <= old_end:
            return ExtensionDecision(
                Reply.REJECT,
                reason=f"node {allocation.node} has no room for its {allocation.instances} {size.name} "
                f"instance{'s' * (allocation.instances != 1)} after {time_text(old_end)}",
            )
    price = pricing.quote(size, agreed.terms.instances, old_end, end)
    changes = list(cut)
    if end < asked_end and not cut:
        changes.append(
            f"extension cut from {format_span(asked_end - old_end)} to {format_span(end - old_end)}, "
            f"to {time_text(end)}: the nodes are taken from then"
        )
    elif end < asked_end:
        changes.append(f"the nodes are taken from {time_text(end)}")
    reply = Reply.COUNTER if changes else Reply.ACCEPT
    return ExtensionDecision(reply, end, price, agreed.placement, tuple(changes))
