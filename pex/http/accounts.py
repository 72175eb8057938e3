"""Accounts over the API: anyone may register (unless PEX_REGISTRATION=off); a user reads
their own account, an administrator any; the same goes for the account's SSH public keys,
which a user sets for their own new VMs (an administrator may set anyone's)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import falcon

from pex.application import NotFound, PexApplication
from pex.application.accounts import CreditView, UserView, WebhookView
from pex.http.problems import Problem
from pex.projections.webhooks import Delivery
from pex.wire import rfc1123


def user_json(user: UserView) -> dict:
    return {
        "username": user.username,
        "admin": user.is_admin,
        "registeredAt": rfc1123(user.registered_at),
    }


class Users:
    """/OpenPEX/users"""

    auth = None
    contract = True

    def __init__(self, application: PexApplication, registration: bool):
        self.application, self.registration = application, registration

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.registration:
            raise Problem(403, "registration-closed", "Registration is closed", "Ask an administrator for an account.")
        body = req.get_media()
        user = self.application.sign_up(body["username"], body["password"])
        resp.status = falcon.HTTP_201
        resp.location = f"/OpenPEX/users/{user.username}"
        resp.media = user_json(user)


class User:
    """/OpenPEX/users/{username}"""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_or_admin(req, self.application, username)
        resp.etag = str(user.version)
        resp.media = user_json(user)


def own_or_admin(req: falcon.Request, application: PexApplication, username: str) -> UserView:
    """The account `username`, if it is the caller's own or the caller administers; else 404,
    as for a user that does not exist (nobody learns which names are taken)."""
    me = req.context.user
    # Usernames ignore case: /users/Alice is alice's own account.
    user = application.get_user(username) if (me.is_admin or me.username.lower() == username.lower()) else None
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def ssh_keys_json(user: UserView) -> dict:
    return {"username": user.username, "sshKeys": list(user.ssh_keys)}


class SshKeys:
    """/OpenPEX/users/{username}/ssh-keys: the OpenSSH public keys the user's new VMs let in
    (handed to each guest under vm-data/, see docs/operations.md). PUT replaces them all; an
    empty list clears them."""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_or_admin(req, self.application, username)
        resp.etag = str(user.version)
        resp.media = ssh_keys_json(user)

    def on_put(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_or_admin(req, self.application, username)
        body = req.get_media()
        keys = body.get("sshKeys") if isinstance(body, dict) else None
        user = self.application.set_ssh_keys(user.username, keys)
        resp.etag = str(user.version)
        resp.media = ssh_keys_json(user)


def credit_json(credit: CreditView, currency: str) -> dict:
    return {
        "username": credit.username,
        "balance": str(credit.balance),
        "currency": currency,
        "enforced": credit.enforced,
        "entries": [
            {
                "at": rfc1123(e.at), "kind": e.kind, "amount": str(e.amount), "balance": str(e.balance),
                **({"reservationId": str(e.reservation_id).upper()} if e.reservation_id is not None else {}),
                **({"by": e.by} if e.by is not None else {}),
                **({"note": e.note} if e.note else {}),
            }
            for e in credit.entries
        ],
    }


class Credit:
    """/OpenPEX/users/{username}/credit: the user's credit in PEX_CURRENCY (simulated money)
    and its statement, to the user and to administrators. With PEX_CREDIT=on every CONFIRM is
    charged to it and refused beyond it (402 insufficient-credit)."""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_or_admin(req, self.application, username)
        credit = self.application.credit(user.username)
        resp.etag = str(credit.version)
        resp.media = credit_json(credit, self.application.currency)


class CreditGrants:
    """/OpenPEX/users/{username}/credit/grants: an administrator grants credit (a negative
    amount takes it back, never below zero); the answer is the credit after it."""

    auth = "admin"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_post(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_or_admin(req, self.application, username)
        body = req.get_media()
        credit = self.application.grant_credit(user.username, body.get("amount"), req.context.user.username, body.get("note", ""))
        resp.etag = str(credit.version)
        resp.media = credit_json(credit, self.application.currency)


def webhook_json(username: str, view: WebhookView | None) -> dict:
    body: dict = {"username": username, "url": view.url if view else None,
                  "since": rfc1123(view.since) if view and view.since else None}
    if view is not None and view.secret is not None:
        body["secret"] = view.secret
    return body


def delivery_json(delivery: Delivery) -> dict:
    return {
        "id": delivery.id,
        "type": delivery.kind,
        "status": delivery.status.upper(),
        "attempts": delivery.attempts,
        "dueAt": iso_time(delivery.due),
        "nextAttemptAt": iso_time(delivery.next) if delivery.status == "pending" else None,
        "finishedAt": iso_time(delivery.finished) if delivery.finished is not None else None,
        "lastStatus": delivery.last_code,
        "lastError": delivery.last_error,
        "body": json.loads(delivery.body),
    }


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def own_account(req: falcon.Request, application: PexApplication, username: str) -> UserView:
    """The account `username` if it is the caller's own: a webhook's secret is shown to its owner
    alone, so not even an administrator registers one for another (404, as for anyone else)."""
    me = req.context.user
    user = application.get_user(username) if me.username.lower() == username.lower() else None
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


class Webhook:
    """/OpenPEX/users/{username}/webhook: where the user's notifications go (pex.workers.webhooks).
    PUT {"url"} registers it and answers the signing secret, once; {"rotateSecret": true} makes
    a new one (the old stops at once); changing only the URL keeps it. DELETE removes it. The
    owner reads, sets and removes it; an administrator may read and remove anyone's."""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_or_admin(req, self.application, username)
        resp.media = webhook_json(user.username, self.application.webhook_of(user.username))

    def on_put(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_account(req, self.application, username)
        body = req.get_media()
        if not isinstance(body, dict):
            raise Problem(422, "invalid-account", "The account details are not acceptable",
                          "The body is an object: {\"url\": \"https://...\"}.", errors=[("/url", "a URL")])
        rotate = body.get("rotateSecret", False)
        if not isinstance(rotate, bool):
            raise Problem(422, "invalid-account", "The account details are not acceptable",
                          "rotateSecret is true or false.", errors=[("/rotateSecret", "true or false")])
        view = self.application.set_webhook(user.username, body.get("url"), rotate_secret=rotate)
        resp.media = webhook_json(user.username, view)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_or_admin(req, self.application, username)
        self.application.remove_webhook(user.username)
        resp.status = falcon.HTTP_204


class WebhookDeliveries:
    """/OpenPEX/users/{username}/webhook/deliveries: the user's delivery log, newest first
    (pending deliveries too), at most ?limit=N (100); the owner's or an administrator's."""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, username: str) -> None:
        user = own_or_admin(req, self.application, username)
        limit = req.get_param_as_int("limit", min_value=1, max_value=100) or 100
        deliveries = self.application.webhook_deliveries(user.username, limit)
        resp.media = {"username": user.username, "deliveries": [delivery_json(d) for d in deliveries]}
