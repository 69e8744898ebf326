"""DVC's metrics and plots carry the report's numbers (pipeline/analysis/headline.py): κ̂_t is Table 4's converged
value (the paper's power iteration beside it under its own name), δ̂^cross_t Table 5's, and one definition of
each quantity is shared by docs, dvc.yaml's plot titles and the report's legend."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.analysis import load_stage_outputs
from pipeline.analysis.definitions import BY_SYMBOL, plot_title
from pipeline.analysis.headline import by_t_rows, headline_metrics
from pipeline.analysis.scoring import analyse
from pipeline.io import read_csv, write_csv, write_json

ROOT = Path(__file__).resolve().parent.parent


def _tables(tmp_path):
    # two seeds at t = 980, 500, 20 (500 is not a t Tables 4-5 print); seed 1's t = 980 has a dense SVD,
    # which wins over its Lanczos value; the rest are Lanczos; power iteration stands beside them
    rows = []
    lanczos = {0: [1.0, 1.1, 1.3], 1: [1.2, 1.3, 1.5]}
    for s in (0, 1):
        for step, t in enumerate((980, 500, 20)):
            rows.append(
                {
                    "seed": s,
                    "step": step,
                    "t": t,
                    "kappa_lanczos": lanczos[s][step],
                    "kappa_dense": 1.25 if (s, t) == (1, 980) else math.nan,
                    "kappa_pi": lanczos[s][step] - 0.05,
                    "kappa_diag": 1.0,
                    "delta_cross": [[0.0, 0.3, 0.1], [0.2, math.nan, 0.3]][s][step],
                }
            )
    write_csv(tmp_path / "global.csv", rows)
    write_json(tmp_path / "meta.json", {"config": {"model": {"kind": "unet"}}})
    return analyse(load_stage_outputs(jacobian_dir=tmp_path))[1]


def test_rows_are_table_4_and_5_seed_means_per_t_in_chain_order(tmp_path):
    rows = by_t_rows(_tables(tmp_path))
    assert [r["t"] for r in rows] == [980, 500, 20]
    assert rows[0]["kappa"] == pytest.approx((1.0 + 1.25) / 2)  # the dense SVD, not Lanczos' 1.2
    assert rows[2]["kappa"] == pytest.approx(1.4) and rows[2]["kappa_pi"] == pytest.approx(1.35)
    assert rows[1]["delta_cross"] == pytest.approx(0.3)  # the NaN seed is left out, not averaged as 0
    assert [r["num_seeds"] for r in rows] == [2, 2, 2]


def test_headline_at_the_papers_t_and_verdict_counts(tmp_path):
    rows = by_t_rows(_tables(tmp_path))
    m = headline_metrics(rows, ["supported", "partly supported", "supported", "inconclusive"])
    assert set(m["kappa"]) == {"t980", "t20", "finest", "finest_t", "max"}  # no t500: not a Table 4 t
    assert m["kappa"]["t20"] == pytest.approx(1.4) and m["kappa"]["finest_t"] == 20
    assert m["kappa_pi"]["t20"] == pytest.approx(1.35)  # the paper's estimator under its own name
    assert m["delta_cross"]["t980"] == pytest.approx(0.1) and m["delta_cross"]["argmax_t"] == 500
    assert m["claims"] == {"inconclusive": 1, "partly_supported": 1, "supported": 2}


def test_a_coupling_that_is_zero_throughout_has_no_peak():
    rows = [
        {"t": t, "kappa": 1.0, "kappa_pi": 1.0, "kappa_diag": 1.0, "delta_cross": 0.0, "num_seeds": 1}
        for t in (980, 20)
    ]
    m = headline_metrics(rows, [])
    assert m["delta_cross"]["max"] == 0.0 and "argmax_t" not in m["delta_cross"]


def test_no_jacobian_table_gives_only_the_claims():
    assert by_t_rows({}) == []
    assert headline_metrics([], []) == {"claims": {}}


def test_metrics_json_kappa_equals_the_reports_converged_kappa(learned_run):
    """`dvc metrics show` reads metrics.json: its κ̂ at each printed t is the `mean` of the table_4.csv the report
    shows at that t, and kappa_pi the paper's power iteration (`mean_pi`)."""
    _, res = learned_run
    metrics = json.loads((res.out_dir / "metrics.json").read_text())
    shown = {int(r["t"]): r for r in read_csv(res.out_dir / "table_4.csv")}
    checked = 0
    for key, v in metrics["kappa"].items():
        if key.startswith("t") and key[1:].isdigit():
            assert v == pytest.approx(float(shown[int(key[1:])]["mean"]), rel=1e-12)
            assert metrics["kappa_pi"][key] == pytest.approx(float(shown[int(key[1:])]["mean_pi"]), rel=1e-12)
            checked += 1
    assert checked >= 3
    plot = {int(r["t"]): r for r in read_csv(res.out_dir / "plots" / "by_t.csv")}
    assert set(plot) == set(shown)
    assert np.allclose([float(plot[t]["kappa"]) for t in shown], [float(shown[t]["mean"]) for t in shown])


def test_one_definition_of_each_plotted_quantity_in_dvc_yaml_and_the_docs():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    titles = {next(iter(p)): next(iter(p.values()))["title"] for p in dvc["plots"]}
    assert titles["kappa_t"] == plot_title("κ̂_t")
    assert titles["kappa_pi_t"] == plot_title("κ̂_t (K_PI)")
    assert titles["delta_cross_t"] == plot_title("δ̂^cross_t")
    docs = (ROOT / "docs" / "outputs-and-columns.md").read_text()
    for sym in ("κ̂_t", "κ̂_t (K_PI)", "δ̂^cross_t"):
        assert BY_SYMBOL[sym].definition in docs, sym
