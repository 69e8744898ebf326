"""List the runs of one Hydra sweep, for tabulating a sweep (analysis, notebooks, CLI).

A sweep (``python -m stages.<name> -m key=a,b ...``) is grouped by stages.callbacks: every job's
MLflow run carries the tag ``sweep_id`` and is nested under a parent run (``pifs.role=sweep``),
and every job writes ``<sweep dir>/<job num>/pifs_job.json``. Either record is enough:

    runs_from_mlflow(sweep_id, tracking_uri)   # from the tracking store
    runs_from_sweep_dir("multirun/2026-...")   # from the files, no MLflow needed
    latest_sweep_id(tracking_uri)              # the most recent sweep in a store

``python -m pipeline.sweeps [SWEEP_ID|SWEEP_DIR] [--uri URI] [--csv PATH]`` prints the table;
``--dirs`` prints the finished jobs' folders as a Hydra list for ``analysis.compare=...``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import CommandLineParser
from pipeline.io import write_csv
from pipeline.outputs import read_meta, read_run_info
from pipeline.tracking import default_tracking_uri, flatten, store_init_lock

SWEEP_TAG = "sweep_id"
ROLE_TAG = "pifs.role"


@dataclass
class SweepRun:
    """One job of a sweep: where its outputs are and what it measured."""

    sweep_id: str
    stage: str
    status: str  # MLflow FINISHED/FAILED/RUNNING/KILLED, or Hydra COMPLETED/FAILED from files
    run_key: str | None = None
    out_dir: str | None = None
    mlflow_run_id: str | None = None
    job_num: int | None = None
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    reused_run_id: str | None = None
    slurm_job_id: str | None = None
    error: str | None = None

    def row(self, params: tuple[str, ...] = ()) -> dict[str, Any]:
        """A flat table row: identity, chosen params, then metrics."""
        out: dict[str, Any] = {
            "sweep_id": self.sweep_id,
            "job_num": self.job_num,
            "stage": self.stage,
            "status": self.status,
            "run_key": self.run_key,
            "overrides": " ".join(self.overrides),
            "out_dir": self.out_dir,
            "mlflow_run_id": self.mlflow_run_id,
        }
        out.update({p: self.params.get(p) for p in params})
        out.update(dict(sorted(self.metrics.items())))
        return out


def _client(tracking_uri: str | None):
    # mlflow only when the store is read: importing sweeps (pifs, the callbacks) stays fast
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    with store_init_lock(uri):
        return MlflowClient(tracking_uri=uri)


def _search(client, filter_string: str, order_by: list[str] | None = None, max_results: int | None = None):
    exps = [e.experiment_id for e in client.search_experiments()]
    if not exps:
        return []
    out, token = [], None
    while True:
        page = client.search_runs(
            exps,
            filter_string=filter_string,
            order_by=order_by,
            max_results=min(max_results or 1000, 1000),
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token or (max_results and len(out) >= max_results):
            return out


def runs_from_mlflow(sweep_id: str, tracking_uri: str | None = None) -> list[SweepRun]:
    """The job runs (not the parent) tagged with ``sweep_id``, in Hydra job order."""
    if not sweep_id or "'" in sweep_id:
        raise ValueError(f"bad sweep id {sweep_id!r}; pass the id printed by the sweep (tag sweep_id)")
    # mlflow only when the store is read: importing sweeps (pifs, the callbacks) stays fast
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    runs = []
    for r in _search(client, f"tags.{SWEEP_TAG} = '{sweep_id}'"):
        tags = r.data.tags
        if tags.get(ROLE_TAG) == "sweep":
            continue
        num = tags.get("hydra_job_num")
        runs.append(
            SweepRun(
                sweep_id=sweep_id,
                stage=tags.get("stage", "?"),
                status=r.info.status,
                run_key=tags.get("run_key"),
                mlflow_run_id=r.info.run_id,
                job_num=int(num) if num is not None else None,
                overrides=tags.get("hydra_overrides", "").split(),
                metrics=dict(r.data.metrics),
                params=dict(r.data.params),
                reused_run_id=tags.get("reused_run_id"),
                slurm_job_id=tags.get("slurm_job_id"),
                error=tags.get("error"),
            )
        )
    for run in runs:
        if run.reused_run_id:  # a reused result: the original run holds the params
            try:
                run.params = dict(client.get_run(run.reused_run_id).data.params)
            except MlflowException:  # the original run is in another store or was deleted
                pass
        if run.run_key and run.params.get("paths.outputs"):
            run.out_dir = str(Path(run.params["paths.outputs"]) / run.stage / run.run_key)
    runs.sort(
        key=lambda r: (r.job_num is None, r.job_num if r.job_num is not None else 0, r.mlflow_run_id or "")
    )
    return runs


def parent_run(sweep_id: str, tracking_uri: str | None = None):
    """The sweep's MLflow parent run, or None (tracking off, or another store)."""
    runs = _search(_client(tracking_uri), f"tags.{SWEEP_TAG} = '{sweep_id}' and tags.`{ROLE_TAG}` = 'sweep'")
    return runs[0] if runs else None


def latest_sweep_id(tracking_uri: str | None = None) -> str | None:
    """The sweep id of the most recently started sweep parent run in the store (None without a store:
    a SQLite file that does not exist is not created by looking)."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :].split("?", 1)[0]).is_file():
        return None
    runs = _search(
        _client(tracking_uri), f"tags.`{ROLE_TAG}` = 'sweep'", order_by=["start_time DESC"], max_results=1
    )
    return runs[0].data.tags.get(SWEEP_TAG) if runs else None


def runs_from_sweep_dir(sweep_dir: str | Path) -> list[SweepRun]:
    """The jobs recorded under a Hydra sweep folder (``<dir>/sweep.json``, ``<dir>/*/pifs_job.json``).

    Metrics come from each job's meta.json and run.json. A job that never reached its end (killed, node
    lost) has no record: compare ``len(...)`` with the number of job folders.
    """
    root = Path(sweep_dir)
    info = root / "sweep.json"
    if not info.is_file():
        raise FileNotFoundError(
            f"{info} does not exist: {root} is not a sweep folder of this project (run a stage with -m; "
            f"the folder is hydra.sweep.dir, by default multirun/<date>)"
        )
    sweep_id = json.loads(info.read_text())["sweep_id"]
    runs = []
    for rec_path in sorted(root.glob("*/pifs_job.json")):
        rec = json.loads(rec_path.read_text())
        run = SweepRun(
            sweep_id=rec.get("sweep_id", sweep_id),
            stage=rec["stage"],
            status=rec["status"],
            run_key=rec.get("run_key"),
            out_dir=rec.get("out_dir"),
            mlflow_run_id=rec.get("mlflow_run_id"),
            job_num=rec.get("job_num"),
            overrides=list(rec.get("overrides", [])),
            error=rec.get("error"),
            slurm_job_id=rec.get("slurm_job_id"),
        )
        m = read_meta(run.out_dir) if run.out_dir else None
        if m is not None:
            # what the outputs are (meta.json) and how the run went (run.json: throughput, resumed units)
            info = read_run_info(run.out_dir) or {}
            metrics = {**m.get("metrics", {}), **info.get("metrics", {})}
            run.metrics = {k: float(v) for k, v in metrics.items()}
            run.params = {k: str(v) for k, v in flatten(m.get("config", {})).items()}
        runs.append(run)
    runs.sort(key=lambda r: r.job_num if r.job_num is not None else -1)
    return runs


def completed_out_dirs(runs: list[SweepRun], stage: str | None = None) -> list[str]:
    """Output folders of the jobs that finished (optionally of one stage), in job order."""
    ok = {"FINISHED", "COMPLETED"}
    return [r.out_dir for r in runs if r.out_dir and r.status in ok and (stage is None or r.stage == stage)]


def hydra_list(items: list[str]) -> str:
    """A Hydra override value for a list of paths, e.g. for ``analysis.compare=...``."""
    return "[" + ",".join(f"'{i}'" for i in items) + "]"


def sweep_table(runs: list[SweepRun], params: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows for pipeline.io.write_csv: one per job, the union of metric columns."""
    rows = [r.row(params) for r in runs]
    cols: list[str] = []
    for row in rows:
        cols.extend(c for c in row if c not in cols)
    return [{c: row.get(c) for c in cols} for row in rows]


def main(argv: list[str], prog: str = "python -m pipeline.sweeps") -> int:

    ap = CommandLineParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("sweep", nargs="?", help="sweep id (MLflow) or sweep folder; default: latest sweep")
    ap.add_argument(
        "--uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)"
    )
    ap.add_argument("--params", default="", help="comma-separated config keys to show, e.g. patch.size,seed")
    ap.add_argument("--csv", default=None, help="also write the table to this CSV file")
    ap.add_argument("--json", action="store_true", help="print the runs as JSON")
    ap.add_argument(
        "--dirs",
        action="store_true",
        help="print only the finished jobs' output folders as a Hydra list, e.g. for "
        'python -m stages.analysis "analysis.compare=$(python -m pipeline.sweeps SWEEP --dirs)"',
    )
    a = ap.parse_args(argv)
    if a.sweep and Path(a.sweep).is_dir():
        runs = runs_from_sweep_dir(a.sweep)
    else:
        sweep_id = a.sweep or latest_sweep_id(a.uri)
        if not sweep_id:
            print(
                "error: no sweep found in the tracking store — run a stage with -m first, or pass a sweep "
                "folder (multirun/<date>)",
                file=sys.stderr,
            )
            return 1
        runs = runs_from_mlflow(sweep_id, a.uri)
    if a.dirs:
        print(hydra_list(completed_out_dirs(runs)))
        return 0
    params = tuple(p for p in a.params.split(",") if p)
    rows = sweep_table(runs, params)
    if a.json:
        print(json.dumps([asdict(r) for r in runs], indent=2, default=str))
    else:
        cols = ["job_num", "stage", "status", "run_key", "overrides", *params]
        print("\t".join(cols))
        for row in rows:
            print("\t".join(str(row.get(c, "")) for c in cols))
    if a.csv:
        write_csv(a.csv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
