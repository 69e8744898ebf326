"""Entry point of the analysis stage: stage outputs in, tables / figures / report files out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from pipeline import io as pio
from pipeline.analysis.figures import build_figures
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

# The schedule-geometry table the analysis stage writes before the report; embedded when present.
GEOMETRY_FILES = ("schedule_geometry.csv",)


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


def _metrics(tables: dict[str, TableResult], oracle: OracleCheck | None) -> dict[str, float]:
    """Flat finite numeric headline figures, named '<table>.<quantity>' (for MLflow metrics)."""
    out = {}
    for key, t in tables.items():
        for k, v in t.summary.items():
            if isinstance(v, bool):
                out[f"{key}.{k}"] = float(v)
            elif isinstance(v, (int, float)) and math.isfinite(float(v)):
                out[f"{key}.{k}"] = float(v)
    if oracle is not None:
        out["oracle.all_agree"] = float(oracle.all_agree)
        if math.isfinite(oracle.max_error):
            out["oracle.max_abs_error"] = oracle.max_error
    return out


def _plain(obj):
    """run_info may hold OmegaConf containers and Paths (the Hydra stage passes them): make them JSON-able."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a project dependency
        pass
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def build_analysis(
    inputs: AnalysisInputs,
    out_dir: str | Path,
    run_info: dict | None = None,
    *,
    title: str | None = None,
    progress: bool = False,
) -> AnalysisResult:
    """Write table_<N>.csv (+ release_times.csv, comparison.csv), figures/*.png, report.html, report.md,
    summary.json into out_dir. ``run_info`` (config, MLflow run id, machine, wall time, ...) is shown in
    the report as the analysis run's own metadata. Geometry CSVs already in out_dir are embedded too.
    ``title`` defaults to the run's model, data and patch size ("Gaussian oracle — natural crops 32×32, P=8").
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=4, desc="analysis", disable=not progress)
    ctx, tables, skipped, oracle, verdicts = analyse(inputs)
    steps.update()
    table_paths: dict[str, Path] = {}
    comparison_rows = []
    for key, t in tables.items():
        p = out / f"{key}.csv"
        pio.write_csv(p, t.rows, t.columns)
        table_paths[key] = p
        for ename, erows in t.extra.items():
            if erows:
                ep = out / f"{ename}.csv"
                pio.write_csv(ep, erows, list(dict.fromkeys(c for r in erows for c in r)))
                table_paths[ename] = ep
        comparison_rows += [c.__dict__ for c in t.comparison]
    if comparison_rows:
        pio.write_csv(out / "comparison.csv", comparison_rows)
        table_paths["comparison"] = out / "comparison.csv"
    steps.update()
    figures = build_figures(tables, ctx, inputs)
    fig_paths: dict[str, Path] = {}
    for f in figures:
        p = out / "figures" / f"{f.name}.png"
        pio.write_bytes(p, f.png)
        fig_paths[f.name] = p
    steps.update()
    extra = {}
    for name in GEOMETRY_FILES:
        p = out / name
        if p.exists():
            tab = pio.read_csv(p)
            if tab:
                extra[f"{name} (schedule geometry, Tables 1-2)"] = (list(tab[0].keys()), tab)
    cov_patches = (
        CovarianceFolder(inputs.covariance_dir) / CovarianceFolder.PATCHES if inputs.covariance_dir else None
    )
    if cov_patches is not None and cov_patches.exists():
        tab = pio.read_csv(cov_patches)
        if tab:
            extra["patches.csv (covariance stage: λ_k and trace per patch, §7.2)"] = (
                list(tab[0].keys()),
                tab,
            )
    run_info = _plain(dict(run_info or {}))
    sweep = None
    compare = [Path(p) for p in run_info.get("compare") or []]
    if compare:
        dirs = ([inputs.jacobian_dir] if inputs.jacobian_dir is not None else []) + compare
        rows, varying = compare_runs(dirs)
        cols = list(dict.fromkeys(c for r in rows for c in r))
        pio.write_csv(out / "sweep_comparison.csv", rows, cols)
        table_paths["sweep_comparison"] = out / "sweep_comparison.csv"
        sweep = (
            cols,
            rows,
            f"{len(rows)} jacobian runs (this run first); config keys that differ: "
            f"{', '.join(varying) or 'none'}.",
        )
    from pipeline.analysis.companions import load_companion

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
        extra,
        sweep,
        companions,
        setting,
    )
    html_path, md_path = out / "report.html", out / "report.md"
    pio.write_text(html_path, render_html(content))
    pio.write_text(
        md_path, render_markdown(content, {k: str(v.relative_to(out)) for k, v in fig_paths.items()})
    )
    metrics = _metrics(tables, oracle)
    summary = {
        "model_kind": ctx.model_kind,
        "tables": sorted(table_paths),
        "figures": sorted(fig_paths),
        "skipped": skipped,
        "missing": inputs.missing,
        "verdicts": [v.__dict__ for v in verdicts],
        "table_status": table_status(tables, setting),
        "oracle": None
        if oracle is None
        else {
            "structure": oracle.structure,
            "all_agree": oracle.all_agree,
            "max_abs_error": oracle.max_error,
            "statement": oracle.statement,
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
    pio.write_json(out / "summary.json", summary)
    steps.update()
    steps.close()
    return AnalysisResult(
        out,
        table_paths,
        fig_paths,
        html_path,
        md_path,
        out / "summary.json",
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
        run_info = {
            "config": cfg,
            "run_key": ctx.key,
            "upstream": {k: (read_meta(v) if v is not None else None) for k, v in upstream.items()},
            "compare": [Path(p) for p in cfg["analysis"].get("compare", [])],
            "companions": [Path(p) for p in cfg["analysis"].get("companions") or []],
        }
        result = build_analysis(inputs, ctx.out_dir, run_info)
        ctx.metrics.update(result.metrics)
        by_t = by_t_rows(inputs.global_)
        pio.write_csv(out / out.PLOTS_BY_T, by_t, PLOT_COLUMNS)
        pio.write_json(out / out.METRICS, headline_metrics(by_t, [v.status for v in result.verdicts]))

    return body
