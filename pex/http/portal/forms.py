"""The portal's forms: what a person types, turned into the API's terms, and every refusal
turned back into a message beside the field that caused it.

A reservation form is translated into the paper's Figure 7 body and parsed by the same
`pex.wire.terms_from_json` as the API, then checked by the same catalogue and `check_terms`
rules; so the portal can never accept what the API would refuse. Their errors name wire
fields (`/startTime`, `numInstancesFixed`); FIELD_OF maps those to the form's fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from pex.domain.catalogue import Catalogue
from pex.domain.errors import InvalidProposal
from pex.domain.negotiation import NegotiationPolicy, check_terms
from pex.domain.values import Terms
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
}


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
        )

    def values(self) -> dict[str, str]:
        return asdict(self)

    def terms(self, tz: ZoneInfo) -> Terms:
        """The terms this form asks for; FormErrors naming the form's fields if malformed."""
        errors: dict[str, str] = {}
        body: dict = {"type": self.size, "template": self.template}
        start = end = None
        try:
            start = parse_local(self.start, tz)
            body["startTime"] = rfc3339(start)
        except ValueError as error:
            errors["start"] = str(error).capitalize()
        if self.end:
            try:
                end = parse_local(self.end, tz)
            except ValueError as error:
                errors["end"] = str(error).capitalize()
        elif self.duration:
            try:
                hours = Decimal(self.duration)
                if not hours.is_finite() or hours <= 0:
                    raise InvalidOperation
                if start is not None:
                    end = start + timedelta(seconds=float(hours * 3600))
            except InvalidOperation:
                errors["duration"] = "Give the duration as a positive number of hours"
        else:
            errors["end"] = "Give an end, or a duration in hours"
        if start is not None and end is not None:
            if end <= start:
                errors["end" if self.end else "duration"] = "The end must be after the start"
            else:
                body["duration"] = int((end - start).total_seconds() * 1000)
        for name, wire in (("instances_fixed", "numInstancesFixed"), ("instances_option", "numInstancesOption")):
            raw = getattr(self, name) or ("0" if name == "instances_option" else "")
            try:
                body[wire] = int(raw)
            except ValueError:
                errors[name] = "Give a whole number"
        if self.price:
            try:
                price = Decimal(self.price)
                if not price.is_finite():
                    raise InvalidOperation
                body["price"] = str(price)
            except InvalidOperation:
                errors["price"] = "Give the price as a number, like 2.50"
        try:
            terms = terms_from_json(body)
        except WireError as error:
            for pointer, detail in error.errors:
                if pointer.rsplit("/", 1)[-1] not in body and errors:
                    continue  # missing because of a mistake already reported
                field = form_field(pointer, bool(self.duration and not self.end))
                errors.setdefault(field, detail[:1].upper() + detail[1:])
            raise FormErrors(errors) from None
        if errors:
            raise FormErrors(errors)
        return terms

    def check(self, terms: Terms, catalogue: Catalogue, at: datetime, policy: NegotiationPolicy) -> None:
        """The checks the API makes before negotiating, as field errors."""
        try:
            catalogue.size(terms.size)
            catalogue.check_template(terms.template)
            check_terms(terms, at, policy)
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
