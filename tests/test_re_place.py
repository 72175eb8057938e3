"""Re-placement (pex.domain.placement.re_place): where the instances of a lost node go."""

from __future__ import annotations

from datetime import timedelta

from pex.domain.placement import re_place
from pex.domain.values import Resources
from tests.support import T0

SMALL = Resources(1, 1024, 10)


class Pool:
    """A capacity view with a fixed free capacity per node over any interval."""

    def __init__(self, capacity: dict[str, Resources], free: dict[str, Resources]):
        self._capacity, self._free = capacity, free

    def node_names(self):
        return list(self._capacity)

    def capacity(self, node):
        return self._capacity[node]

    def free(self, node, start, end, at, excluding):
        return self._free[node]


def test_re_placement_prefers_the_most_loaded_node_with_room():
    pool = Pool(
        {"idle": Resources(8, 8192, 100), "busy": Resources(8, 8192, 100)},
        {"idle": Resources(8, 8192, 100), "busy": Resources(2, 2048, 20)},
    )

    assert re_place(pool, SMALL, 3, T0, T0 + timedelta(hours=1), T0) == ["busy", "busy", "idle"]


def test_an_instance_that_fits_nowhere_is_left_without_a_node():
    pool = Pool({"only": Resources(4, 4096, 40)}, {"only": Resources(1, 1024, 10)})

    assert re_place(pool, SMALL, 2, T0, T0 + timedelta(hours=1), T0) == ["only", None]
