"""The reproduced Tables 3-11 and the release-time table: one module and one spec per table, and the ONE
registry (``TABLES``, with the tables' ``FIGURES`` and the sweep's ``HEADLINE_FIELDS`` beside it) from which the
builders, what each needs and the report's items and figures are derived. Each verdict rule names the tables it
reads (pipeline.analysis.verdicts).

Every builder takes the loaded stage outputs and an ``AnalysisContext`` and returns a ``TableResult`` (rows
for table_<N>.csv, a typed summary, comparison rows as data with their kind and tolerance), or None when
its input is missing (the report then says what it needs).
"""

from __future__ import annotations

from pipeline.analysis.context import AnalysisContext, f_t_matrix, make_context, patch_matrix
from pipeline.analysis.evidence import Comparison
from pipeline.analysis.inputs import AnalysisInputs
from pipeline.analysis.tables import (
    release_times as _release,
)
from pipeline.analysis.tables import (
    t3_suppression,
    t4_global_norm,
    t5_block_decomposition,
    t6_attention,
    t7_coupling_distance,
    t8_pc_slack,
    t9_rank_order,
    t10_score_deviation,
    t11_lyapunov,
)
from pipeline.analysis.tables.kappa import block_per_seed_step, converged_kappa, pi_short
from pipeline.analysis.tables.lyapunov_prediction import corrected_exponents, sampler_chain
from pipeline.analysis.tables.spec import FigureSpec, TableResult, TableSpec

# Report order: the paper's §7 order, release times beside Table 9 (both §7.5).
TABLES: tuple[TableSpec, ...] = (
    t3_suppression.SPEC,
    t4_global_norm.SPEC,
    t5_block_decomposition.SPEC,
    t6_attention.SPEC,
    t7_coupling_distance.SPEC,
    t8_pc_slack.SPEC,
    t9_rank_order.SPEC,
    _release.SPEC,
    t10_score_deviation.SPEC,
    t11_lyapunov.SPEC,
)
SPECS: dict[str, TableSpec] = {s.key: s for s in TABLES}
BUILDERS = {s.key: s.build for s in TABLES}
NEEDS = {s.key: s.needs for s in TABLES}
TABLE_ITEMS = {s.key: s.item for s in TABLES}
# The tables' figures in report order (each names its table).
FIGURES: tuple[FigureSpec, ...] = (
    t3_suppression.fig_suppression,
    t3_suppression.fig_rho,
    t4_global_norm.fig_kappa_t,
    t5_block_decomposition.fig_block,
    t8_pc_slack.fig_slack,
    _release.fig_release,
    t10_score_deviation.fig_proxy,
)
TABLE_FIGURES = {s.key: [f.name for f in FIGURES if f.table == s.key] for s in TABLES}
# The sweep table's headline numbers: table -> {column: field of its typed summary (a dotted path)}.
HEADLINE_FIELDS: dict[str, dict[str, str]] = {
    "table_3": {"peak_rho_S": "peak_rho", "n_t_rho_S_sig_positive": "n_sig_positive"},
    "table_4": {
        "median_s_hat": "median_s_hat",
        "flagged_seeds": "flagged_seeds",
        "kappa_max_mean": "kappa_max_mean",
        "kappa_trend_rho": "trend_rho",
    },
    "table_5": {"kappa_diag_max": "kappa_diag_max", "delta_cross_max": "delta_cross_max"},
    "table_6": {"entropy_rho": "spearman_rho", "entropy_rho_detrended": "detrended_rho"},
    "table_7": {"coupling_d3_over_d2": "ratio_d3_over_d2"},
    "table_8": {"pc_onset_t": "pc_onset_t"},
    "table_9": {"sign_flip_t": "sign_flip_t"},
    "release_times": {"release_rho": "spearman_lambda_vs_t_rel"},
    "table_10": {"proxy_slope": "proxy.slope", "exact_slope": "exact.slope"},
    "table_11": {
        "sign_agreement_sparse": "sign_agreement_sparse",
        "sign_agreement_surrogate": "sign_agreement_surrogate",
        "lambda_double_star": "lambda_double_star",
        "lambda_triple_star": "lambda_triple_star",
    },
}
HEADLINES = tuple((column, key, f) for key, cols in HEADLINE_FIELDS.items() for column, f in cols.items())

table_3 = t3_suppression.table_3
table_4 = t4_global_norm.table_4
table_5 = t5_block_decomposition.table_5
table_6 = t6_attention.table_6
table_7 = t7_coupling_distance.table_7
table_8 = t8_pc_slack.table_8
table_9 = t9_rank_order.table_9
release_times = _release.release_times
table_10 = t10_score_deviation.table_10
table_11 = t11_lyapunov.table_11


def headline_value(result: TableResult, field: str):
    """A summary field by dotted path ('proxy.slope'); None where a part is missing."""
    v = result.summary
    for part in field.split("."):
        v = getattr(v, part, None)
        if v is None:
            return None
    return v


def build_tables(
    inp: AnalysisInputs, ctx: AnalysisContext | None = None
) -> tuple[dict[str, TableResult], dict[str, str]]:
    """All tables that have data, and for the others the reason (what input they need)."""
    ctx = ctx or make_context(inp)
    built, skipped = {}, {}
    for spec in TABLES:
        r = spec.build(inp, ctx)
        if r is None:
            skipped[spec.key] = f"needs {spec.needs}"
        else:
            built[spec.key] = r
    return built, skipped


__all__ = [
    "BUILDERS",
    "FIGURES",
    "HEADLINE_FIELDS",
    "HEADLINES",
    "NEEDS",
    "SPECS",
    "TABLES",
    "TABLE_FIGURES",
    "TABLE_ITEMS",
    "AnalysisContext",
    "Comparison",
    "FigureSpec",
    "TableResult",
    "TableSpec",
    "block_per_seed_step",
    "build_tables",
    "converged_kappa",
    "corrected_exponents",
    "f_t_matrix",
    "headline_value",
    "make_context",
    "patch_matrix",
    "pi_short",
    "release_times",
    "sampler_chain",
    "table_3",
    "table_4",
    "table_5",
    "table_6",
    "table_7",
    "table_8",
    "table_9",
    "table_10",
    "table_11",
]
