"""Accounts over the API: anyone may register (unless PEX_REGISTRATION=off); a user reads
their own account, an administrator any."""

from __future__ import annotations

import falcon

from pex.application import NotFound, PexApplication
from pex.application.accounts import UserView
from pex.http.problems import Problem
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
        me = req.context.user
        # Usernames ignore case: /users/Alice is alice's own account.
        user = self.application.get_user(username) if (me.is_admin or me.username.lower() == username.lower()) else None
        if user is None:
            raise NotFound(f"no user {username!r}")
        resp.etag = str(user.version)
        resp.media = user_json(user)
