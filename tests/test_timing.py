"""The latency harness's statistics and its interleaving, on a simulated clock (no timing thresholds): a host
that slows down mid-run must shift both sides of a ratio, not one."""

import numpy as np
import pytest

from edgesr.benchmarks.latency import latency_stats, measure_interleaved, measure_latency, speedup


class Host:
    """A simulated machine: a clock that advances only when a fake backend 'computes', and a load factor
    that triples once the clock passes ``slow_after`` (a neighbour arriving, a host migration)."""

    def __init__(self, slow_after: float):
        self.t, self.slow_after = 0.0, slow_after

    def clock(self) -> float:
        return self.t

    def backend(self, cost_s: float):
        host = self

        class Fake:
            def run(self, x):
                host.t += cost_s * (3.0 if host.t >= host.slow_after else 1.0)
                return np.zeros((x.shape[0], 3, 2 * x.shape[2], 2 * x.shape[3]), np.float32)
        return Fake()


def test_a_mid_run_slowdown_shifts_both_sides_of_an_interleaved_ratio():
    """The true speed-up of b over a is 2. Timed block after block, the host's slowdown during b's block
    makes b look slower than a; timed interleaved, the ratio stays 2."""
    host = Host(slow_after=0.42)  # a takes 10 ms, b 5 ms: the slowdown starts as a's block ends
    a, b = host.backend(0.010), host.backend(0.005)
    blocks = {"a": measure_latency(a, (8, 8), warmup=1, runs=40, clock=host.clock),
              "b": measure_latency(b, (8, 8), warmup=1, runs=40, clock=host.clock)}
    assert blocks["a"]["p50_ms"] / blocks["b"]["p50_ms"] == pytest.approx(10 / 15)  # the drift, in the ratio

    host = Host(slow_after=0.42)
    a, b = host.backend(0.010), host.backend(0.005)
    res = measure_interleaved({"a": a, "b": b}, (8, 8), warmup=1, rounds=80, clock=host.clock)
    assert res["rounds"] == 80
    lat = res["latency"]
    assert lat["a"]["min_ms"] == pytest.approx(10) and lat["a"]["p90_ms"] == pytest.approx(30)  # it did slow down
    sp = speedup(res["times_ms"]["a"], res["times_ms"]["b"])
    assert sp["ratio"] == pytest.approx(2.0, rel=0.02) and sp["per_round_median"] == pytest.approx(2.0)
    assert sp["ci95"][0] <= sp["ratio"] <= sp["ci95"][1]
    # Each round ran each backend once, in a shuffled order (both orders occur).
    assert all(sorted(o) == ["a", "b"] for o in res["order"])
    assert {tuple(o) for o in res["order"]} == {("a", "b"), ("b", "a")}


def test_rounds_stop_at_the_time_budget_but_never_below_the_minimum():
    host = Host(slow_after=1e9)
    res = measure_interleaved({"a": host.backend(0.1), "b": host.backend(0.1)}, (4, 4), warmup=1, rounds=1000,
                              max_seconds=2.0, min_rounds=3, clock=host.clock)
    assert res["rounds"] == 10  # 0.2 s per round: the 2 s budget ends it
    host = Host(slow_after=1e9)
    res = measure_interleaved({"a": host.backend(1.0)}, (4, 4), warmup=1, rounds=1000, max_seconds=0.5,
                              min_rounds=4, clock=host.clock)
    assert res["rounds"] == 4


def test_latency_statistics_on_known_times():
    t = list(range(1, 101))  # 1..100 ms
    s = latency_stats(t, batch=2, out_hw=(100, 200))
    assert (s["min_ms"], s["p50_ms"], s["runs"]) == (1, 50.5, 100)
    assert s["p10_ms"] == pytest.approx(10.9) and s["p90_ms"] == pytest.approx(90.1)
    assert s["spread"] == pytest.approx((90.1 - 10.9) / 50.5, abs=1e-4)
    assert s["fps"] == pytest.approx(2e3 / 50.5, abs=0.01)
    assert s["output_mpix_per_s"] == pytest.approx(2 * 0.02 / 0.0505, abs=0.01)
    with pytest.raises(ValueError, match="no timed runs"):
        latency_stats([])


def test_speedup_interval_widens_with_noise_and_needs_paired_rounds():
    rng = np.random.default_rng(0)
    quiet = speedup(np.full(50, 10.0) + rng.normal(0, 0.05, 50), np.full(50, 5.0) + rng.normal(0, 0.025, 50))
    noisy = speedup(10.0 * rng.lognormal(0, 0.4, 50), 5.0 * rng.lognormal(0, 0.4, 50))
    assert quiet["ci_rel_width"] < 0.02 < 0.10 < noisy["ci_rel_width"]
    with pytest.raises(ValueError, match="interleaved"):
        speedup([1.0, 2.0], [1.0])
