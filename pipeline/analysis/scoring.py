"""Everything the analysis computes, in memory: context, reproduced tables, oracle check, verdicts."""

from __future__ import annotations

from pipeline.analysis.context import AnalysisContext, make_context
from pipeline.analysis.inputs import AnalysisInputs
from pipeline.analysis.oracle import OracleCheck, check_oracle
from pipeline.analysis.tables import TableResult, build_tables
from pipeline.analysis.verdicts import Verdict, all_verdicts


def analyse(
    inputs: AnalysisInputs,
) -> tuple[AnalysisContext, dict[str, TableResult], dict[str, str], OracleCheck | None, list[Verdict]]:
    """Compute everything in memory (no files): context, tables, skipped reasons, oracle check, verdicts."""
    ctx = make_context(inputs)
    tables, skipped = build_tables(inputs, ctx)
    oracle = check_oracle(inputs, ctx)
    verdicts = all_verdicts(tables, ctx, inputs, oracle)
    return ctx, tables, skipped, oracle, verdicts
