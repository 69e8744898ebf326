"""Rehearse the paper protocols at their true scale on local fixtures, through DVC and a Hydra multirun.

python -m benchmarks.rehearsal cifar10|celebahq|all [--quick] [--device cpu|cuda|auto] [--keep DIR]

For each protocol, in a fresh `git clone` of this repository's HEAD (the workspace is never touched):
  1. `dvc exp run jacobian -S experiment=<preset> -S <local paths> -S <shortening>`: DVC's Hydra
     composition writes params.yaml from conf/ and runs covariance -> trajectories -> jacobian;
  2. the same protocol as a Hydra multirun on the local submitit launcher (hydra/launcher=local,
     conf/hydra/launcher/local.yaml): covariance, trajectories, jacobian and analysis, each `-m`.
It then checks what was written (image counts, parameter count, patch grid, measured rows) and prints,
per stage, the wall time and the peak resident memory of the stage's process (its VmHWM, polled).

The presets are used unchanged except for the overrides in PROTOCOLS: where the inputs are (dataset.root,
model.path) and what shortens the run (one seed, one measured timestep, a few proxy images); --quick
also shortens the chain and the iteration counts so that a test can run it in seconds of compute.
Random weights and synthetic pixels: no paper number is expected (docs/rehearsal.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGE_RE = re.compile(r"stages\.(covariance|trajectories|jacobian|analysis)\b")


@dataclass(frozen=True)
class Protocol:
    preset: str
    checkpoint: str  # folder name under the fixtures root
    data: str  # folder under the fixtures root that dataset.root points at
    measured_t: int  # a paper t of the preset's chain (one measured timestep)
    quick_t: int  # a paper t of the quick chain
    quick_images: int
    quick_sampler: tuple[str, ...]


PROTOCOLS = {
    # ddim50_leading: paper t = 981, 961, ..., 501, ..., 1; quick: 10 leading steps 901, 801, ..., 1
    "cifar10": Protocol(
        "cifar10_paper", "ddpm-cifar10-32", "cifar10", 501, 501, 500, ("sampler.num_steps=10",)
    ),
    # ddim49: t = 980, 960, ..., 500, ..., 20; quick: stride 120 from 980 (980, 860, 740, 620, 500, ...)
    "celebahq": Protocol(
        "celebahq_paper",
        "ddpm-celebahq-256",
        "celebahq",
        500,
        500,
        8,
        ("sampler.stride=120", "sampler.num_steps=8"),
    ),
}


def overrides(name: str, fixtures: Path, quick: bool, device: str, threads: int | None) -> list[str]:
    """The preset plus the only overrides the rehearsal makes (paths, shortening, where it runs)."""
    p = PROTOCOLS[name]
    out = [
        f"experiment={p.preset}",
        f"dataset.root={fixtures / p.data}",
        f"model.path={fixtures / p.checkpoint}",
        "num_seeds=1",
        f"points.steps=[{p.quick_t if quick else p.measured_t}]",
        "proxy.images=4",
        "proxy.timesteps=[999,500]",
    ]
    if device != "cuda":
        # the exact route (3072 VJP rows, ~2,460 forward passes per point) is minutes of GPU and hours of a
        # small CPU: on a CPU the rehearsal measures the diagonal blocks there (docs/performance.md)
        out.append("points.block_steps=[]")
    out += [
        f"device={device}",
        "progress=false",
    ]
    if threads:
        out.append(f"torch_threads={threads}")
    if quick:
        out += [
            f"dataset.num_images={p.quick_images}",
            *p.quick_sampler,
            "measure.power_iters=2",
            "measure.block_power_iters=2",
            "measure.frob_probes=1",
            "measure.blocks=off",
            "proxy.images=2",
            "proxy.timesteps=[500]",
        ]
    if device == "cuda":
        # chunk size and seed batch from free device memory (pipeline.jacobian.memory)
        out += ["measure.chunk_size=auto", "points.seed_batch=auto"]
    return out


# ---------------------------------------------------------------------------------------------------
# Per-stage wall time and peak memory of a process tree


@dataclass
class StageUsage:
    first_seen: float = 0.0
    last_seen: float = 0.0
    peak_rss_mb: float = 0.0
    pids: set = field(default_factory=set)

    @property
    def seen_s(self) -> float:
        return self.last_seen - self.first_seen


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return kids


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of the tree under pid, parents first."""
    out, todo = [], [(pid, 0)]
    while todo:
        p, parent = todo.pop(0)
        out.append((p, parent))
        todo += [(c, p) for c in _children(p)]
    return out


def _proc_info(pid: int) -> tuple[str, float] | None:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        hwm = 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = float(line.split()[1]) / 1024  # kB -> MB
        return cmd, hwm
    except OSError:
        return None


class TreeMonitor:
    """Polls a process tree: per stage (by `stages.<name>` in a command line), the peak VmHWM (the
    process's own resident high-water mark, exact up to the last poll) and the time it was seen."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval = pid, interval
        self.stages: dict[str, StageUsage] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            now = time.time()
            label: dict[int, str] = {}
            for p, parent in _descendants(self.pid):
                info = _proc_info(p)
                if info is None:
                    continue
                # a stage's own command line names it; its children (submitit's job process) inherit it
                m = STAGE_RE.search(info[0])
                stage = m.group(1) if m else label.get(parent)
                if stage is None:
                    continue
                label[p] = stage
                u = self.stages.setdefault(stage, StageUsage(first_seen=now))
                u.last_seen = now
                u.peak_rss_mb = max(u.peak_rss_mb, info[1])
                u.pids.add(p)
            self._stop.wait(self.interval)


# ---------------------------------------------------------------------------------------------------


def subprocess_env() -> dict[str, str]:
    """The environment of a fresh clone's `dvc`/`python` runs: this interpreter first, no tracking or DVC state."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "PIFS_SWEEP_ID", "PIFS_PARENT_RUN_ID", "PYTHONPATH")
        and not k.startswith("DVC_")
    }
    # dvc.yaml's commands say `python`: the interpreter running the rehearsal
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(
        HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg",
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="rehearsal",
        GIT_AUTHOR_EMAIL="rehearsal@localhost",
        GIT_COMMITTER_NAME="rehearsal",
        GIT_COMMITTER_EMAIL="rehearsal@localhost",
    )
    return env


class RehearsalError(RuntimeError):
    pass


def _run(args: list[str], cwd: Path, log: Path) -> tuple[float, dict[str, StageUsage]]:
    t0 = time.time()
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(args)}\n".encode())
        f.flush()
        proc = subprocess.Popen(args, cwd=cwd, env=subprocess_env(), stdout=f, stderr=subprocess.STDOUT)
        with TreeMonitor(proc.pid) as mon:
            rc = proc.wait()
    wall = time.time() - t0
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise RehearsalError(f"{' '.join(args[:6])} ... failed ({rc}); log {log}:\n" + "\n".join(tail))
    return wall, mon.stages


def clone(dest: Path) -> Path:
    """A fresh clone of the runner's HEAD commit; without a git repository (a bare copy of the tree, as on
    some GPU machines) a copy of the tree committed into a new repository, which dvc exp run needs."""
    if not (ROOT / ".git").exists():
        return _snapshot(dest)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, env=subprocess_env())
    # the commit this runner belongs to, whatever branch a clone of the repository would check out
    subprocess.run(["git", "checkout", "-q", head.strip()], cwd=dest, check=True, env=subprocess_env())
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if dirty:
        print("note: the workspace has uncommitted changes; the rehearsal runs the committed HEAD")
    return dest


def _snapshot(dest: Path) -> Path:
    skip = shutil.ignore_patterns(
        ".venv", "data", "mlartifacts", "mlflow.db*", "multirun", ".hydra_runs", "__pycache__", "*.egg-info"
    )
    shutil.copytree(ROOT, dest, ignore=skip)
    for stage_dir in (dest / "outputs").glob("*"):
        for p in stage_dir.iterdir() if stage_dir.is_dir() else []:
            if p.name != ".gitignore":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "rehearsal snapshot"]):
        subprocess.run(["git", *args], cwd=dest, check=True, env=subprocess_env(), capture_output=True)
    print(f"note: {ROOT} is not a git checkout; rehearsing a snapshot of its files")
    return dest


def _meta(folder: Path) -> dict:
    return json.loads((folder / "meta.json").read_text())


def check_outputs(repo: Path, key: str | None, name: str, fixtures_manifest: dict, quick: bool) -> dict:
    """What the protocol must have produced, from the files (raises RehearsalError otherwise)."""
    p = PROTOCOLS[name]
    cov_dir, traj_dir, jac_dir = (
        run_folder(repo, s, key) for s in ("covariance", "trajectories", "jacobian")
    )
    cov = _meta(cov_dir)
    n_images = cov["metrics"].get("num_images")
    want = p.quick_images if quick else (50_000 if name == "cifar10" else 200)
    problems = []
    if n_images is not None and int(n_images) != want:
        problems.append(f"covariance used {n_images} images, expected {want}")
    with open(cov_dir / "patches.csv") as f:
        patches = list(csv.DictReader(f))
    if len(patches) != 16:  # M = 16 in both protocols (8x8 of 32x32, 16x16 of 64x64)
        problems.append(f"{len(patches)} patches, expected 16")
    with open(jac_dir / "global.csv") as f:
        rows = list(csv.DictReader(f))
    t = p.quick_t if quick else p.measured_t
    if [int(r["t"]) for r in rows] != [t]:
        problems.append(f"jacobian rows at t={[r['t'] for r in rows]}, expected [{t}]")
    kappa = float(rows[0]["kappa_pi"]) if rows else float("nan")
    rayleigh = float(rows[0]["rayleigh_max"]) if rows else float("nan")
    # what the preset's tables measure: the global norm (CIFAR-10), the Rayleigh quotients (CelebA-HQ, §7.7)
    if not (kappa > 0 or rayleigh > 0):
        problems.append(f"kappa_pi={kappa}, rayleigh_max={rayleigh}: no positive measurement")
    import numpy as np

    with np.load(next(traj_dir.glob("seed-*.npz"))) as z:
        shape = tuple(z["x"].shape)
    res = 32 if name == "cifar10" else 64
    if shape[1:] != (3, res, res):
        problems.append(f"trajectory images {shape[1:]}, expected (3, {res}, {res})")
    if problems:
        raise RehearsalError(f"{name} ({key}): " + "; ".join(problems))
    return {
        "covariance_images": n_images,
        "trajectory_shape": list(shape),
        "t": t,
        "kappa_pi": kappa,
        "rayleigh_max": rayleigh,
        "n": int(rows[0]["n"]),
        "M": int(rows[0]["M"]),
        "block_method": rows[0].get("block_method"),
        "parameters_millions": round(fixtures_manifest["parameters"][p.checkpoint] / 1e6, 2),
    }


def _stage_table(usage: dict[str, StageUsage], metas: dict[str, dict]) -> dict:
    table = {}
    for stage in ("covariance", "trajectories", "jacobian", "analysis"):
        if stage not in usage and stage not in metas:
            continue
        u = usage.get(stage)
        table[stage] = {
            "wall_s": round(float(metas.get(stage, {}).get("wall_time_s", float("nan"))), 1),
            "process_s": round(u.seen_s, 1) if u else None,
            "peak_rss_mb": round(u.peak_rss_mb) if u else None,
        }
    return table


def _metas(repo: Path, key: str | None) -> dict[str, dict]:
    out = {}
    for stage in ("covariance", "trajectories", "jacobian", "analysis"):
        base = repo / "outputs" / stage
        folders = [base / key] if key else sorted(p for p in base.glob("*") if p.name != "dvc" and p.is_dir())
        for d in folders:
            if (d / "meta.json").is_file():
                out[stage] = _meta(d)
    return out


def rehearse_dvc(repo: Path, name: str, ov: list[str], log: Path) -> dict:
    args = [sys.executable, "-m", "dvc", "exp", "run", "jacobian"]
    for o in ov:
        args += ["-S", o]
    wall, usage = _run(args, repo, log)
    return {"wall_s": round(wall, 1), "stages": _stage_table(usage, _metas(repo, "dvc"))}


def rehearse_multirun(repo: Path, name: str, ov: list[str], log: Path, sweep: str) -> dict:
    usage_all: dict[str, StageUsage] = {}
    wall = 0.0
    for stage in ("covariance", "trajectories", "jacobian", "analysis"):
        args = [sys.executable, "-m", f"stages.{stage}", "-m", "hydra/launcher=local", *ov, f"seed={sweep}"]
        w, usage = _run(args, repo, log)
        wall += w
        usage_all.update(usage)
    return {
        "wall_s": round(wall, 1),
        "sweep": f"seed={sweep}",
        "stages": _stage_table(usage_all, _metas(repo, None)),
    }


def run_folder(repo: Path, stage: str, key: str | None) -> Path:
    """outputs/<stage>/<key>, or (key None) the one run-key folder a multirun wrote beside dvc/."""
    base = repo / "outputs" / stage
    if key is not None:
        return base / key
    found = [p for p in base.iterdir() if p.is_dir() and p.name != "dvc" and not p.name.startswith(".")]
    if len(found) != 1:
        raise RehearsalError(f"expected one {stage} run folder from the multirun in {base}, found {found}")
    return found[0]


def rehearse(
    name: str,
    fixtures: Path,
    workdir: Path,
    *,
    quick: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    paths: tuple[str, ...] = ("dvc", "multirun"),
    sweep: str = "0",
    log=print,
) -> dict:
    from benchmarks.rehearsal.fixtures import verify_manifest

    manifest = verify_manifest(fixtures)
    repo = clone(workdir / f"clone-{name}")
    ov = overrides(name, fixtures.resolve(), quick, device, threads)
    result: dict = {"protocol": name, "preset": PROTOCOLS[name].preset, "overrides": ov, "device": device}
    logfile = workdir / f"{name}.log"
    if "dvc" in paths:
        log(f"[{name}] dvc exp run jacobian -S {' -S '.join(ov)}")
        result["dvc"] = rehearse_dvc(repo, name, ov, logfile)
        result["dvc"]["checks"] = check_outputs(repo, "dvc", name, manifest, quick)
    if "multirun" in paths:
        log(f"[{name}] Hydra multirun on hydra/launcher=local (submitit_local), seed={sweep}")
        result["multirun"] = rehearse_multirun(repo, name, ov, logfile, sweep)
        result["multirun"]["checks"] = check_outputs(repo, None, name, manifest, quick)
    return result


def print_report(res: dict) -> None:
    for path in ("dvc", "multirun"):
        if path not in res:
            continue
        r = res[path]
        c = r["checks"]
        print(
            f"[{res['protocol']}] {path}: {r['wall_s']:.0f} s in all; n = {c['n']}, M = {c['M']}, "
            f"{c['parameters_millions']}M parameters, covariance over {c['covariance_images']} images, "
            f"kappa_pi(t={c['t']}) = {c['kappa_pi']:.4g}, rayleigh_max = {c.get('rayleigh_max', float('nan')):.4g}"
        )
        for stage, s in r["stages"].items():
            print(
                f"    {stage:<12} wall {s['wall_s']:>7.1f} s (process {s['process_s']} s)   "
                f"peak RSS {s['peak_rss_mb']} MB"
            )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("protocol", choices=[*PROTOCOLS, "all"])
    ap.add_argument("--quick", action="store_true", help="small fixtures and a seconds-long measurement (CI)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--threads", type=int, default=None, help="torch_threads for every stage")
    ap.add_argument("--fixtures", default=None, help="fixtures folder (default data/rehearsal[-quick])")
    ap.add_argument("--paths", default="dvc,multirun", help="which routes to rehearse (dvc, multirun)")
    ap.add_argument("--sweep", default="0", help="seed values of the multirun (comma-separated: jobs)")
    ap.add_argument("--keep", default=None, help="keep the clones and logs in this folder")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)

    from benchmarks.rehearsal.fixtures import make_fixtures
    from pipeline.errors import PipelineError

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                "error: --device cuda but CUDA is not available here — run on a GPU machine or use --device cpu"
            )
            return 2
    fixtures = Path(args.fixtures or ROOT / "data" / ("rehearsal-quick" if args.quick else "rehearsal"))
    names = list(PROTOCOLS) if args.protocol == "all" else [args.protocol]
    t0 = time.time()
    try:
        make_fixtures(fixtures, quick=args.quick)
    except PipelineError as e:
        print(f"error: {e}")
        return 2
    print(f"fixtures ready in {time.time() - t0:.0f} s: {fixtures}")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pifs-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    results, rc = [], 0
    try:
        for name in names:
            try:
                res = rehearse(
                    name,
                    fixtures,
                    work,
                    quick=args.quick,
                    device=args.device,
                    threads=args.threads,
                    paths=tuple(args.paths.split(",")),
                    sweep=args.sweep,
                )
            except (RehearsalError, PipelineError) as e:
                print(f"error: rehearsal of {name} failed — {e}")
                rc = 1
                continue
            print_report(res)
            results.append(res)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = {"results": results, "total_s": round(time.time() - t0, 1), "quick": args.quick}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
