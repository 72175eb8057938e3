"""The operator's reserve on a pool's hosts (pex.domain.pool): what a node offers is its guest
capacity less the reserve, never less than nothing; a host's own reserve replaces the pool's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pex.domain.errors import CatalogueError
from pex.domain.pool import PoolReserve
from pex.domain.values import Resources

amounts = st.builds(Resources, st.integers(0, 64), st.integers(0, 1 << 20), st.integers(0, 1 << 14))


@given(capacity=amounts, pool_wide=amounts, own=amounts)
def test_a_node_offers_its_capacity_less_its_reserve_and_never_less_than_nothing(capacity, pool_wide, own):
    reserve = PoolReserve(pool_wide, {"h1": own})
    for host, kept in (("h1", own), ("h2", pool_wide)):
        offered = reserve.offered(host, capacity)
        assert offered.fits_in(capacity)
        assert min(offered.cpus, offered.memory_mb, offered.disk_gb) >= 0
        assert offered == Resources(*(max(0, c - k) for c, k in zip(
            (capacity.cpus, capacity.memory_mb, capacity.disk_gb), (kept.cpus, kept.memory_mb, kept.disk_gb), strict=True)))


@given(pool_wide=amounts, own=amounts)
def test_the_setting_reads_back_what_it_says(pool_wide, own):
    text = (f"cpus={pool_wide.cpus} memory_mb={pool_wide.memory_mb} disk_gb={pool_wide.disk_gb}; "
            f"sim-host-0: cpus={own.cpus},memory_mb={own.memory_mb},disk_gb={own.disk_gb}")
    assert PoolReserve.parse(text) == PoolReserve(pool_wide, {"sim-host-0": own})


@pytest.mark.parametrize("text", ["memory=512", "cpus=-1", "cpus", "h: disk_gb=lots"])
def test_a_reserve_that_is_not_name_value_pairs_is_refused_saying_what_it_should_be(text):
    with pytest.raises(CatalogueError, match="name=value pairs of cpus, memory_mb, disk_gb"):
        PoolReserve.parse(text)


def test_no_reserve_keeps_nothing_back():
    assert PoolReserve.parse("") == PoolReserve() and PoolReserve().on("any") == Resources()
