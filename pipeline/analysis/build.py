"""Entry point of the analysis stage: stage outputs in, tables / figures / report files out."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm.auto import tqdm

from pipeline import io as pio
from pipeline.analysis.companions import load_companion
from pipeline.analysis.figures import build_figures
from pipeline.analysis.geometry_check import schedule_geometry_check
from pipeline.analysis.headline import PLOT_COLUMNS, by_t_rows, headline_metrics
from pipeline.analysis.inputs import AnalysisInputs, load_stage_outputs, read_table
from pipeline.analysis.oracle import OracleCheck
from pipeline.analysis.presentation import RunSetting
from pipeline.analysis.report import ReportContent, render_html, render_markdown, table_status
from pipeline.analysis.scoring import analyse
from pipeline.analysis.sweep import compare_runs
from pipeline.analysis.tables import TableResult
from pipeline.analysis.verdicts import Verdict
from pipeline.geometry import default_geometry_rows
from pipeline.outputs import AnalysisFolder, CovarianceFolder, read_meta
from pipeline.runkeys import record_config

# The schedule-geometry table the analysis stage writes before the report; embedded when present.
GEOMETRY_FILES = (AnalysisFolder.SCHEDULE_GEOMETRY,)


@dataclass
class AnalysisResult:
    out_dir: Path
    tables: dict[str, Path]
    figures: dict[str, Path]
    report_html: Path
    report_md: Path
    summary_json: Path
    missing: list[str]
    skipped: dict[str, str]
    verdicts: list[Verdict]
    oracle: OracleCheck | None
    metrics: dict[str, float] = field(default_factory=dict)
    table_results: dict[str, TableResult] = field(default_factory=dict)


def _flat(prefix: str, v, out: dict[str, float]) -> None:
    if dataclasses.is_dataclass(v):
        for f in dataclasses.fields(v):
            _flat(f"{prefix}.{f.name}", getattr(v, f.name), out)
    elif isinstance(v, bool):
        out[prefix] = float(v)
    elif isinstance(v, (int, float)) and math.isfinite(float(v)):
        out[prefix] = float(v)


def _metrics(tables: dict[str, TableResult], oracle: OracleCheck | None) -> dict[str, float]:
    """Flat finite numeric headline figures, named '<table>.<quantity>' (for MLflow metrics)."""
    out: dict[str, float] = {}
    for key, t in tables.items():
        for k, v in t.summary_items().items():
            _flat(f"{key}.{k}", v, out)
    if oracle is not None:
        c = oracle.count
        out["oracle.all_agree"] = float(oracle.all_agree)
        out["oracle.independent"] = float(c.independent)
        out["oracle.independent_agree"] = float(c.agree)
        if math.isfinite(oracle.max_error):
            out["oracle.max_abs_error"] = oracle.max_error
    return out


def _plain(obj):
    """run_info may hold OmegaConf containers and Paths (the Hydra stage passes them): make them JSON-able."""
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_tables(out: Path, tables: dict[str, TableResult]) -> dict[str, Path]:
    """table_<N>.csv, the tables' extra CSVs and comparison.csv (every comparison row with its kind)."""
    paths: dict[str, Path] = {}
    comparison_rows = []
    for key, t in tables.items():
        paths[key] = out / f"{key}.csv"
        pio.write_csv(paths[key], t.rows, t.columns)
        for ename, erows in t.extra.items():
            if erows:
                paths[ename] = out / f"{ename}.csv"
                pio.write_csv(paths[ename], erows, list(dict.fromkeys(c for r in erows for c in r)))
        comparison_rows += [c.as_row() for c in t.comparison]
    if comparison_rows:
        paths["comparison"] = out / "comparison.csv"
        pio.write_csv(paths["comparison"], comparison_rows)
    return paths


def _extra_tables(out: Path, inputs: AnalysisInputs) -> dict[str, tuple[list[str], list[dict]]]:
    """The geometry CSV the stage wrote beside the report and the covariance stage's λ_k table."""
    extra = {}
    for name in GEOMETRY_FILES:
        p = out / name
        tab = pio.read_csv(p) if p.exists() else []
        if tab:
            extra[f"{name} (schedule geometry, Tables 1-2)"] = (list(tab[0].keys()), tab)
    cov = (
        CovarianceFolder(inputs.covariance_dir) / CovarianceFolder.PATCHES if inputs.covariance_dir else None
    )
    tab = pio.read_csv(cov) if cov is not None and cov.exists() else []
    if tab:
        extra["patches.csv (covariance stage: λ_k and trace per patch, §7.2)"] = (list(tab[0].keys()), tab)
    return extra


def _sweep(out: Path, inputs: AnalysisInputs, run_info: dict, paths: dict[str, Path]):
    compare = [Path(p) for p in run_info.get("compare") or []]
    if not compare:
        return None
    dirs = ([inputs.jacobian_dir] if inputs.jacobian_dir is not None else []) + compare
    rows, varying = compare_runs(dirs)
    cols = list(dict.fromkeys(c for r in rows for c in r))
    paths["sweep_comparison"] = out / "sweep_comparison.csv"
    pio.write_csv(paths["sweep_comparison"], rows, cols)
    return (
        cols,
        rows,
        f"{len(rows)} jacobian runs (this run first); config keys that differ: {', '.join(varying) or 'none'}.",
    )


def _summary_json(
    ctx, tables, skipped, oracle, verdicts, inputs, setting, companions, paths, fig_paths, metrics
):
    return {
        "model_kind": ctx.model_kind,
        "tables": sorted(paths),
        "figures": sorted(fig_paths),
        "skipped": skipped,
        "missing": inputs.missing,
        "verdicts": [v.as_dict() for v in verdicts],
        "table_status": table_status(tables, setting),
        "oracle": None
        if oracle is None
        else {
            "structure": oracle.structure,
            "all_agree": oracle.all_agree,
            "independent": oracle.count.independent,
            "independent_agree": oracle.count.agree,
            "max_abs_error": oracle.max_error,
            "statement": oracle.statement,
            "findings": oracle.findings(),
        },
        "metrics": metrics,
        "companions": [
            {
                "folder": str(c.folder),
                "found": c.found,
                "label": c.label,
                "reason": c.reason,
                "verdicts": c.verdicts,
                "pc_geometry": c.geometry,
            }
            for c in companions
        ],
    }


def build_analysis(
    inputs: AnalysisInputs,
    out_dir: str | Path,
    run_info: dict | None = None,
    *,
    title: str | None = None,
    progress: bool = False,
) -> AnalysisResult:
    """Write table_<N>.csv (+ release_times.csv, comparison.csv), figures/*.png, report.html, report.md,
    summary.json, metrics.json and plots/by_t.csv (DVC's metrics and plots: the report's numbers) into
    out_dir. ``run_info`` (config, run key, upstream records, ...) is shown in
    the report as the analysis run's own metadata. Geometry CSVs already in out_dir are embedded too.
    ``title`` defaults to the run's model, data and patch size ("Gaussian oracle — natural crops 32×32, P=8").
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=4, desc="analysis", disable=not progress)
    ctx, tables, skipped, oracle, verdicts = analyse(inputs)
    steps.update()
    paths = _write_tables(out, tables)
    steps.update()
    figures = build_figures(tables, ctx, inputs)
    fig_paths = {f.name: out / "figures" / f"{f.name}.png" for f in figures}
    for f in figures:
        pio.write_bytes(fig_paths[f.name], f.png)
    steps.update()
    run_info = _plain(dict(run_info or {}))
    sweep = _sweep(out, inputs, run_info, paths)
    companions = [load_companion(p, out) for p in run_info.get("companions") or []]
    metas = {
        "covariance": inputs.covariance_meta,
        "trajectories": inputs.trajectories_meta,
        "jacobian": inputs.jacobian_meta,
    }
    setting = RunSetting.from_config(run_info.get("config") or inputs.any_config(), ctx.model_kind)
    content = ReportContent(
        title or setting.title,
        ctx.model_kind,
        tables,
        skipped,
        figures,
        verdicts,
        oracle,
        inputs.missing,
        run_info,
        metas,
        _extra_tables(out, inputs),
        sweep,
        companions,
        setting,
        schedule_geometry_check(),
    )
    html_path, md_path = out / AnalysisFolder.REPORT_HTML, out / AnalysisFolder.REPORT_MD
    pio.write_text(html_path, render_html(content))
    pio.write_text(
        md_path, render_markdown(content, {k: str(v.relative_to(out)) for k, v in fig_paths.items()})
    )
    metrics = _metrics(tables, oracle)
    by_t = by_t_rows(tables)
    pio.write_csv(out / AnalysisFolder.PLOTS_BY_T, by_t, PLOT_COLUMNS)
    pio.write_json(out / AnalysisFolder.METRICS, headline_metrics(by_t, [v.status for v in verdicts], oracle))
    summary = _summary_json(
        ctx, tables, skipped, oracle, verdicts, inputs, setting, companions, paths, fig_paths, metrics
    )
    pio.write_json(out / AnalysisFolder.SUMMARY, summary)
    steps.update()
    steps.close()
    return AnalysisResult(
        out,
        paths,
        fig_paths,
        html_path,
        md_path,
        out / AnalysisFolder.SUMMARY,
        inputs.missing,
        skipped,
        verdicts,
        oracle,
        metrics,
        tables,
    )


__all__ = ["AnalysisResult", "analyse", "build_analysis", "read_table"]


def analysis_body(cfg: dict, upstream: dict[str, Path | None]):
    """The analysis stage's body for pipeline.runs.run_stage: schedule geometry, tables, figures, report,
    and the DVC-facing metrics.json and plots/by_t.csv, from whichever upstream folders exist."""

    def body(ctx) -> None:
        out = AnalysisFolder(ctx.out_dir)
        pio.write_csv(out / out.SCHEDULE_GEOMETRY, default_geometry_rows())
        inputs = load_stage_outputs(upstream["covariance"], upstream["trajectories"], upstream["jacobian"])
        ctx.inputs.update({k: str(v) for k, v in upstream.items() if v is not None})
        # only what the record holds: the report is the same bytes for the same config and inputs
        run_info = {
            "config": record_config("analysis", cfg),
            "run_key": ctx.key,
            "upstream": {k: (read_meta(v) if v is not None else None) for k, v in upstream.items()},
            "compare": [Path(p) for p in cfg["analysis"].get("compare", [])],
            "companions": [Path(p) for p in cfg["analysis"].get("companions") or []],
        }
        # build_analysis also writes metrics.json and plots/by_t.csv, from the tables the report shows
        result = build_analysis(inputs, ctx.out_dir, run_info)
        ctx.metrics.update(result.metrics)

    return body
