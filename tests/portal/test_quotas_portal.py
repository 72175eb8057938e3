"""The portal says which quota refused a proposal."""

from __future__ import annotations

import re
from datetime import timedelta

from tests.portal.test_pages import ask, field_error, reservation_id
from tests.support import T0


def test_a_sixth_live_offer_is_refused_with_the_quotas_message(portal):
    v = portal.user("alice")
    for _ in range(5):
        assert ask(v).status_code == 303
    page = ask(v)
    assert page.status_code == 422
    assert re.search(r'role="alert">you hold 5 live offers, the most one user may', page.text)
    assert len(portal.application.list_reservations("alice")) == 5  # nothing was made for the sixth
    assert portal.application.usage("alice").live_offers == 5


def test_fixed_instances_over_the_cpu_hours_are_refused_beside_the_field(portal):
    v = portal.user("alice")
    page = ask(v, size="XLARGE", fixed=5, hours=str(14 * 24))
    assert page.status_code == 422
    assert "of the 3600 one user may" in field_error(page.text, "instances_fixed")


def test_a_year_is_countered_with_the_longest_reservation(portal):
    v = portal.user("alice")
    rid = reservation_id(ask(v, hours=str(366 * 24)).headers["location"])
    page = v.get(f"/reservations/{rid}")
    assert "duration cut from 366 days to 14 days" in page.text
    assert portal.application.get_reservation(rid).offer.terms.duration == timedelta(days=14)
    assert portal.application.get_reservation(rid).offer.terms.start == T0 + timedelta(hours=2)
