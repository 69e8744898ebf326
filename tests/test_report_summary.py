"""The verdicts-first summary block says what the verdicts and table comparisons say: each P1–P5 row holds
this run's and the companion's status, the verdict is the learned model's where one was measured, each
table row counts that run's paper comparisons, and the block comes before any detail."""

from __future__ import annotations

import html
import json
import re
from collections import Counter

import pytest

from pipeline.analysis import build_analysis, load_stage_outputs
from pipeline.analysis import paper_values as pv
from pipeline.analysis import presentation as pr
from pipeline.analysis.synthetic import write_synthetic_run
from pipeline.io import write_json


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    lrun = write_synthetic_run(root / "learned_stages", "learned")
    linp = load_stage_outputs(lrun.covariance_dir, lrun.trajectories_dir, lrun.jacobian_dir)
    learned = build_analysis(linp, root / "learned", {"mlflow_run_id": "run-learned"})
    # the analysis stage writes meta.json beside a finished analysis; a companion is read through it
    write_json(learned.out_dir / "meta.json", {"config": linp.any_config(), "inputs": {}})
    orun = write_synthetic_run(root / "oracle_stages", "gaussian_oracle")
    oinp = load_stage_outputs(orun.covariance_dir, orun.trajectories_dir, orun.jacobian_dir)
    oracle = build_analysis(
        oinp, root / "oracle", {"mlflow_run_id": "run-oracle", "companions": [str(learned.out_dir)]}
    )
    return oracle, learned


def _text(cell: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()


def _summary(page: str) -> tuple[list[str], dict[str, list[str]]]:
    block = re.search(r'<table class="summary">.*?</table>', page, re.S).group(0)
    heads = [_text(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", block, re.S)]
    rows = {
        key: [_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
        for key, body in re.findall(r'<tr data-key="([^"]+)">(.*?)</tr>', block, re.S)
    }
    return heads, rows


def _short(status: str) -> str:
    return status.removeprefix("oracle: ")


def test_claim_rows_hold_each_runs_verdict_and_the_learned_models_decides(reports):
    oracle, learned = reports
    heads, rows = _summary(oracle.report_html.read_text())
    assert heads == [
        "Claim / table",
        "Paper",
        "Gaussian oracle (this run)",
        "Learned learned (companion)",
        "Verdict",
    ]
    mine = {v.key: v.status for v in oracle.verdicts}
    theirs = {v["key"]: v["status"] for v in json.loads(learned.summary_json.read_text())["verdicts"]}
    for key in ("P1", "P2", "P3", "P4", "P5"):
        item, paper, this, companion, verdict = rows[key]
        assert item.startswith(key) and paper == pr.PAPER_SAYS[key]
        assert this == _short(mine[key]) and companion == theirs[key]
        assert verdict == theirs[key]  # a learned model's test decides a learned-model claim


def test_an_oracle_only_report_takes_its_verdict_from_the_closed_form(reports, tmp_path):
    oracle, _ = reports
    inp = load_stage_outputs(
        *(oracle.out_dir.parent / "oracle_stages" / s for s in ("covariance", "trajectories", "jacobian"))
    )
    alone = build_analysis(inp, tmp_path / "alone", {})
    heads, rows = _summary(alone.report_html.read_text())
    assert heads == ["Claim / table", "Paper", "Gaussian oracle (this run)", "Verdict"]
    v = {x.key: x.status for x in alone.verdicts}
    assert rows["P1"][-1] == _short(v["P1"]) == "closed form reproduced"
    assert rows["P3"][-1] == "not tested"  # P3-P5 need a learned model; the oracle run does not claim them
    c = alone.oracle.count
    assert rows["oracle"][2].startswith(f"{c.agree} of {c.independent} independent checks agree")
    assert c.agree == c.independent > 0 and rows["oracle"][-1] == "reproduced"


def test_table_rows_count_the_runs_independent_paper_comparisons(reports):
    oracle, learned = reports
    _, rows = _summary(oracle.report_html.read_text())
    for key, t in oracle.table_results.items():
        ind = [c.status for c in t.comparison if c.kind.value == "independent"]
        if not t.comparison:
            continue
        # the oracle is never scored against the learned model's paper numbers (reference, no data, ...)
        assert not {"agrees", "differs"} & {c.status for c in t.comparison}
        assert rows[key][2].startswith(f"ref.: {len(ind)} values"), (key, rows[key][2])
    for key, t in learned.table_results.items():
        if not t.comparison:
            continue
        scored = [
            c.status
            for c in t.comparison
            if c.kind.value == "independent" and c.status in ("agrees", "differs")
        ]
        want = f"ref.: {scored.count('agrees')}/{len(scored)} within tol."
        assert rows[key][3].startswith(want), (key, rows[key][3])  # a non-paper model: reference only
        others = [c.kind.value for c in t.comparison if c.kind.value != "independent"]
        for kind in set(others):
            assert f"{others.count(kind)} {kind}" in rows[key][3], key  # named, never scored
        assert rows[key][4] == "reference only"
    # Table 6 needs attention layers: not applicable to the oracle, and no "Missing inputs" heading for it
    assert rows["table_6"][2] == "not applicable"
    page = oracle.report_html.read_text()
    assert "Missing inputs" not in page and "the Gaussian oracle has no attention layers" in page


def test_first_screen_says_what_the_run_is_the_geometry_verdict_and_the_symbols(reports):
    oracle, _ = reports
    page = oracle.report_html.read_text()
    block = re.search(r'<section id="summary".*?</section>', page, re.S).group(0)
    scope = _text(re.search(r'<p class="scope"[^>]*>(.*?)</p>', block, re.S).group(1))
    assert "Not run here: the paper's models" in scope and "hub" in scope
    assert "python -m stages.<stage> experiment=cifar10_paper" in scope
    assert "dvc exp run -S experiment=cifar10_paper" in scope
    _, rows = _summary(page)
    assert rows["geometry"][2] == "14 of 14 printed numbers reproduced to the printed digits"
    geo = re.search(r'<table class="geometry">.*?</table>', block, re.S).group(0)
    # the paper's printed digits beside ours (§7.4: λ** = 1.049681 on the 49-step chain), in one line on the
    # first screen and in full one click below it
    assert ">1.049681<" in geo
    line = _text(re.search(r'<p class="scope" data-geometry="yes">(.*?)</p>', block, re.S).group(1))
    assert "14 of 14" in line and "1.049681 (paper) vs 1.0496813" in line
    legend = _text(re.search(r'<p class="legend">(.*?)</p>', block, re.S).group(1))
    for sym in ("κ̂_t", "δ̂^cross_t", "S_k,t", "λ*(t)"):
        assert sym in legend


def test_counts_line_and_block_position(reports):
    oracle, _ = reports
    page = oracle.report_html.read_text()
    counts = re.search(r'<ul class="counts">(.*?)</ul>', page, re.S).group(1)
    c = Counter(_short(v.status) for v in oracle.verdicts)
    assert (
        f"Gaussian oracle (this run): P1–P5 {pr.count_phrase([_short(v.status) for v in oracle.verdicts])}."
        in _text(counts)
    )
    assert f"{c['closed form reproduced']} closed form reproduced" in _text(counts)
    # the block precedes the nav, the oracle detail, every table and the run info (run ids at the end)
    at = page.index('<section id="summary"')
    assert (
        at
        < page.index("<nav>")
        < page.index('id="oracle"')
        < page.index("<section data-table=")
        < page.index('id="run"')
    )
    assert page.index("run-oracle") > page.index('id="run"')
    md = oracle.report_md.read_text()
    assert md.index("## What was reproduced") < md.index("## Gaussian oracle: closed form vs measured")


def test_titles_and_claims_name_the_runs_own_setting(reports):
    oracle, learned = reports
    t_oracle = re.search(r"<h1>(.*?)</h1>", oracle.report_html.read_text()).group(1)
    t_learned = re.search(r"<h1>(.*?)</h1>", learned.report_html.read_text()).group(1)
    assert t_oracle == "Gaussian oracle — synthetic data 32×32, P=8"
    assert t_learned == "Learned learned — synthetic data 32×32, P=8" and t_oracle != t_learned
    page = oracle.report_html.read_text()
    assert "All 16 8×8 patches of synthetic data 32×32 exceed" in page
    assert "All CIFAR-10 8x8 patches" not in page
    assert pv.PREDICTIONS["P1"].startswith(pr.PAPER_P1_SUBJECT)  # the rewrite keys on the paper's wording


def test_no_long_floats_in_any_table_cell_and_a_viewport_tag(reports):
    for res in reports:
        page = res.report_html.read_text()
        assert '<meta name="viewport"' in page and "@media print" in page
        # the geometry table shows the paper's printed digits (1.049681) on purpose
        body = re.sub(r'<table class="geometry">.*?</table>', "", page, flags=re.S)
        cells = [_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
        # significant digits of every decimal number in a cell (leading zeros do not count)
        long = [
            c for c in cells for n in re.findall(r"\d+\.\d+", c) if len(n.replace(".", "").lstrip("0")) > 6
        ]
        assert not long, long[:5]
        assert 'class="scroll' not in page  # long tables fold into <details>, no fixed-height scroll boxes


def test_paper_model_comparisons_are_tests_and_other_models_are_reference():
    cifar = pr.RunSetting(
        model_kind="unet", model_path="google/ddpm-cifar10-32", dataset="cifar10", resolution=32, patch=8
    )
    small = pr.RunSetting(
        model_name="pifs_ddpm16",
        model_kind="unet",
        model_path="pkg://x",
        dataset="natural_crops",
        resolution=16,
        patch=4,
    )
    t3 = type("T", (), {"paper": pv.TABLE_3})()
    t11 = type("T", (), {"paper": pv.TABLE_11})()
    assert not pr.is_reference(cifar, t3) and pr.is_reference(cifar, t11) and pr.is_reference(small, t3)
    assert pr.comparison_counts(["agrees", "differs", "no data"], False) == (
        "1/2 agree; 1 no data",
        "partly-supported",
    )
    assert pr.comparison_counts(["agrees", "agrees"], False) == ("2/2 agree", "agrees")
    assert pr.comparison_counts(["agrees", "differs"], True) == ("ref.: 1/2 within tol.", "reference")
    # an identity row is named, never counted as agreement
    assert pr.comparison_counts(["agrees", "identity: not evidence"], False, ["independent", "identity"]) == (
        "1/1 agree; +1 identity",
        "agrees",
    )
    assert small.title == "Learned pifs_ddpm16 — natural crops 16×16, P=4"
    assert pr.claim_for("P1", small).startswith("All 16 4×4 patches of natural crops 16×16 exceed lambda*(t)")


def test_numbers_to_significant_digits():
    assert pr.fmt("0.12345678901234567") == "0.1235" and pr.fmt(1.0e-7) == "1×10^-7"
    assert pr.fmt("1000") == "1000" and pr.fmt(-0.5) == "−0.5" and pr.fmt("nan") == "—"
    assert pr.fmt_mean_se(1.23456, 0.0123) == "1.235 ± 0.012"


@pytest.mark.parametrize(
    ("statuses", "cell", "verdict"),
    [
        (["agrees"] * 3, "3 of 3 independent checks agree", "reproduced"),
        (
            ["agrees", "agrees", "not converged"],
            "2 of 3 independent checks agree; 1 not converged",
            "reproduced; 1 estimate(s) short of tolerance",
        ),
        (
            ["agrees", "differs", "not converged", "no data"],
            "1 of 3 independent checks agree; 1 differ; 1 not converged",
            "NOT reproduced: 1 differ",
        ),
    ],
)
def test_oracle_row_tells_an_unconverged_estimate_from_a_wrong_value(statuses, cell, verdict):
    from pipeline.analysis.evidence import Kind
    from pipeline.analysis.oracle import OracleCheck
    from pipeline.analysis.oracle.checks import OracleCheckRow
    from pipeline.analysis.report import ReportContent, summary_block

    rows = [
        OracleCheckRow(f"q{i}", "", "", Kind.INDEPENDENT, "", 1, 1, 0.0, 0.0, s)
        for i, s in enumerate(statuses)
    ]
    content = ReportContent(
        "t", "gaussian_oracle", {}, {}, [], [], OracleCheck("block_diagonal", "", "", rows), [], {}, {}
    )
    row = summary_block(content).rows[0]
    assert row.key == "oracle" and row.runs[0].text == cell and row.verdict.text == verdict
