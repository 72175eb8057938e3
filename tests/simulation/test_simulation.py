"""Scheduling quality: workloads, the LWF format, and the comparison of providers."""

from datetime import timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner

from pex.bootstrap import build_simulated_application as build
from pex.cli import main
from pex.simulation.simulate import simulate
from pex.simulation.workload import (
    Request,
    WorkloadError,
    generate,
    offered_load,
    rate_for_load,
    read_lwf,
    write_lwf,
)


def test_a_generated_trace_survives_the_lwf_round_trip(tmp_path):
    trace = generate(200, seed=5)
    write_lwf(trace, tmp_path / "t.lwf")
    assert read_lwf(tmp_path / "t.lwf") == trace


def test_generation_is_reproducible_from_its_seed_and_within_its_bounds():
    assert generate(50, seed=9) == generate(50, seed=9)
    for r in generate(500, seed=2):
        assert 1 <= r.fixed <= 5 and 0 <= r.optional <= 2
        assert timedelta(minutes=30) <= r.duration <= timedelta(days=7)
        assert r.start - r.arrival >= timedelta(minutes=5)


def test_a_haizea_lease_without_pex_terms_is_read_as_the_smallest_size_that_holds_it(tmp_path):
    (tmp_path / "h.lwf").write_text(
        """<?xml version="1.0"?>
<lease-workload name="ar"><lease-requests>
  <lease-request arrival="00:10:00.00"><lease id="7" preemptible="false">
    <nodes><node-set numnodes="2"><res amount="200" type="CPU"/><res amount="1024" type="Memory"/></node-set></nodes>
    <start><exact time="02:00:00.00"/></start><duration time="01:30:00.00"/>
  </lease></lease-request>
  <lease-request arrival="00:20:00.00"><lease id="8" preemptible="true">
    <nodes><node-set numnodes="1"><res amount="100" type="CPU"/></node-set></nodes><start/><duration time="01:00:00.00"/>
  </lease></lease-request>
</lease-requests></lease-workload>"""
    )
    (lease,) = read_lwf(tmp_path / "h.lwf")  # the best-effort lease 8 is not a reservation
    assert (lease.id, lease.size, lease.fixed, lease.start, lease.duration) == (
        7, "MEDIUM", 2, timedelta(hours=2), timedelta(minutes=90),
    )


def test_a_broken_trace_is_a_clear_error(tmp_path):
    (tmp_path / "bad.lwf").write_text("<lease-workload><lease-requests>")
    with pytest.raises(WorkloadError):
        read_lwf(tmp_path / "bad.lwf")


def test_a_lease_whose_start_has_no_time_is_a_clear_error(tmp_path):
    (tmp_path / "no-time.lwf").write_text(
        """<lease-workload><lease-requests><lease-request arrival="00:10:00.00"><lease id="3">
    <nodes><node-set numnodes="1"><res amount="100" type="CPU"/></node-set></nodes>
    <start><exact/></start><duration time="01:00:00.00"/>
</lease></lease-request></lease-requests></lease-workload>"""
    )
    with pytest.raises(WorkloadError, match="lease 3: a time attribute is missing"):
        read_lwf(tmp_path / "no-time.lwf")


def test_negotiation_books_more_than_reject_only_on_a_busy_pool():
    trace = generate(150, rate_per_hour=3, seed=11)
    exact, pex = simulate(trace, "exact", build), simulate(trace, "pex", build)
    assert pex.booked > exact.booked
    assert pex.revenue > exact.revenue
    assert exact.mean_start_delay_hours == 0


def test_the_original_openpex_puts_a_reservation_on_one_host_and_negotiates_once():
    one = Request(1, timedelta(0), "SMALL", 5, 0, timedelta(hours=1), timedelta(hours=1), timedelta(hours=1))
    result = simulate([one], "openpex", build)
    assert result.booked == 0  # five CPUs never fit one 4-CPU host
    assert simulate([one], "pex", build).booked == 1


def test_pex_simulate_reports_every_provider(tmp_path):
    write_lwf(generate(40, seed=4), tmp_path / "t.lwf")
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "t.lwf"), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert "reject-only exact" in result.output and "original OpenPEX" in result.output and "| PEX |" in result.output
    assert (tmp_path / "p.png").stat().st_size > 0


def test_budgets_are_kept():
    r = Request(1, timedelta(0), "XLARGE", 1, 0, timedelta(hours=1), timedelta(hours=10), timedelta(0), Decimal("1.00"))
    assert simulate([r], "pex", build).booked == 0  # 10 hours of XLARGE cost 2.00


def test_a_trace_can_be_drawn_at_an_offered_load_and_in_bursts():
    rate = rate_for_load(0.8, 20, 400, seed=3, bursty=True)
    bursty, plain = generate(400, rate, seed=3, bursty=True), generate(400, rate, seed=3)
    assert offered_load(bursty, 20) == pytest.approx(0.8, abs=0.01)
    # the same requests, arriving otherwise: gaps vary far more in bursts
    assert [(r.size, r.fixed, r.duration) for r in bursty] == [(r.size, r.fixed, r.duration) for r in plain]

    def spread(trace):
        gaps = [(b.arrival - a.arrival).total_seconds() for a, b in zip(trace, trace[1:], strict=False)]
        mean = sum(gaps) / len(gaps)
        return (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean

    assert spread(bursty) > 1.3 * spread(plain)


def test_the_fluid_reference_packs_across_node_boundaries():
    # Five LARGE (3 CPUs each), one a node, leave a CPU on each: no node holds two MEDIUM
    # more, the one bin of 20 CPUs does.
    asks = [("LARGE", 1)] * 5 + [("MEDIUM", 2)]
    trace = [
        Request(i, timedelta(minutes=i), size, n, 0, timedelta(hours=2), timedelta(hours=4), timedelta(0))
        for i, (size, n) in enumerate(asks, start=1)
    ]
    assert simulate(trace, "fluid", build).booked == 6
    assert simulate(trace, "pex", build).booked == 5


def test_users_counter_propose_over_several_rounds():
    # The pool is full at the asked start for 6 hours; this user accepts 2 hours of shift
    # only, so no offer of the provider's (6 hours later) will do: they propose their own
    # terms, within their flexibility, then walk away.
    full = Request(1, timedelta(0), "XLARGE", 5, 0, timedelta(hours=1), timedelta(hours=6), timedelta(0))
    late = Request(2, timedelta(minutes=1), "XLARGE", 1, 0, timedelta(hours=1), timedelta(hours=1), timedelta(hours=2))
    result = simulate([full, late], "pex", build)
    assert result.booked == 1
    assert result.mean_rounds > 1.0  # the second user made more than one proposal


def test_re_packing_makes_room_that_pex_without_it_counters():
    day, h = timedelta(days=1), timedelta(hours=1)

    def ask(i, size, n, start, duration):
        return Request(i, timedelta(minutes=i), size, n, 0, day + start, duration, timedelta(0))

    trace = [
        ask(1, "XLARGE", 3, -4 * h, 10 * h),  # node1-3 full throughout
        ask(2, "XLARGE", 1, -4 * h, 5 * h),  # node4 full until day + 1 h
        ask(3, "MEDIUM", 1, 1 * h, 4 * h),  # on node4 from day + 1 h
        ask(4, "MEDIUM", 1, 0 * h, 4 * h),  # on node5: node4 is full at day
        ask(5, "XLARGE", 1, 1 * h, 3 * h),  # fits if the MEDIUM on node4 joins the other on node5
    ]
    without, with_ = simulate(trace, "pex-no-repack", build), simulate(trace, "pex", build)
    assert (without.booked, with_.booked, with_.moves) == (4, 5, 1)


def test_the_policies_are_compared_on_the_same_trace_and_tell_apart():
    from pex.simulation.simulate import compare_policies

    trace = generate(120, rate_per_hour=3, seed=11)
    results = compare_policies(trace, build, placements=("best-fit", "size-partitioned"), pricings=("flat", "market"))
    assert [r.provider for r in results] == [
        "PEX, best-fit, flat", "PEX, best-fit, market", "PEX, size-partitioned, flat", "PEX, size-partitioned, market",
    ]
    best_fit = results[0]
    assert (best_fit.booked, best_fit.revenue) == (lambda r: (r.booked, r.revenue))(simulate(trace, "pex", build))
    assert results[1].revenue != best_fit.revenue  # the market prices by utilization
    assert results[2].booked < best_fit.booked  # a partitioned pool turns large requests away
    assert all(r.requests == 120 for r in results)


def test_pex_simulate_compares_the_policies_and_takes_one(tmp_path):
    write_lwf(generate(40, seed=3), tmp_path / "t.lwf")
    compared = CliRunner().invoke(main, ["simulate", str(tmp_path / "t.lwf"), "--compare-policies"])
    assert compared.exit_code == 0, compared.output
    for placement in ("best-fit", "least-loaded", "round-robin", "random", "size-partitioned"):
        assert f"| PEX, {placement}, flat |" in compared.output and f"| PEX, {placement}, market |" in compared.output
    one = CliRunner().invoke(main, ["simulate", str(tmp_path / "t.lwf"), "--provider", "pex", "--placement", "random",
                                    "--seed", "4", "--pricing", "market"])
    assert one.exit_code == 0 and "| PEX |" in one.output
    wrong = CliRunner().invoke(main, ["simulate", str(tmp_path / "t.lwf"), "--placement", "first-fit"])
    assert wrong.exit_code == 2 and "first-fit" in wrong.output
