"""Analysis stage library: reproduced Tables 3-11 beside the paper's numbers, figures, verdicts, report.

Entry points (plain paths and dataclasses, no Hydra):
    inputs = load_stage_outputs(covariance_dir, trajectories_dir, jacobian_dir)   # any subset, None = absent
    result = build_analysis(inputs, out_dir, run_info={...})                       # writes CSV/PNG/HTML/MD
    rows, varying = compare_runs([jacobian_dir, ...])                              # sweep comparison
    write_sweep_report([jacobian_dir, ...], out_dir)
    ctx, tables, skipped, oracle, verdicts = analyse(inputs)                       # in memory, no files
    check_oracle(inputs, ctx); all_verdicts(tables, ctx)                           # the parts on their own
"""

from pipeline.analysis.build import AnalysisResult, analyse, build_analysis
from pipeline.analysis.inputs import AnalysisInputs, load_stage_outputs
from pipeline.analysis.oracle import check_oracle
from pipeline.analysis.sweep import compare_runs, write_sweep_report
from pipeline.analysis.verdicts import all_verdicts

__all__ = [
    "AnalysisInputs",
    "AnalysisResult",
    "all_verdicts",
    "analyse",
    "build_analysis",
    "check_oracle",
    "compare_runs",
    "load_stage_outputs",
    "write_sweep_report",
]
