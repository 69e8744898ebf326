"""MLflow under concurrency: many jobs logging at once lose nothing.

Writers are separate processes (as sweep jobs are) that start together behind a barrier and
log through pipeline.tracking.Tracker, the same code path every stage uses: a run, its params
in batches, per-step metric series in many small writes, tags, and the terminal status. Then
every run, param, metric value and tag is counted from the store.

Two stores: the embedded default (one SQLite file, here even created concurrently by the
writers themselves, the worst case) and a real `mlflow server` on loopback over that SQLite
file, the setup recommended for a cluster (jobs talk HTTP to one server process, which is the
only SQLite writer).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

import pytest

WRITERS = 8
PARAMS = 150  # > 100: more than one log_batch of params per run
STEPS = 40  # metric series points per writer, each its own write
EXPERIMENT = "concurrency"


def _writer(uri: str, idx: int, barrier, queue) -> None:
    """One 'job': the full Tracker life cycle with many small writes; reports what it sent."""
    try:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from pipeline.tracking import Tracker

        barrier.wait(timeout=120)
        t0 = time.time()
        tracker = Tracker.start(
            enabled=True,
            uri=uri,
            experiment=EXPERIMENT,
            run_name=f"writer-{idx}",
            tags={"writer": str(idx), "sweep_id": "concurrency-test"},
        )
        params: dict = {}
        for j in range(PARAMS):  # nested like a resolved config: group<g>.key<j>
            params.setdefault(f"group{j % 5}", {})[f"key{j}"] = f"{idx}-{j}"
        tracker.log_params(params)
        for s in range(STEPS):
            tracker.log_metric_series("loss", {s: idx + s / STEPS})
        tracker.log_metrics({"final": float(idx), "steps": float(STEPS)})
        tracker.set_tags({"phase": "done", "host": socket.gethostname()})
        tracker.finish("FINISHED")
        queue.put((idx, tracker.run_id, None, time.time() - t0))
    except BaseException as exc:  # report instead of dying silently
        queue.put((idx, None, f"{type(exc).__name__}: {exc}", None))


def _run_writers(uri: str) -> dict[int, str]:
    # Separate processes with no MLflow client state inherited from the test process; the
    # fork server imports mlflow once, so 8 writers start in seconds on a 2-core machine.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["mlflow", "pipeline.tracking"])
    barrier = ctx.Barrier(WRITERS)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(uri, i, barrier, queue)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    results = []
    deadline = time.time() + 240
    while len(results) < WRITERS:
        try:
            results.append(queue.get(timeout=1))
        except Exception:  # queue.Empty: check nobody died without reporting
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            assert not dead and time.time() < deadline, f"writers died or hung: {[p.exitcode for p in procs]}"
    for p in procs:
        p.join(timeout=60)
    errors = [f"writer {i}: {err}" for i, _, err, _ in results if err]
    assert not errors, "writers failed:\n" + "\n".join(errors)
    print(f"\nwriter wall times after the barrier: max {max(r[3] for r in results):.1f} s")
    return {i: rid for i, rid, _, _ in results}


def _check_store(uri: str, run_ids: dict[int, str]) -> dict[str, int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == WRITERS, f"{len(runs)} runs in the store, {WRITERS} written"
    assert {r.info.run_id for r in runs} == set(run_ids.values())
    counts = {"runs": len(runs), "params": 0, "metric_points": 0, "tags": 0}
    for r in runs:
        idx = int(r.data.tags["writer"])
        assert r.info.status == "FINISHED"
        assert len(r.data.params) == PARAMS
        assert r.data.params[f"group3.key{PARAMS - 2}"] == f"{idx}-{PARAMS - 2}"
        history = client.get_metric_history(r.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(STEPS))
        assert {m.step: m.value for m in history} == {s: idx + s / STEPS for s in range(STEPS)}
        assert r.data.metrics["final"] == float(idx)
        assert r.data.tags["phase"] == "done"
        counts["params"] += len(r.data.params)
        counts["metric_points"] += len(history) + 2
        counts["tags"] += sum(not k.startswith("mlflow.") for k in r.data.tags)
    return counts


def test_eight_concurrent_writers_on_one_fresh_sqlite_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t0 = time.time()
    run_ids = _run_writers(uri)
    counts = _check_store(uri, run_ids)
    print(f"\nsqlite, {WRITERS} concurrent writers (fresh store): {counts} in {time.time() - t0:.1f} s")
    assert counts["params"] == WRITERS * PARAMS
    assert counts["metric_points"] == WRITERS * (STEPS + 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server did not answer {url} within {timeout_s} s")


@pytest.mark.slow
@pytest.mark.integration
def test_eight_concurrent_writers_through_a_loopback_mlflow_server_lose_nothing(tmp_path):
    port = _free_port()
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        t0 = time.time()
        _wait_http(f"http://127.0.0.1:{port}/health", server, timeout_s=120)
        startup = time.time() - t0
        uri = f"http://127.0.0.1:{port}"
        t1 = time.time()
        run_ids = _run_writers(uri)
        counts = _check_store(uri, run_ids)
        print(
            f"\nmlflow server on 127.0.0.1:{port}: start {startup:.1f} s; {counts} in {time.time() - t1:.1f} s"
        )
        # the server wrote everything into its own SQLite file, readable without the server
        assert _check_store(backend, run_ids) == counts
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait(timeout=10)
        log.close()
    assert server.returncode is not None
