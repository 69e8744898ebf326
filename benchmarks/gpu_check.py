"""Everything CUDA in one go, for a machine with a GPU (under ten minutes): the `gpu` tests, the Jacobian
benchmark on CUDA (with the exact route at n = 3072 timed in full: all VJP rows, then the exact quantities and
the paper's estimators replayed) and the CIFAR-10 rehearsal on CUDA (its one point on the exact route), then
one summary.

python -m benchmarks.gpu_check [--quick-rehearsal] [--out gpu_check.json]

Steps (each with its own time limit, all from the project root):
  1. pytest -m gpu tests/test_gpu.py            engine, sampler, stage chain, memory model: CUDA vs CPU
  2. python -m benchmarks.jacobian --device cuda --quick
  3. python -m benchmarks.rehearsal cifar10 --device cuda  (fixtures built first if absent; --quick-rehearsal
     for the small fixtures and a seconds-long measurement)
The summary gives each step's status and wall time and the figures docs/performance.md asks for
(forward pass, power-step forward equivalents, batching gains, the rehearsal's per-stage wall time and memory).
Without CUDA it stops at once with one line saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMITS_S = {"gpu_tests": 240, "benchmark": 180, "rehearsal": 420}


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _step(name: str, args: list[str]) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    t0 = time.time()
    try:
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LIMITS_S[name])
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (
            (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""),
            124,
        )
    wall = time.time() - t0
    status = "ok" if rc == 0 else ("timed out" if rc == 124 else f"failed ({rc})")
    print(f"[{name}] {status} in {wall:.0f} s")
    if rc != 0:
        print("\n".join(out.splitlines()[-30:]))
    return {"status": status, "wall_s": round(wall, 1), "output": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick-rehearsal", action="store_true", help="small fixtures (seconds of GPU work)")
    ap.add_argument("--out", default="gpu_check.json", help="the summary as JSON (default gpu_check.json)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False) — run this on a machine with a GPU")
        return 2
    t0 = time.time()
    gpu = torch.cuda.get_device_name(0)
    free, total = torch.cuda.mem_get_info(0)
    print(f"device: {gpu}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, torch {torch.__version__}")
    py = sys.executable
    steps = {
        "gpu_tests": _step("gpu_tests", [py, "-m", "pytest", "-q", "-m", "gpu", "-rs", "tests/test_gpu.py"]),
        "benchmark": _step("benchmark", [py, "-m", "benchmarks.jacobian", "--device", "cuda", "--quick"]),
        "rehearsal": _step(
            "rehearsal",
            [py, "-m", "benchmarks.rehearsal", "cifar10", "--device", "cuda"]
            + (["--quick"] if args.quick_rehearsal else []),
        ),
    }
    summary: dict = {"device": gpu, "free_gib": round(free / 2**30, 1), "total_gib": round(total / 2**30, 1)}
    m = re.search(r"(\d+) passed", steps["gpu_tests"]["output"])
    summary["gpu_tests"] = {
        "status": steps["gpu_tests"]["status"],
        "passed": int(m.group(1)) if m else 0,
        "wall_s": steps["gpu_tests"]["wall_s"],
    }
    bench = _last_json(steps["benchmark"]["output"]) or {}
    keys = (
        "forward_ms",
        "forward_b8_per_image_ms",
        "forward_batch16_gain",
        "pi_step_forward_equivalents",
        "pi_speedup_vs_naive",
        "block_vmap_speedup_vs_loop",
        "block_dense_speedup_vs_paper_loop",
        "seed_batch_speedup",
        "exact_route_rows_s",
        "exact_route_replay_s",
        "exact_route_vs_rows",
    )
    summary["benchmark"] = {"status": steps["benchmark"]["status"], **{k: bench.get(k) for k in keys}}
    if bench.get("exact_route_rows_s") is not None:
        # one measured point of the exact route times the preset's points (8 seeds x 50 steps)
        points = (bench.get("protocol_plans") or {}).get("cifar10_paper", {}).get("points", 400)
        per_point = bench["exact_route_rows_s"] + bench["exact_route_replay_s"]
        summary["benchmark"]["cifar10_paper_minutes_from_one_point"] = round(points * per_point / 60, 1)
    reh = _last_json(steps["rehearsal"]["output"]) or {}
    summary["rehearsal"] = {"status": steps["rehearsal"]["status"], "results": reh.get("results")}
    summary["total_s"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print("summary:")
    print(f"  gpu tests: {summary['gpu_tests']['status']}, {summary['gpu_tests']['passed']} passed")
    print(
        "  benchmark: "
        + ", ".join(
            f"{k} {summary['benchmark'][k]}"
            for k in (*keys, "cifar10_paper_minutes_from_one_point")
            if summary["benchmark"].get(k) is not None
        )
    )
    for res in reh.get("results") or []:
        for route in ("dvc", "multirun"):
            if route in res:
                stages = ", ".join(
                    f"{s} {v['wall_s']} s / {v['peak_rss_mb']} MB" for s, v in res[route]["stages"].items()
                )
                print(f"  rehearsal {res['protocol']} {route}: {res[route]['wall_s']} s ({stages})")
    print(f"  total {summary['total_s']:.0f} s; written to {args.out}")
    print(json.dumps({k: v for k, v in summary.items() if k != "rehearsal"}))
    return 0 if all(s["status"] == "ok" for s in steps.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
