"""DVC end to end on a fresh clone: `dvc repro` of the four stages on the smoke preset, the
no-op rerun, a parameter change that reruns only the stages downstream of it, and a DVC
experiment with Hydra composition (`dvc exp run -S ...`, enabled in .dvc/config).

The clone is of this repository's HEAD (committed files only, as a new user gets them). In it,
`python -m stages.params experiment=smoke` writes the smoke preset into params.yaml, which
is committed, and then DVC drives everything. Which stages ran is read from DVC's own
output ("Running stage '<name>'"), and what they computed from their output files.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.rehearsal.run import subprocess_env

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("covariance", "trajectories", "jacobian", "analysis")
LEARNED = tuple(f"{s}_learned" for s in STAGES)
# the companion chain (params_learned.yaml) cut to seconds: one seed, two points of a 10-step chain
LEARNED_SMOKE = [
    "experiment=learned16",
    "num_seeds=1",
    "sampler.num_steps=10",
    "points.steps=[1000,100]",
    "points.block_steps=null",
    "dataset.num_images=512",
    "proxy.images=16",
    "proxy.timesteps=[999,500]",
]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _env() -> dict[str, str]:
    return subprocess_env()


def _run(args: list[str], cwd: Path, timeout: int = 900) -> str:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{out[-6000:]}"
    return out


def _dvc(args: list[str], cwd: Path) -> tuple[set[str], str]:
    """Run a dvc command; return the stages it ran and its output."""
    out = _run([sys.executable, "-m", "dvc", *args], cwd)
    ran = set(re.findall(r"Running stage '([\w-]+)'", out))
    # a stage restored from DVC's run-cache did not run with the new parameters
    restored = set(re.findall(r"Stage '([\w-]+)' is cached - skipping run", out))
    return ran | {f"{s}(run-cache)" for s in restored}, out


def _set_param(params: Path, section: str, key: str, value) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(params)
    cfg[section][key] = value
    params.write_text(OmegaConf.to_yaml(cfg))


def _commit(repo: Path, msg: str) -> None:
    _run(["git", "add", "params.yaml", "dvc.lock"], repo)
    _run(["git", "commit", "-q", "-m", msg], repo)


def _mtimes(repo: Path) -> dict[str, float]:
    return {
        str(p.relative_to(repo)): p.stat().st_mtime_ns
        for s in STAGES
        for p in (repo / "outputs" / s / "dvc").rglob("*")
        if p.is_file()
    }


def _patch_size(repo: Path) -> int:
    with np.load(repo / "outputs" / "covariance" / "dvc" / "patch_stats.npz") as z:
        return int(z["patch_size"])


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_dvc_repro_noop_downstream_rerun_and_hydra_experiment_on_a_fresh_clone(tmp_path):
    repo = tmp_path / "clone"
    _run(["git", "clone", "-q", str(ROOT), str(repo)], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "stages.params",
            "experiment=smoke",
            "analysis.companions=[outputs/analysis/dvc_learned]",
        ],
        repo,
    )
    from stages.params import composed_params

    (repo / "params_learned.yaml").write_text(composed_params(LEARNED_SMOKE))
    _run(["git", "add", "params.yaml", "params_learned.yaml"], repo)
    _run(["git", "commit", "-q", "--allow-empty", "-m", "smoke preset as DVC parameters"], repo)

    # 1. everything runs, in order (the learned companion chain too), and the report embeds the companion
    ran, out = _dvc(["repro"], repo)
    assert ran == set(STAGES) | set(LEARNED), out[-3000:]
    assert (repo / "outputs" / "analysis" / "dvc" / "report.html").is_file()
    assert (repo / "outputs" / "analysis" / "dvc_learned" / "report.html").is_file()
    report = (repo / "outputs" / "analysis" / "dvc" / "report.html").read_text()
    assert "data-companion='pifs_ddpm16'" in report and "href='../dvc_learned/report.html'" in report
    assert _patch_size(repo) == 4
    # `dvc metrics show` carries the report's numbers: κ̂ at each printed t is Table 4's converged mean
    shown = json.loads(_run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo))
    for chain in ("dvc", "dvc_learned"):
        rel = f"outputs/analysis/{chain}/metrics.json"
        kappa = next(v for v in _walk(shown) if isinstance(v, dict) and rel in v)[rel]["data"]["kappa"]
        table = {
            r["t"]: float(r["mean"]) for r in _csv(repo / "outputs" / "analysis" / chain / "table_4.csv")
        }
        pairs = [(v, table[k[1:]]) for k, v in kappa.items() if k.startswith("t") and k[1:].isdigit()]
        assert pairs and all(v == pytest.approx(m, rel=1e-9) for v, m in pairs), (chain, pairs)
    _commit(repo, "first repro")

    # 2. nothing changed: nothing runs, no output is touched
    before = _mtimes(repo)
    ran, out = _dvc(["repro"], repo)
    assert ran == set() and "Data and pipelines are up to date" in out, out[-3000:]
    assert _mtimes(repo) == before

    # 3. a Jacobian-measurement setting reruns the Jacobian stage (and analysis, which reads
    #    its tables) but neither covariance nor trajectories
    _set_param(repo / "params.yaml", "measure", "power_iters", 9)
    ran, out = _dvc(["repro"], repo)
    assert "jacobian" in ran and ran <= {"jacobian", "analysis"}, out[-3000:]
    meta = json.loads((repo / "outputs" / "jacobian" / "dvc" / "meta.json").read_text())
    assert meta["config"]["measure"]["power_iters"] == 9
    _commit(repo, "power_iters 9")

    # 4. a DVC experiment through Hydra composition: -S overrides compose conf/ into
    #    params.yaml. A patch-size change with the oracle's Σ blocks kept at 4 (model.block_size
    #    follows patch.size unless set) reruns covariance, jacobian and analysis but not
    #    trajectories, whose only data dependency (the P-independent Gaussian fit) has the
    #    same bytes; and the new P really is in the outputs (not restored from the run-cache).
    ran, out = _dvc(
        ["exp", "run", "-S", "experiment=smoke", "-S", "patch.size=2", "-S", "model.block_size=4"], repo
    )
    assert ran == {"covariance", "jacobian", "analysis"}, out[-3000:]
    assert _patch_size(repo) == 2
    from omegaconf import OmegaConf

    params = OmegaConf.load(repo / "params.yaml")
    assert params.patch.size == 2 and params.measure.power_iters == 8  # composed afresh from conf/
    name = re.search(r"Ran experiment\(s\): ([\w-]+)", out).group(1)
    shown = json.loads(_run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo))
    exps = [e for rev in shown for e in (rev.get("experiments") or []) if e.get("name") == name]
    assert exps, f"experiment {name} not in `dvc exp show`"
    exp_params = exps[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert exp_params["patch"]["size"] == 2

    # every stage run of the experiment is tracked in MLflow under its DVC experiment name
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.dvc_experiment = '{name}'",
    )
    stage_runs = [r for r in runs if r.data.tags.get("pifs.role") != "dvc"]
    assert sorted(r.data.tags["stage"] for r in stage_runs) == ["analysis", "covariance", "jacobian"]
    # ... nested under one parent run for the `dvc exp run`, left FINISHED, every run naming the commit
    parents = [r for r in runs if r.data.tags.get("pifs.role") == "dvc"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in stage_runs} == {parents[0].info.run_id}
    head = _run(["git", "rev-parse", "HEAD"], repo).strip()
    assert {r.data.tags["mlflow.source.git.commit"] for r in runs} == {head}
    # DVC's metrics: the analysis stage's headline figures
    metrics = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo)
    assert "kappa" in metrics and "claims" in metrics


def _walk(obj):
    """Every dict and list inside a parsed JSON document (dvc's nesting differs between versions)."""
    yield obj
    for v in obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list) else ():
        yield from _walk(v)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
