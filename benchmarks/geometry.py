"""Benchmark of the schedule geometry: the full table for 100 schedules of T = 1000 (goal < 1 s) and λ** for
one T = 1000 chain (goal < 10 ms), each beside a pure-Python loop baseline measured in the same run.

Run: python -m benchmarks.geometry   (last line: one JSON object)
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time

from pipeline.geometry import (
    cosine_schedule,
    full_chain,
    geometry_table,
    linear_schedule,
    moran_threshold,
)


def _schedules(n: int = 100):
    out = []
    for i in range(n):
        if i % 2:
            out.append(cosine_schedule(1000, s_off=0.016 * i / n, name=f"cos{i}"))
        else:
            out.append(linear_schedule(1000, 1e-4, 0.01 + 0.02 * i / n, name=f"lin{i}"))
    return out


# ---------------------------------------------------------------- naive baseline (pure Python loops)


def _naive_f(a: float, p: float, lam: float) -> float:
    v = 1.0 - a
    return (lam * math.sqrt(p * a) + math.sqrt((1.0 - p) * v)) / (lam * a + v)


def _naive_moran(ab: list[float], xtol: float = 1e-12) -> float:
    T = len(ab) - 1

    def g(lam: float) -> float:
        return sum(math.log(_naive_f(ab[t], ab[t - 1], lam)) for t in range(1, T + 1))

    lo, hi = 1.0, 2.0
    while g(hi) < 0:
        hi *= 2
    while hi - lo > xtol:
        mid = 0.5 * (lo + hi)
        if g(mid) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _naive_row(ab: list[float]) -> dict:
    T = len(ab) - 1
    L, ls = [], []
    for t in range(T, 0, -1):
        a, p = ab[t], ab[t - 1]
        b = math.sqrt(1 - p) - math.sqrt(p) * math.sqrt(1 - a) / math.sqrt(a)
        L.append((math.sqrt(p / a) - 1) / abs(b))
        v, w = 1 - a, 1 - p
        ls.append(
            math.sqrt(v) * (math.sqrt(v) - math.sqrt(w)) / ((math.sqrt(p) - math.sqrt(a)) * math.sqrt(a))
        )
    mean = sum(L) / T
    sd = math.sqrt(sum((x - mean) ** 2 for x in L) / T)
    i = min(range(T), key=ls.__getitem__)
    return {
        "mean_L": mean,
        "cv_L": sd / mean,
        "L_finest": L[-1],
        "min_lambda_star": ls[i],
        "argmin_t": T - i,
        "lambda_starstar": _naive_moran(ab),
    }


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> dict:
    scheds = _schedules(100)
    chains = [full_chain(s) for s in scheds]
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")

    rows = geometry_table(chains)
    table_best, table_med = _best(lambda: geometry_table(chains), 5)
    lists = [s.alpha_bar.tolist() for s in scheds]
    naive_subset = 20  # the pure-Python table is slow; time 20 schedules and scale to 100
    t0 = time.perf_counter()
    naive_rows = [_naive_row(ab) for ab in lists[:naive_subset]]
    naive_table = (time.perf_counter() - t0) * (100 / naive_subset)
    # Same numbers from both implementations, checked on the linear rows (even indices): on the unclipped
    # cosine the naive literal formulas at t = T are float64 cancellation noise.
    for r, n in zip(rows[:naive_subset:2], naive_rows[::2], strict=True):
        assert abs(r["lambda_starstar"] - n["lambda_starstar"]) < 1e-10, (r, n)
        assert abs(r["cv_L"] - n["cv_L"]) < 1e-9
    print(
        f"table, 100 schedules of T=1000: best {table_best * 1e3:.1f} ms (median {table_med * 1e3:.1f} ms); "
        f"pure-Python loop baseline {naive_table:.2f} s (20 timed, x5) -> {naive_table / table_best:.0f}x"
    )

    ch = full_chain(linear_schedule())
    moran_best, moran_med = _best(lambda: moran_threshold(ch), 50)
    ab = linear_schedule().alpha_bar.tolist()
    naive_best, _ = _best(lambda: _naive_moran(ab), 3)
    assert abs(_naive_moran(ab) - moran_threshold(ch).lambda_starstar) < 2e-12
    print(
        f"lambda** for one T=1000 chain: best {moran_best * 1e3:.3f} ms (median {moran_med * 1e3:.3f} ms); "
        f"pure-Python bisection baseline {naive_best * 1e3:.1f} ms -> {naive_best / moran_best:.0f}x"
    )
    res = {
        "table_100_schedules_s": round(table_best, 5),
        "table_100_schedules_median_s": round(table_med, 5),
        "table_100_schedules_naive_s": round(naive_table, 4),
        "table_speedup_vs_naive": round(naive_table / table_best, 1),
        "moran_T1000_ms": round(moran_best * 1e3, 4),
        "moran_T1000_median_ms": round(moran_med * 1e3, 4),
        "moran_T1000_naive_ms": round(naive_best * 1e3, 3),
        "moran_speedup_vs_naive": round(naive_best / moran_best, 1),
        "goals_met": bool(table_best < 1.0 and moran_best < 0.010),
    }
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
