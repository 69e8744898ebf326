"""The analysis entry point on synthetic stage outputs written in the real schemas (tmp_path).

Oracle-like data (S = 0, diag_norm = f_t, coupling = 0) must give a report stating the closed form and
the measurement agree; learned-like data must render every table; hand-made tiny tables check that
each table computes what its docstring says it does.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil

import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image

from pipeline.analysis import build_analysis, compare_runs, load_stage_outputs, write_sweep_report
from pipeline.analysis.inputs import read_table
from pipeline.analysis.scoring import analyse
from pipeline.analysis.verdicts import ORACLE, ORACLE_BAD
from pipeline.io import read_csv, write_csv, write_json

ORACLE_TABLES = [
    "table_3",
    "table_4",
    "table_5",
    "table_7",
    "table_8",
    "table_9",
    "release_times",
    "table_10",
    "table_11",
]
ALL_TABLES = ORACLE_TABLES + ["table_6"]
FIGURES = [
    "kappa_t",
    "block_decomposition",
    "suppression_heatmap",
    "pc_slack_heatmap",
    "lambda_star",
    "proxy_loglog",
    "lambda_grid",
    "release_times",
    "rho_vs_t",
    "samples",
]


def _html(res) -> str:
    return res.report_html.read_text()


def test_oracle_report_contains_every_table_and_figure(oracle_run):
    _, res = oracle_run
    out = res.out_dir
    for key in ORACLE_TABLES:
        rows = read_csv(out / f"{key}.csv")
        assert rows, key
    assert (out / "table_4_seeds.csv").exists() and (out / "comparison.csv").exists()
    assert "table_6" in res.skipped and "attention" in res.skipped["table_6"]
    html = _html(res)
    for key in ORACLE_TABLES:
        assert re.search(rf"<section data-table='{key}'>.*?<table class=\"ours\">", html, re.S), key
    for name in FIGURES:
        png = (out / "figures" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(out / "figures" / f"{name}.png")
        assert img.shape[0] > 100 and img.shape[1] > 100
        m = re.search(
            rf'<figure data-figure="{name}"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html
        )
        assert m, name
        assert base64.b64decode(m.group(1)) == png  # the embedded image is the written file
    md = res.report_md.read_text()
    for key in ORACLE_TABLES:
        assert f"## {key}:" in md
    for name in FIGURES:
        assert f"(figures/{name}.png)" in md
    # run info of every stage is in the report
    for needle in (
        "run-analysis-1",
        "test box",
        "synthetic-jac-gaussian_oracle",
        "synthetic-cov",
        "synthetic-traj",
    ):
        assert needle in html and needle in md


def test_oracle_report_states_closed_form_and_measurement_agree(oracle_run):
    _, res = oracle_run
    assert res.oracle is not None and res.oracle.structure == "block_diagonal"
    assert res.oracle.all_agree
    by = {r.quantity: r for r in res.oracle.rows}
    assert by["⟨v_k,[JΦ_t]_kk v_k⟩ (eq. 32)"].status == "agrees"  # the measurement, independent of f_t's code
    assert by["S_k,t (eq. 30)"].kind.value == "re-derived"  # S = f_t − rayleigh: no evidence of its own
    assert by["C_k,t (eq. 16)"].status == "structural" and by["f_t column"].status == "identity"
    c = res.oracle.count
    assert f"{c.agree} of {c.independent} independent checks agree" in res.oracle.statement
    # the paper's estimators are a finding about the method, shown apart and never counted as agreement
    assert c.paper_protocol and all(r.role == "paper protocol" for r in c.paper_protocol)
    assert any("power iteration" in f and "not converged" in f for f in res.oracle.findings())
    html = _html(res)
    assert "data-oracle-agree='yes'" in html and "closed form vs measured" in html
    v = {x.key: x for x in res.verdicts}
    assert v["P1"].status == ORACLE and "S = 0 exactly" in v["P1"].evidence
    # S = 0 on every patch: the rank correlation of Table 3 is undefined, and said so.
    t3 = read_csv(res.out_dir / "table_3.csv")
    assert all(r["rho"] == "nan" for r in t3) and "S_k,t = 0 within round-off" in t3[0]["note"]
    s = json.loads((res.out_dir / "summary.json").read_text())
    assert s["model_kind"] == "gaussian_oracle" and s["oracle"]["all_agree"] is True
    assert res.metrics["oracle.all_agree"] == 1.0


def test_report_files_are_byte_identical_on_rerun(oracle_run, tmp_path):
    run, res = oracle_run
    inp = load_stage_outputs(run.covariance_dir, run.trajectories_dir, run.jacobian_dir)
    again = build_analysis(
        inp,
        tmp_path / "again",
        {"mlflow_run_id": "run-analysis-1", "machine": "test box", "wall_time_s": 3.5},
    )
    for p in sorted(res.out_dir.rglob("*")):
        if p.is_file():
            assert (again.out_dir / p.relative_to(res.out_dir)).read_bytes() == p.read_bytes(), p.name


def test_learned_report_renders_every_table(learned_run):
    _, res = learned_run
    assert res.oracle is None and not res.skipped and not res.missing
    html = _html(res)
    for key in ALL_TABLES:
        assert (res.out_dir / f"{key}.csv").exists()
        assert f"<section data-table='{key}'>" in html
    assert "Paper vs ours" in html and "agrees" in html and "differs" in html
    assert {v.key for v in res.verdicts} == {"P1", "P2", "P3", "P4", "P5"}


def test_outlier_seed_is_flagged_but_never_dropped(learned_run):
    _, res = learned_run
    seeds = read_csv(res.out_dir / "table_4_seeds.csv")
    assert [r["outlier"] for r in seeds] == ["False", "False", "False", "True"]
    t4 = read_table(res.out_dir / "table_4.csv")
    assert np.all(t4["n_seeds"] == 4) and np.all(t4["n_seeds_unflagged"] == 3)
    assert np.all(t4["mean"] > t4["mean_unflagged"])  # the flagged seed (x1.15) is inside the mean


def test_oracle_check_catches_a_wrong_measurement(oracle_run, tmp_path):
    run, _ = oracle_run
    jac = tmp_path / "jacobian"
    jac.mkdir()
    for f in run.jacobian_dir.iterdir():
        (jac / f.name).write_bytes(f.read_bytes())
    rows = read_csv(jac / "patches.csv")
    rows[5]["suppression"] = "0.001"
    rows[7]["diag_norm"] = str(float(rows[7]["diag_norm"]) + 1e-3)
    write_csv(jac / "patches.csv", rows)
    inp = load_stage_outputs(run.covariance_dir, None, jac)
    _, _, _, oracle, verdicts = analyse(inp)
    bad = {r.quantity for r in oracle.rows if r.status == "differs"}
    # the wrong S also reaches the tables built on it (Table 3's S columns, Table 11's Lambda_pred)
    assert {
        "S_k,t (eq. 30)",
        "‖[JΦ_t]_kk‖_op, dense blocks",
        "Table 3 S_mean, S_min, S_max",
    } <= bad
    assert not oracle.all_agree and "DIFFER" in oracle.statement
    assert verdicts[0].status == ORACLE_BAD


def test_oracle_check_tells_unconverged_power_iteration_from_a_wrong_value(oracle_run, tmp_path):
    # With block norms from an iterative route (a lower bound of the true norm), a raw diagonal-block norm below
    # f_t by more than 0.1·|f_t − 1| is "not converged"; one above f_t is impossible for the method: "differs".
    run, _ = oracle_run
    for shift, expected in ((-0.01, "not converged"), (+0.01, "differs")):
        jac = tmp_path / f"jac{shift}"
        jac.mkdir()
        for f in run.jacobian_dir.iterdir():
            (jac / f.name).write_bytes(f.read_bytes())
        g = read_csv(jac / "global.csv")
        for r in g:
            r.update(block_method="lanczos", block_iters="3", block_change_max="0.02")
        write_csv(jac / "global.csv", g)
        rows = read_csv(jac / "blocks.csv")
        diag = next(r for r in rows if r["k"] == r["j"])
        diag["op_norm"] = str(float(diag["op_norm"]) + shift)
        write_csv(jac / "blocks.csv", rows)
        oracle = analyse(load_stage_outputs(run.covariance_dir, None, jac))[3]
        row = next(r for r in oracle.rows if r.quantity.startswith("raw ‖[JΦ_t]_kk‖_op, block Krylov"))
        assert row.status == expected and row.max_abs_error == pytest.approx(0.01) and row.n_over == 1
        assert "block_method = lanczos" in row.diagnostic and "K = 3" in row.diagnostic
        assert not oracle.all_agree and bool(oracle.broken) == (expected == "differs")


def test_oracle_tolerance_separates_the_closed_form_from_the_trivial_answer():
    """A Rayleigh quotient of exactly 1 (the identity map) where f_t = 1 + 2.4e-4 (t = 1000 on the default chain)
    must not pass: the tolerance is relative to |f_t − 1|, not an absolute 1e-3."""
    from pipeline.analysis.evidence import Kind
    from pipeline.analysis.oracle.checks import Rule, judge

    f = np.array([1.00024, 1.0027, 1.07])
    exact = Rule(1e-3, 1e-9)
    assert judge("q", "", "", f * (1 + 1e-14), f, 1.0, exact).status == "agrees"
    assert judge("q", "", "", np.ones(3), f, 1.0, exact).status == "differs"  # the trivial answer
    # a tolerance at or above half the distance to the trivial answer cannot decide
    coarse = Rule(0.0, 1e-3)
    row = judge("q", "", "", f, f, 1.0, coarse)
    assert row.n_decidable == 2 and row.status == "agrees"
    assert judge("q", "", "", f[:1], f[:1], 1.0, coarse).status == "cannot separate from the trivial answer"
    # an identity that holds is shown as such, never as agreement; a broken one differs
    assert judge("q", "", "", f, f, 1.0, exact, Kind.IDENTITY).status == "identity"
    assert judge("q", "", "", f + 1, f, 1.0, exact, Kind.IDENTITY).status == "differs"


def test_missing_inputs_are_recorded_and_the_rest_renders(oracle_run, tmp_path):
    run, _ = oracle_run
    jac = tmp_path / "jac_only_global"
    jac.mkdir()
    (jac / "global.csv").write_bytes((run.jacobian_dir / "global.csv").read_bytes())
    inp = load_stage_outputs(None, tmp_path / "no_such_folder", jac)
    assert any("covariance" in m and "no folder" in m for m in inp.missing)
    assert any("no_such_folder" in m and "stages.trajectories" in m for m in inp.missing)
    assert any(m.startswith("jacobian/patches.csv") for m in inp.missing)
    res = build_analysis(inp, tmp_path / "out")
    assert sorted(k for k in res.tables if k.startswith("table_")) == ["table_4", "table_4_seeds", "table_5"]
    assert "table_3" in res.skipped and "patches.csv" in res.skipped["table_3"]
    html = _html(res)
    assert "Missing inputs" in html and "jacobian/patches.csv" in html
    # Nothing at all: still a report that says so.
    empty = build_analysis(load_stage_outputs(), tmp_path / "empty")
    assert empty.report_html.exists() and not empty.tables and len(empty.missing) == 3


def test_a_table_without_its_key_columns_is_refused(tmp_path):
    jac = tmp_path / "jac"
    write_csv(jac / "global.csv", [{"seed": 0, "t": 10, "kappa_pi": 1.0}])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['step'\].*rerun"):
        load_stage_outputs(jacobian_dir=jac)


# --------------------------------------------------------------------- hand-made tiny stage outputs
def _meta(folder, kind="unet"):
    write_json(
        folder / "meta.json",
        {
            "config": {
                "model": {"kind": kind},
                "patch": {"size": 1},
                "schedule": {"num_train_timesteps": 1000},
            },
            "mlflow_run_id": "hand",
        },
    )


def test_table_4_and_5_hand_computed(tmp_path):
    jac = tmp_path / "jac"
    k = {0: [1.1, 1.2], 1: [1.3, 1.0], 2: [1.05, 1.1]}  # seed -> kappa at steps 0, 1
    rows = []
    for s, ks in k.items():
        for step, (t, kap) in enumerate(zip((900, 100), ks, strict=True)):
            rows.append(
                {
                    "seed": s,
                    "step": step,
                    "t": t,
                    "alpha_bar_t": 0.1 if t == 900 else 0.9,
                    "alpha_bar_prev": 0.2 if t == 900 else 1.0,
                    "kappa_pi": kap,
                    "kappa_diag": kap - 0.1,
                    "delta_cross": 0.05 * (s + 1),
                }
            )
    write_csv(jac / "global.csv", rows)
    _meta(jac)
    _, tables, _, _, _ = analyse(load_stage_outputs(jacobian_dir=jac))
    t4 = tables["table_4"]
    step0 = t4.rows[0]
    assert step0["t"] == 900 and step0["mean"] == pytest.approx((1.1 + 1.3 + 1.05) / 3)
    assert step0["std"] == pytest.approx(np.std([1.1, 1.3, 1.05], ddof=1))
    s_hat = {r["seed"]: r["s_hat"] for r in t4.extra["table_4_seeds"]}
    assert s_hat == pytest.approx({0: 1.1 * 1.2, 1: 1.3 * 1.0, 2: 1.05 * 1.1})
    assert t4.summary.median_s_hat == pytest.approx(1.3)
    t5 = tables["table_5"]
    assert t5.rows[1]["kappa_diag"] == pytest.approx(np.mean([1.1, 0.9, 1.0]))
    assert t5.rows[1]["delta_cross"] == pytest.approx(0.1) and t5.rows[1]["delta_cross_std"] == pytest.approx(
        0.05
    )
    assert t5.rows[1]["kappa_pc"] == pytest.approx(np.mean([1.15, 1.0, 1.15]))  # kappa_diag + delta_cross


def test_table_7_symmetric_coupling_by_chebyshev_distance(tmp_path):
    # 2x2 grid, one (seed, t): C_kj = (F_kj + F_jk)/2 per unordered pair; distances are all 1 on a 2x2 grid
    # except none; use a 1x3 strip instead (k = 0, 1, 2 in a row): d(0,1) = d(1,2) = 1, d(0,2) = 2.
    jac = tmp_path / "jac"
    F = {(0, 1): 0.4, (1, 0): 0.2, (1, 2): 0.1, (2, 1): 0.3, (0, 2): 0.05, (2, 0): 0.15}
    write_csv(
        jac / "blocks.csv",
        [
            {
                "seed": 0,
                "step": 0,
                "t": 500,
                "k": k,
                "j": j,
                "chebyshev": abs(k - j),
                "op_norm": v / 2,
                "frob_norm": v,
            }
            for (k, j), v in F.items()
        ],
    )
    _meta(jac)
    _, tables, _, _, _ = analyse(load_stage_outputs(jacobian_dir=jac))
    rows = {r["distance"]: r for r in tables["table_7"].rows}
    assert rows[1]["mean"] == pytest.approx(np.mean([0.3, 0.2])) and rows[1]["n_pairs"] == 2
    assert rows[1]["std"] == pytest.approx(np.std([0.3, 0.2], ddof=1))
    assert rows[2]["mean"] == pytest.approx(0.1) and rows[2]["n_pairs"] == 1


def _patch_rows(gamma: dict[int, list[float]], ts, lam):
    # gamma = S - (f - 1) with f = 1.01: S = gamma + 0.01; diag_norm = rayleigh = f - S = 1 - gamma.
    rows = []
    for k, gs in gamma.items():
        for step, (t, g) in enumerate(zip(ts, gs, strict=True)):
            rows.append(
                {
                    "seed": 0,
                    "step": step,
                    "t": t,
                    "k": k,
                    "lambda_k": lam[k],
                    "f_t": 1.01,
                    "suppression": g + 0.01,
                    "rayleigh": 1 - g,
                    "diag_norm": 1 - g,
                    "coupling": 0.0,
                    "pc_slack": g,
                }
            )
    return rows


def test_release_times_sign_flip_and_pc_onset_hand_made(tmp_path):
    jac = tmp_path / "jac"
    ts = [400, 300, 200, 100]
    lam = {0: 10.0, 1: 20.0, 2: 30.0}
    # patch 0 (lowest lambda) releases (gamma <= 0) from t = 300, patch 1 from 200, patch 2 only at 100;
    # patch 1 dips to gamma <= 0 at t = 400 too, so Def. 20 (largest t with gamma <= 0) gives 400 for it
    # while the persistent release time is 200.
    gamma = {0: [0.02, -0.01, -0.02, -0.01], 1: [-0.001, 0.01, -0.01, -0.02], 2: [0.03, 0.02, 0.01, -0.03]}
    write_csv(jac / "patches.csv", _patch_rows(gamma, ts, lam))
    _meta(jac)
    _, tables, _, _, _ = analyse(load_stage_outputs(jacobian_dir=jac))
    rel = {r["k"]: r for r in tables["release_times"].rows}
    assert [rel[k]["t_rel"] for k in (0, 1, 2)] == [300.0, 400.0, 100.0]
    assert [rel[k]["t_rel_persistent"] for k in (0, 1, 2)] == [300.0, 200.0, 100.0]
    assert tables["release_times"].summary.observed_spread == 300.0
    # (PC) slack = (1 - diag_norm) - coupling = gamma here: every patch violates at t = 100, so no onset.
    assert tables["table_8"].summary.pc_onset_t is None
    t8 = {r["t"]: r for r in tables["table_8"].rows}
    assert t8[200]["n_violated"] == 2 and t8[200]["min_slack"] == pytest.approx(-0.02)
    assert t8[400]["mean_slack"] == pytest.approx(np.mean([0.02, -0.001, 0.03]))
    # Table 9: diag_norm = 1 - gamma. t = 400: (0.98, 1.001, 0.97), rank differences (-1, -1, 2),
    # rho = 1 - 6*6/(3*8) = -0.5; t = 300, 200: reversed in lambda, rho = -1; t = 100: (1.01, 1.02, 1.03), +1.
    t9 = {r["t"]: r["rho"] for r in tables["table_9"].rows}
    assert [t9[t] for t in ts] == pytest.approx([-0.5, -1.0, -1.0, 1.0])
    # one seed: no p below 0.05 for n = 3 patches (|ρ| = 1 gives p = 0 by the t approximation): the flip
    # between t = 200 (ρ = −1) and t = 100 (ρ = +1) stands between significant values
    assert tables["table_9"].summary.sign_flip_t == 150.0


def test_pc_onset_rule(tmp_path):
    # Onset = the largest t from which no patch violates at any smaller measured t.
    def onset(slacks):
        jac = tmp_path / f"jac{len(list(tmp_path.iterdir()))}"
        write_csv(
            jac / "patches.csv",
            [
                {"seed": 0, "step": i, "t": t, "k": k, "pc_slack": v}
                for i, (t, vs) in enumerate(slacks.items())
                for k, v in enumerate(vs)
            ],
        )
        _meta(jac)
        return analyse(load_stage_outputs(jacobian_dir=jac))[1]["table_8"].summary.pc_onset_t

    assert onset({400: [-0.1, -0.1], 300: [0.1, -0.1], 200: [0.1, 0.1], 100: [0.2, 0.1]}) == 200
    assert onset({400: [0.1, 0.1], 300: [0.1, -0.1], 200: [0.1, 0.1], 100: [0.2, 0.1]}) == 200
    assert onset({400: [0.1, 0.1], 300: [0.1, 0.1], 200: [0.1, 0.1], 100: [0.2, -0.1]}) is None


def test_table_6_exact_permutation_p_for_8_timesteps(tmp_path):
    jac = tmp_path / "jac"
    ts = [980, 840, 700, 560, 440, 300, 160, 20]
    write_csv(
        jac / "global.csv",
        [
            {"seed": 0, "step": i, "t": t, "kappa_pi": 1.0, "delta_cross": 0.01 * (i + 1)}
            for i, t in enumerate(ts)
        ],
    )
    write_csv(
        jac / "attention.csv",
        [{"seed": 0, "step": i, "t": t, "entropy": 5.0 - 0.1 * i} for i, t in enumerate(ts)],
    )
    _meta(jac)
    _, tables, _, _, _ = analyse(load_stage_outputs(jacobian_dir=jac))
    s = tables["table_6"].summary
    assert s.spearman_rho == -1.0 and s.permutation_exact is True
    assert s.permutation_p == pytest.approx(2 / math.factorial(8))
    # one seed: the association beyond t is the partial rank correlation given t (both series are exact
    # functions of t here, so there is nothing beyond t to correlate)
    assert s.detrended_method.startswith("partial Spearman given t")


def test_table_10_fit_with_alpha_bar_from_the_run_schedule(tmp_path):
    # proxy.csv without alpha_bar: sqrt(alpha_bar_t) comes from the run's schedule config via pipeline.geometry.
    g = pytest.importorskip("pipeline.geometry")
    sched_cfg = {
        "name": "linear",
        "kind": "linear",
        "num_train_timesteps": 1000,
        "beta_start": 1e-4,
        "beta_end": 0.02,
    }
    ab = np.asarray(g.schedule_from_config(sched_cfg).alpha_bar)
    ts = [999, 990, 980, 960, 940, 920, 900, 850, 800, 700, 600]
    # exact power law at t >= 800 (slope 0.95, intercept 3.1), off the line below: only t >= 800 may be fitted
    rows = [
        {
            "t": t,
            "proxy": math.exp(3.1) * math.sqrt(ab[t]) ** 0.95 * (1.0 if t >= 800 else 3.0),
            "proxy_std": 0.1,
        }
        for t in ts
    ]
    jac = tmp_path / "jac"
    write_csv(jac / "proxy.csv", rows)
    write_json(jac / "meta.json", {"config": {"model": {"kind": "unet"}, "schedule": sched_cfg}})
    _, tables, _, _, verdicts = analyse(load_stage_outputs(jacobian_dir=jac))
    t10 = tables["table_10"]
    assert {r["t"]: r["sqrt_alpha_bar"] for r in t10.rows}[900] == pytest.approx(
        math.sqrt(ab[900]), rel=1e-12
    )
    f = t10.summary.proxy
    assert f.n == 9 and f.slope == pytest.approx(0.95, abs=1e-9)
    assert f.intercept == pytest.approx(3.1, abs=1e-8) and f.r2 == pytest.approx(1.0, abs=1e-12)
    # no exact deviation: the rule reads the proxy and says so; an exact 0.95 line has a CI collapsed onto
    # 0.95, which excludes 1
    assert verdicts[4].key == "P5" and verdicts[4].status == "not supported"
    assert "eq. 65 proxy" in verdicts[4].parts[0].name


# ------------------------------------------------------------------------------------------ sweeps
def test_sweep_comparison_across_runs(oracle_run, learned_run, tmp_path):
    (o, _), (lrn, _) = oracle_run, learned_run
    rows, varying = compare_runs([o.jacobian_dir, lrn.jacobian_dir])
    assert "model.kind" in varying and len(rows) == 2
    assert rows[0]["model.kind"] == "gaussian_oracle" and rows[1]["model.kind"] == "unet"
    assert rows[0]["oracle_all_agree"] is True and rows[1]["P3"]
    assert rows[0]["run"] != rows[1]["run"]
    # execution details (run.json: MLflow run ids) would make the table differ between identical runs
    assert not [k for k in rows[0] if "run_id" in k]
    paths = write_sweep_report([o.jacobian_dir, lrn.jacobian_dir], tmp_path)
    assert len(read_csv(paths["csv"])) == 2 and "model.kind" in paths["md"].read_text()
    with pytest.raises(FileNotFoundError, match="outputs/jacobian"):
        compare_runs([tmp_path / "nope"])
    # The stage passes extra runs as run_info["compare"]: the report gets a sweep section.
    inp = load_stage_outputs(o.covariance_dir, None, o.jacobian_dir)
    res = build_analysis(inp, tmp_path / "with_sweep", {"compare": [str(lrn.jacobian_dir)]})
    assert "sweep_comparison" in res.tables and "<section data-table='sweep'>" in _html(res)


def test_pc_geometry_rows_mean_and_standard_error_by_hand():
    from pipeline.analysis.companions import pc_geometry_rows

    rows = [
        {
            "t": 20,
            "kappa_lanczos": 1.2,
            "kappa_pi": 1.1,
            "kappa_diag": 0.9,
            "delta_cross": 0.1,
            "suppression_mean": 0.01,
        },
        {
            "t": 20,
            "kappa_lanczos": "nan",
            "kappa_pi": 1.0,
            "kappa_diag": 1.0,
            "delta_cross": 0.3,
            "suppression_mean": 0.03,
        },
    ]
    (r,) = pc_geometry_rows(rows)
    # margins 1 − 0.9 − 0.1 = 0 and 1 − 1.0 − 0.3 = −0.3: mean −0.15, SE = (0.3/√2)/√2 = 0.15;
    # κ̂ falls back to power iteration where Lanczos is missing: (1.2 + 1.0)/2, SE 0.1. The SE is shown to
    # 2 significant digits and the mean to the same decimal place.
    assert r["pc_margin"] == "−0.15 ± 0.15" and r["kappa_t"] == "1.10 ± 0.10"
    assert r["seeds"] == 2 and r["delta_cross"] == "0.20 ± 0.10"


def test_report_embeds_a_companion_run_and_says_when_one_is_missing(oracle_run, learned_run, tmp_path):
    (o, _), (lrn, lres) = oracle_run, learned_run
    # a copy of the companion's analysis under an outputs root of its own (the session's fixture stays as it
    # is); its record names its upstream folders by stage and run key, found beside it under that root
    root = tmp_path / "outputs"
    comp = root / "analysis" / "tiny"
    shutil.copytree(lres.out_dir, comp)
    shutil.copytree(lrn.jacobian_dir, root / "jacobian" / "tiny")
    write_json(
        comp / "meta.json",
        {
            "config": {
                "model": {"kind": "unet", "name": "tiny", "path": "x"},
                "dataset": {"name": "synthetic", "resolution": 8},
            },
            "input_hashes": {
                name: {"stage": name, "run_key": "tiny"} for name in ("jacobian", "trajectories")
            },
        },
    )
    inp = load_stage_outputs(o.covariance_dir, o.trajectories_dir, o.jacobian_dir)
    res = build_analysis(
        inp, tmp_path / "with_companion", {"companions": [str(comp), str(tmp_path / "never_run")]}
    )
    page = _html(res)
    assert "data-companion='tiny'" in page and "data-companion='missing'" in page
    assert "never_run has no finished analysis" in page
    # the companion's own verdicts, unchanged
    part = page.split("data-companion='tiny'")[1].split("</div>")[0]
    verdicts = json.loads((comp / "summary.json").read_text())["verdicts"]
    assert re.findall(r'<td class="txt">(P\d)</td>', part) == [v["key"] for v in verdicts]
    assert "data-figure='companion-samples'" not in page  # the synthetic companion has no samples.png yet
    from pipeline.sampler import save_sample_grid

    (root / "trajectories" / "tiny").mkdir(parents=True)
    save_sample_grid(
        np.zeros((4, 3, 8, 8), dtype=np.float32), root / "trajectories" / "tiny" / "samples.png", nrow=2
    )
    res2 = build_analysis(inp, tmp_path / "with_samples", {"companions": [str(comp)]})
    m = re.search(
        r"data-figure='companion-samples'><img alt='samples of tiny' src='data:image/png;base64,([^']+)'",
        _html(res2),
    )
    # shown upscaled by an integer factor with nearest-neighbour: every source pixel becomes an f x f square
    small = np.asarray(Image.open(root / "trajectories" / "tiny" / "samples.png"))
    big = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))))
    f = big.shape[1] // small.shape[1]
    assert f >= 2 and big.shape[1] >= 320
    np.testing.assert_array_equal(big, small.repeat(f, axis=0).repeat(f, axis=1))
    link = re.search(r"<a href='([^']+)'>its report</a>", page).group(1)
    assert (res.out_dir / link).resolve() == (comp / "report.html").resolve()
    summary = json.loads(res.summary_json.read_text())
    assert [c["found"] for c in summary["companions"]] == [True, False]
    n_t = len({r["t"] for r in read_csv(lrn.jacobian_dir / "global.csv")})
    assert len(summary["companions"][0]["pc_geometry"]) == n_t


def test_pair_rows_difference_and_z_by_hand():
    from pipeline.analysis.pair import pair_markdown, pair_rows

    a = [{"t": 20, "kappa_diag": 0.9, "delta_cross": 0.2}, {"t": 20, "kappa_diag": 0.9, "delta_cross": 0.4}]
    b = [
        {"t": 20, "kappa_diag": 1.0, "delta_cross": 0.1},
        {"t": 20, "kappa_diag": 1.0, "delta_cross": 0.1},
        {"t": 500, "kappa_diag": 1.0, "delta_cross": 0.1},
    ]
    (r,) = pair_rows(a, b)  # t = 500 is only in B
    # δ̂: A mean 0.3, SE 0.1; B mean 0.1, SE 0 -> Δ = −0.2, z = −2. margin: A 1−0.9−{0.2,0.4} = {−0.1,−0.3}
    # (mean −0.2, SE 0.1); B −0.1 -> Δ = +0.1, z = +1
    assert (r["t"], r["seeds_a"], r["seeds_b"]) == (20, 2, 2)
    assert r["delta_cross_diff"] == pytest.approx(-0.2) and r["delta_cross_z"] == pytest.approx(-2.0)
    assert r["pc_margin_a"] == pytest.approx(-0.2) and r["pc_margin_z"] == pytest.approx(1.0)
    assert "| 20 | 2/2 | 0.3000 ± 0.1000 | 0.1000 ± 0.0000 | -0.2000 (-2.0) |" in pair_markdown([r])
