"""The real Falcon app in process over an in-memory store with a manual clock, every response
checked against the OpenAPI document (`Api`), and the bodies the API tests send.

The helpers ask for PEX's form of every reply (Accept: application/vnd.pex+json), as a PEX
client does; tests of the original's form (test_original_client.py) speak as its client."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import falcon.testing

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.http.app import create_app
from pex.http.contract import ResponseContract, openapi
from pex.http.observability import Metrics
from pex.projections.readmodels import ReadModels
from pex.settings import HttpSettings, PasswordSettings, Settings
from pex.wire import PEX_JSON, rfc1123
from tests.support import T0

ETCH = "PEX Debian Etch 4.0 Template"
PASSWORD = "correct horse battery"
CHEAP = {"PEX_PASSWORD_PROFILE": "cheapest"}  # for a server's environment
CHEAP_PASSWORDS = PasswordSettings(profile="cheapest")


def cheap_settings(database_url: str = "memory:", **overrides) -> Settings:
    """Settings for an application under test: argon2's cheapest profile, never production's."""
    return Settings(database_url=database_url, passwords=CHEAP_PASSWORDS, **overrides)
RICH = {"Accept": PEX_JSON}  # PEX's form of a reply, not the original's


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def proposal(size="SMALL", fixed=1, option=0, start: datetime = T0 + timedelta(hours=2), hours=1.0, **extra) -> dict:
    """Figure 7."""
    body = {
        "duration": int(hours * 3600 * 1000),
        "numInstancesFixed": fixed,
        "numInstancesOption": option,
        "startTime": rfc1123(start),
        "template": ETCH,
        "type": size,
    }
    body.update(extra)
    return body


@dataclass
class Api:
    """The in-process API, with helpers that speak as a given user."""

    client: falcon.testing.TestClient
    application: object
    read_models: ReadModels  # what the list endpoints read
    clock: ManualClock
    contract: ResponseContract
    metrics: Metrics
    users: set = field(default_factory=set)

    def user(self, name: str, admin: bool = False) -> dict[str, str]:
        if name not in self.users:
            self.application.register_user(name, PASSWORD, is_admin=admin)
            self.users.add(name)
        return basic(name)

    def post(self, path, user="alice", **kw):
        return self.client.simulate_post(path, headers={**self.user(user), **RICH, **kw.pop("headers", {})}, **kw)

    def put(self, path, user="alice", **kw):
        return self.client.simulate_put(path, headers={**self.user(user), **RICH, **kw.pop("headers", {})}, **kw)

    def get(self, path, user="alice", **kw):
        return self.client.simulate_get(path, headers={**self.user(user), **RICH, **kw.pop("headers", {})}, **kw)

    def delete(self, path, user="alice", **kw):
        return self.client.simulate_delete(path, headers={**self.user(user), **RICH, **kw.pop("headers", {})}, **kw)

    def propose(self, user="alice", **terms):
        return self.post("/OpenPEX/reservations", user=user, json=proposal(**terms))

    def step(self, reservation_id: str, reply: str, user="alice", proposal_body=None, **kw):
        body = {"reply": reply}
        if proposal_body is not None:
            body["proposal"] = proposal_body
        return self.put(f"/OpenPEX/reservations/{reservation_id}", user=user, json=body, **kw)


def make_api(http: HttpSettings | None = None, database_url: str = "memory:") -> Api:
    clock = ManualClock(T0)
    application = build_application(cheap_settings(database_url), clock=clock)
    read_models = ReadModels(application)
    contract, metrics = ResponseContract(openapi()), Metrics()
    http = http or HttpSettings(log_requests=True, login_failures_allowed=3, login_lockout_seconds=30)
    app = create_app(application, http, read_models=read_models, metrics=metrics, response_contract=contract)
    return Api(falcon.testing.TestClient(app), application, read_models, clock, contract, metrics)
