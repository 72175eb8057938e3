"""The portal's forms: what a person types, turned into the API's terms, and every refusal
turned back into a message beside the field that caused it.

A reservation form is translated into the paper's Figure 7 body and parsed by the same
`pex.wire.terms_from_json` as the API, then checked by the same catalogue and `check_terms`
rules; so the portal can never accept what the API would refuse. Their errors name wire
fields (`/startTime`, `numInstancesFixed`); FIELD_OF maps those to the form's fields.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from openapi_schema_validator import OAS31Validator

from pex.domain.errors import InvalidProposal
from pex.domain.values import Terms
from pex.http.contract import spec_dict
from pex.http.portal.pages import local_input, parse_local
from pex.wire import WireError, rfc3339, terms_from_json

# Wire field (Figure 7, InvalidProposal.field) → form field.
FIELD_OF = {
    "type": "size",
    "template": "template",
    "startTime": "start",
    "duration": "end",
    "endTime": "end",
    "numInstancesFixed": "instances_fixed",
    "numInstancesOption": "instances_option",
    "price": "price",
    "latestStart": "latest_start",
    "minDuration": "min_duration",
}


OUT_OF_RANGE = "Enter a date between the years 1 and 9999"
MAX_HOURS = 10 * 366 * 24  # the API's longest duration, 316224000000 ms
# What the API's schema refuses, said for the form's fields.
SCHEMA_MESSAGES = {
    "size": "Choose one of the sizes offered",
    "template": "Choose one of the templates offered",
    "duration": f"Give a positive number of hours, at most {MAX_HOURS} (ten years)",
    "end": "At most ten years after the start",
    "instances_fixed": "Between 0 and 100000",
    "instances_option": "Between 0 and 100000",
    "price": "Give the price as a number with at most 12 digits and 6 decimals, like 2.50",
    "latest_start": OUT_OF_RANGE,
    "min_duration": f"Give a positive number of hours, at most {MAX_HOURS} (ten years)",
}


@functools.cache
def proposal_schema():
    """The API's schema of a proposal (Figure 7), from the OpenAPI document."""
    return OAS31Validator(spec_dict()["components"]["schemas"]["Proposal"])


class FormErrors(Exception):
    """Field → message, for every field that was refused."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def form_field(wire_field: str, duration_given: bool = False) -> str:
    name = wire_field.rsplit("/", 1)[-1]
    mapped = FIELD_OF.get(name, "form")
    if mapped == "end" and duration_given:
        return "duration"
    return mapped


def hours_text(span: timedelta) -> str:
    """A span as the form's hours are typed: `1.5`, `2`."""
    hours = Decimal(span // timedelta(milliseconds=1)) / 3_600_000
    return format(hours.normalize(), "f")


@dataclass
class ReservationForm:
    """The new-reservation form (and a user's own counter-proposal) as typed: strings."""

    size: str = ""
    template: str = ""
    start: str = ""
    end: str = ""
    duration: str = ""  # hours, when no end is given
    instances_fixed: str = "1"
    instances_option: str = "0"
    price: str = ""  # the highest total price the user will pay; empty for any
    auto_start: str = "on"  # "on": the VMs start by themselves at the start (the default); "off": once activated
    latest_start: str = ""  # flexible: any start up to this one will do; empty for the start exactly
    min_duration: str = ""  # flexible: hours the provider may shorten it to; empty for the duration exactly
    nonce: str = ""  # one per form shown: a resubmitted form does not make a second reservation

    @classmethod
    def from_post(cls, data: dict[str, str]) -> ReservationForm:
        return cls(**{f.name: str(data.get(f.name, "")).strip() for f in fields(cls) if f.name in data})

    @classmethod
    def from_terms(cls, terms: Terms, tz: ZoneInfo) -> ReservationForm:
        return cls(
            size=terms.size,
            template=terms.template,
            start=local_input(terms.start, tz),
            end=local_input(terms.end, tz),
            instances_fixed=str(terms.instances_fixed),
            instances_option=str(terms.instances_option),
            price="" if terms.price is None else str(terms.price),
            auto_start="on" if terms.auto_start else "off",
            latest_start="" if terms.latest_start is None else local_input(terms.latest_start, tz),
            min_duration="" if terms.min_duration is None else hours_text(terms.min_duration),
        )

    def values(self) -> dict[str, str]:
        return asdict(self)

    def terms(self, tz: ZoneInfo, now: datetime | None = None) -> Terms:
        """The terms this form asks for; FormErrors naming the form's fields if malformed.

        The form becomes a Figure 7 body that must pass the API's own schema (its limits:
        at most ten years, 100000 instances, a price of 12 digits and 6 decimals) before the
        API's parser reads it; nothing here computes a date from what was typed, so no value
        can overflow. `now` settles a start typed in the hour the clocks go back (`parse_local`)."""
        errors: dict[str, str] = {}
        body: dict = {"type": self.size, "template": self.template}
        start = end = None
        try:
            start = parse_local(self.start, tz, not_before=now)
            body["startTime"] = rfc3339(start)
        except (ValueError, OverflowError) as error:
            errors["start"] = str(error).capitalize() if isinstance(error, ValueError) else OUT_OF_RANGE
        if self.end:
            try:
                end = parse_local(self.end, tz, not_before=start)
            except (ValueError, OverflowError) as error:
                errors["end"] = str(error).capitalize() if isinstance(error, ValueError) else OUT_OF_RANGE
        elif self.duration:
            try:
                hours = Decimal(self.duration)
                if not hours.is_finite() or hours <= 0:
                    raise InvalidOperation
                if hours > MAX_HOURS:
                    errors["duration"] = f"At most {MAX_HOURS} hours (ten years)"
                else:
                    body["duration"] = int(hours * 3_600_000)
            except InvalidOperation:
                errors["duration"] = "Give the duration as a positive number of hours"
        else:
            errors["end"] = "Give an end, or a duration in hours"
        if start is not None and end is not None:
            if end <= start:
                errors["end"] = "The end must be after the start"
            else:
                body["duration"] = int((end - start).total_seconds() * 1000)
        for name, wire in (("instances_fixed", "numInstancesFixed"), ("instances_option", "numInstancesOption")):
            raw = getattr(self, name) or ("0" if name == "instances_option" else "")
            try:
                body[wire] = int(raw)
            except ValueError:
                errors[name] = "Give a whole number"
        body["autoStart"] = self.auto_start != "off"
        if self.latest_start:
            try:
                body["latestStart"] = rfc3339(parse_local(self.latest_start, tz, not_before=start or now))
            except (ValueError, OverflowError) as error:
                errors["latest_start"] = str(error).capitalize() if isinstance(error, ValueError) else OUT_OF_RANGE
        if self.min_duration:
            try:
                hours = Decimal(self.min_duration)
                if not hours.is_finite() or hours <= 0 or hours > MAX_HOURS:
                    raise InvalidOperation
                body["minDuration"] = max(1, int(hours * 3_600_000))
            except InvalidOperation:
                errors["min_duration"] = SCHEMA_MESSAGES["min_duration"]
        if self.price:
            body["price"] = self.price  # as typed: the API's pattern decides, as for a client's string
        for invalid in proposal_schema().iter_errors(body):
            if invalid.path:
                field = form_field(str(invalid.path[0]), bool(self.duration and not self.end))
                errors.setdefault(field, SCHEMA_MESSAGES.get(field, "Out of the accepted range"))
        if errors:
            raise FormErrors(errors)
        try:
            return terms_from_json(body)
        except WireError as error:
            raise FormErrors({
                form_field(pointer, bool(self.duration and not self.end)): detail[:1].upper() + detail[1:]
                for pointer, detail in reversed(error.errors)
            }) from None

    def check(self, terms: Terms, check_proposal: Callable[[Terms], None]) -> None:
        """The checks the API makes before negotiating (the application's `check_proposal`), as
        field errors."""
        try:
            check_proposal(terms)
        except InvalidProposal as error:
            raise FormErrors({self.field_of(error): error.detail[:1].upper() + error.detail[1:]}) from None

    def field_of(self, error: InvalidProposal) -> str:
        return form_field(error.field, bool(self.duration and not self.end))


@dataclass
class AccountForm:
    username: str = ""
    password: str = ""
    confirm: str = ""

    @classmethod
    def from_post(cls, data: dict[str, str]) -> AccountForm:
        return cls(
            username=str(data.get("username", "")).strip(),
            password=str(data.get("password", "")),
            confirm=str(data.get("confirm", "")),
        )
