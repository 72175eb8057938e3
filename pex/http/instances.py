"""The instance endpoints of Table 2: list and read a user's VMs; start, stop, reboot, delete them.

The actions are relayed to the application's `start_instance`, `stop_instance`,
`reboot_instance` and `delete_instance`, which the Xen dispatcher provides. An action is a
request the worker carries out: PEX's form answers `202 Accepted` with what was requested and
the instance as it stands; the original's form answers 200 with the instance (VMInstance), as
Table 2 has it. Until it is there, they answer 409
`dispatcher-unavailable` (after the usual 401/404 checks), so clients can be written now.
The list is read from the persisted read model (caught up first); one instance, and its ETag,
from the aggregate. Replies come in the original's form or PEX's (pex.http.reservations.represent).
"""

from __future__ import annotations

from uuid import UUID

import falcon

from pex.application import PexApplication
from pex.http.paging import link_next, page_of
from pex.http.problems import Problem
from pex.http.reservations import check_if_match, owner, represent
from pex.projections.readmodels import ReadModels
from pex.wire import instance_json, original_instance


def with_password(application: PexApplication, req: falcon.Request, view) -> dict:
    """PEX's form of an instance, with its VM's password (if PEX gives VMs one) for its owner
    alone: an administrator reading someone else's instance does not see it."""
    body = instance_json(view)
    if view.user_id == req.context.user.username:
        password = application.vm_password(view.id)
        if password:
            body["vmPassword"] = password
    return body


class Instances:
    """/OpenPEX/instances"""

    auth = "user"
    contract = True

    def __init__(self, read_models: ReadModels, application: PexApplication):
        self.read_models, self.application = read_models, application

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, after = page_of(req, "instances")
        rows = self.read_models.instances(owner(req), limit=limit + 1, after=after)
        rows = link_next(req, resp, "instances", rows, limit, lambda i: (i.start, i.reservation_id, i.index))
        represent(
            req, resp,
            lambda: {"instances": [with_password(self.application, req, i) for i in rows]},
            lambda: [original_instance(i) for i in rows],
        )


def act(application: PexApplication, req: falcon.Request, resp: falcon.Response, vm_id: UUID, action: str) -> None:
    view = application.get_instance(vm_id, owner(req))
    check_if_match(req, view.version)
    command = getattr(application, f"{action}_instance", None)
    if command is None:
        raise Problem(
            409, "dispatcher-unavailable", "Instance actions need the Xen dispatcher",
            f"This PEX cannot {action} instances yet: instance actions need the Xen dispatcher.",
        )
    command(vm_id)
    view = application.get_instance(vm_id)
    resp.etag = str(view.version)

    def requested() -> dict:
        resp.status = falcon.HTTP_202
        return {"requested": action, "instance": instance_json(view)}

    represent(req, resp, requested, lambda: original_instance(view))


class Instance:
    """/OpenPEX/instances/{vm_id}"""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, vm_id: UUID) -> None:
        view = self.application.get_instance(vm_id, owner(req))
        resp.etag = str(view.version)
        represent(req, resp, lambda: with_password(self.application, req, view), lambda: original_instance(view))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, vm_id: UUID) -> None:
        act(self.application, req, resp, vm_id, "delete")


class InstanceAction:
    """/OpenPEX/instances/{vm_id}/start, /stop and /reboot"""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication, action: str):
        self.application, self.action = application, action

    def on_put(self, req: falcon.Request, resp: falcon.Response, vm_id: UUID) -> None:
        act(self.application, req, resp, vm_id, self.action)
