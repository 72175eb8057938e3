"""The catalogue and the pool over the API: sizes and templates (read by every user, changed
by administrators), nodes (administrators only), and the quotas (read by every user, with
their own usage; changed by administrators)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import falcon

from pex.application import NotFound, PexApplication
from pex.application.views import DrainView, Leaving
from pex.domain.quotas import DEFAULT_MAX_DURATION, DEFAULT_MAX_LIVE_OFFERS, Quotas
from pex.domain.values import Resources, Size
from pex.http.problems import Problem
from pex.wire import parse_time, rfc1123, rfc1123_or_none, wire_id


def size_json(size: Size, currency: str) -> dict:
    return {
        "name": size.name,
        "cpus": size.cpus,
        "memoryMb": size.memory_mb,
        "diskGb": size.disk_gb,
        "hourlyPrice": str(size.hourly_price),
        "currency": currency,
    }


def node_json(node) -> dict:
    c = node.capacity
    return {
        "name": node.name,
        "pool": node.pool,
        "cpus": c.cpus,
        "memoryMb": c.memory_mb,
        "diskGb": c.disk_gb,
        "available": node.available,
        "drainFrom": rfc1123_or_none(node.drain_from),
        "version": node.version,
    }


def leaving_json(item: Leaving) -> dict:
    return {
        "instanceId": wire_id(item.instance_id),
        "reservationId": wire_id(item.reservation_id),
        "name": item.name,
        "status": item.status,
        "endTime": rfc1123(item.end),
        "movedTo": item.moved_to,
        "migratingTo": item.migrating_to,
        "reason": item.reason,
    }


def drain_json(drain: DrainView) -> dict:
    """A node's drain: what moved at once (in the reply to a drain), what still has to leave,
    and, of that, what cannot (`notMoved`, each with its reason)."""
    return {
        "node": drain.node,
        "drainFrom": rfc1123(drain.drain_from),
        "by": drain.by,
        "moved": [leaving_json(m) for m in drain.moved],
        "leaving": [leaving_json(m) for m in drain.leaving],
        "notMoved": [leaving_json(m) for m in drain.stuck],
    }


def allocation_json(a) -> dict:
    return {
        "reservationId": str(a.reservation_id).upper(),
        "startTime": rfc1123(a.start),
        "endTime": rfc1123(a.end),
        "instances": a.instances,
        "cpus": a.per_instance.cpus,
        "memoryMb": a.per_instance.memory_mb,
        "diskGb": a.per_instance.disk_gb,
        "kind": "hold" if a.is_hold else "booking",
        "holdUntil": rfc1123(a.hold_until) if a.hold_until else None,
    }


class Sizes:
    """/OpenPEX/sizes"""

    auth = {"GET": "user", "POST": "admin"}
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        sizes = sorted(self.application.catalogue().sizes.values(), key=lambda s: (s.cpus, s.memory_mb, s.name))
        resp.media = {"sizes": [size_json(s, self.application.currency) for s in sizes]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        size = Size(
            body["name"], body["cpus"], body["memoryMb"], body["diskGb"], Decimal(str(body.get("hourlyPrice", "0")))
        )
        self.application.define_size(size)
        resp.status = falcon.HTTP_201
        resp.location = f"/OpenPEX/sizes/{size.name}"
        resp.media = size_json(size, self.application.currency)


class SizeResource:
    """/OpenPEX/sizes/{name}"""

    auth = {"GET": "user", "DELETE": "admin"}
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def _size(self, name: str) -> Size:
        size = self.application.catalogue().sizes.get(name)
        if size is None:
            raise NotFound(f"no size {name!r}")
        return size

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = size_json(self._size(name), self.application.currency)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        size = self._size(name)
        self.application.withdraw_size(name)
        resp.media = size_json(size, self.application.currency)


class Templates:
    """/OpenPEX/templates"""

    auth = {"GET": "user", "POST": "admin"}
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        templates = self.application.catalogue().templates
        resp.media = {"templates": [{"name": n, "description": d} for n, d in sorted(templates.items())]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        description = body.get("description", "")
        # With a Xen pool, `name` may be the pool template's uuid: it is offered by its name.
        name = self.application.register_template(body["name"].strip(), description)
        resp.status = falcon.HTTP_201
        resp.location = f"/OpenPEX/templates/{name}"
        resp.media = {"name": name, "description": description}


class Template:
    """/OpenPEX/templates/{name}"""

    auth = {"GET": "user", "DELETE": "admin"}
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def _template(self, name: str) -> dict:
        templates = self.application.catalogue().templates
        if name not in templates:
            raise NotFound(f"no template {name!r}")
        return {"name": name, "description": templates[name]}

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self._template(name)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        template = self._template(name)
        self.application.withdraw_template(name)
        resp.media = template


class Nodes:
    """/OpenPEX/nodes"""

    auth = "admin"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"nodes": [node_json(n) for n in self.application.nodes()]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        name = body["name"]
        self.application.register_node(name, Resources(body["cpus"], body["memoryMb"], body["diskGb"]))
        resp.status = falcon.HTTP_201
        resp.location = f"/OpenPEX/nodes/{name}"
        resp.media = node_json(_node(self.application, name))


def _node(application: PexApplication, name: str):
    for node in application.nodes():
        if node.name == name:
            return node
    raise NotFound(f"no node {name!r}")


class NodeResource:
    """/OpenPEX/nodes/{name}"""

    auth = "admin"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        node = _node(self.application, name)
        body = node_json(node)
        body["allocations"] = [allocation_json(a) for a in self.application.node_allocations(name)]
        drain = self.application.drain(name)
        body["drain"] = drain_json(drain) if drain is not None else None
        resp.etag = str(node.version)
        resp.media = body

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        body = req.get_media()
        if not self.application.has_node(name):
            raise NotFound(f"no node {name!r}")
        self.application.resize_node(name, Resources(body["cpus"], body["memoryMb"], body["diskGb"]))
        resp.media = node_json(_node(self.application, name))


class NodeDrain:
    """/OpenPEX/nodes/{name}/drain: the node's maintenance (administrators).

    PUT drains the node from `drainFrom` (now, if earlier): it takes nothing that lasts until
    then, its bookings that would are re-placed and its running VMs live-migrated; the reply
    says what moved, what is still leaving and what cannot move. PUT again retries what could
    not. DELETE ends the maintenance."""

    auth = "admin"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def _known(self, name: str) -> None:
        if not self.application.has_node(name):
            raise NotFound(f"no node {name!r}")

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._known(name)
        drain = self.application.drain(name)
        if drain is None:
            raise NotFound(f"node {name!r} is not drained")
        resp.media = drain_json(drain)

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        body = req.get_media()
        try:
            drain_from = parse_time(body.get("drainFrom"))
        except ValueError as error:
            raise Problem(422, "invalid-drain", "The drain is not acceptable", str(error), [("/drainFrom", str(error))]) from None
        self._known(name)
        resp.media = drain_json(self.application.drain_node(name, drain_from, req.context.user.username))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._known(name)
        self.application.undrain_node(name, req.context.user.username)
        resp.media = node_json(_node(self.application, name))


# The API's names and units of each quota: whole hours and days, as an operator sets them.
QUOTA_FIELDS = ("maxDurationHours", "horizonDays", "maxCpuHours", "maxLiveOffers")


def quotas_changes(body: dict) -> dict:
    """The Quotas fields a PUT body names, in the domain's units; null is the default."""
    changes: dict = {}
    if "maxDurationHours" in body:
        hours = body["maxDurationHours"]
        changes["max_duration"] = DEFAULT_MAX_DURATION if hours is None else timedelta(hours=hours)
    if "horizonDays" in body:
        days = body["horizonDays"]
        changes["horizon"] = None if days is None else timedelta(days=days)
    if "maxCpuHours" in body:
        changes["max_cpu_hours"] = body["maxCpuHours"]
    if "maxLiveOffers" in body:
        count = body["maxLiveOffers"]
        changes["max_live_offers"] = DEFAULT_MAX_LIVE_OFFERS if count is None else count
    return changes


def quotas_json(application: PexApplication, quotas: Quotas, user: str | None = None) -> dict:
    policy, pool_cpus = application.policy, application.pool_cpus()
    body = {
        "maxDurationHours": quotas.max_duration // timedelta(hours=1),
        "horizonDays": quotas.horizon_in_force(policy.horizon).days,
        "maxCpuHours": quotas.cpu_hours_in_force(pool_cpus),
        "maxLiveOffers": quotas.max_live_offers,
        "defaults": [
            name
            for name, is_default in (
                ("maxDurationHours", quotas.max_duration == DEFAULT_MAX_DURATION),
                ("horizonDays", quotas.horizon is None),
                ("maxCpuHours", quotas.max_cpu_hours is None),
                ("maxLiveOffers", quotas.max_live_offers == DEFAULT_MAX_LIVE_OFFERS),
            )
            if is_default
        ],
    }
    if user is not None:
        usage = application.usage(user)
        body["usage"] = {"cpuHours": round(usage.cpu_hours, 3), "liveOffers": usage.live_offers}
    return body


class QuotasResource:
    """/OpenPEX/quotas

    PUT changes the fields it names and leaves the others; a field set to null goes back to
    its default (the pool's share for maxCpuHours, PEX_HORIZON_DAYS for horizonDays)."""

    auth = {"GET": "user", "PUT": "admin"}
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = req.context.user.username
        resp.media = quotas_json(self.application, self.application.quotas(user), user)

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        changes = quotas_changes(req.get_media())
        quotas = self.application.set_quotas(self.application.quotas().but(**changes), req.context.user.username)
        resp.media = quotas_json(self.application, quotas, req.context.user.username)


class UserQuotas:
    """/OpenPEX/quotas/users/{username}: one user's quotas (administrators).

    PUT gives the user quotas of their own, starting from those in force for them; DELETE puts
    them back under everyone's. `own` says which applies."""

    auth = "admin"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def _user(self, username: str) -> str:
        if self.application.get_user(username) is None:
            raise NotFound(f"no user {username!r}")
        return username

    def _render(self, resp: falcon.Response, username: str) -> None:
        body = quotas_json(self.application, self.application.quotas(username), username)
        body["own"] = self.application.has_own_quotas(username)
        resp.media = body

    def on_get(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        self._render(resp, self._user(username))

    def on_put(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = self._user(username)
        changes = quotas_changes(req.get_media())
        self.application.set_user_quotas(user, self.application.quotas(user).but(**changes), req.context.user.username)
        self._render(resp, user)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = self._user(username)
        self.application.set_user_quotas(user, None, req.context.user.username)
        self._render(resp, user)


class PoliciesResource:
    """/OpenPEX/policies: the provider's policies in force, read by every user (set by the
    operator: PEX_PLACEMENT, PEX_PRICING, PEX_CREDIT; docs/operations.md)."""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        p = self.application.policies()
        body: dict = {"placement": p.placement, "pricing": p.pricing, "credit": p.credit, "currency": p.currency}
        if p.market_floor is not None and p.market_ceiling is not None:
            body["market"] = {"floor": str(p.market_floor), "ceiling": str(p.market_ceiling)}
        resp.media = body
