"""Compare several jacobian runs (a sweep over seeds, patch sizes, schedules) in one table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pipeline import io as pio
from pipeline.analysis.inputs import load_stage_outputs
from pipeline.analysis.report import markdown_table, render_table_page
from pipeline.analysis.scoring import analyse
from pipeline.analysis.tables import HEADLINES, headline_value


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def compare_runs(
    jacobian_dirs: Sequence[str | Path],
    covariance_dirs: Sequence[str | Path | None] | None = None,
) -> tuple[list[dict], list[str]]:
    """One row per run folder: the config keys that differ across runs, then headline numbers and verdicts.

    Returns (rows, varying config keys). A folder without meta.json still gets a row (config unknown).
    """
    if not jacobian_dirs:
        raise ValueError("compare_runs needs at least one jacobian run folder (outputs/jacobian/<run-key>/)")
    covariance_dirs = list(covariance_dirs) if covariance_dirs is not None else [None] * len(jacobian_dirs)
    if len(covariance_dirs) != len(jacobian_dirs):
        raise ValueError("pass one covariance folder per jacobian folder (or None for each)")
    runs = []
    for jd, cd in zip(jacobian_dirs, covariance_dirs, strict=True):
        if not Path(jd).is_dir():
            raise FileNotFoundError(
                f"{jd} is not a jacobian run folder; list outputs/jacobian/ for the run keys"
            )
        inp = load_stage_outputs(covariance_dir=cd, jacobian_dir=jd)
        ctx, tables, skipped, oracle, verdicts = analyse(inp)
        runs.append((Path(jd), inp, ctx, tables, oracle, verdicts))
    flat = [_flatten(r[1].jacobian_config) for r in runs]
    keys = sorted({k for f in flat for k in f})
    varying = [
        k
        for k in keys
        if len({repr(f.get(k)) for f in flat}) > 1 and not k.startswith(("paths.", "tracking.", "hydra."))
    ]
    # Shortest path tails that tell the runs apart (run keys under outputs/jacobian/ are already unique).
    parts = [p.resolve().parts for p, *_ in runs]
    for depth in range(1, max(len(x) for x in parts) + 1):
        names = [str(Path(*x[-depth:])) for x in parts]
        if len(set(names)) == len(names):
            break
    rows = []
    for name, (_path, _inp, ctx, tables, oracle, verdicts), f in zip(names, runs, flat, strict=True):
        row: dict[str, object] = {
            "run": name,
            # no run ids: how a run went is its run.json's, and this table must be the same bytes for the
            # same config and inputs
            "model_kind": ctx.model_kind,
        }
        for k in varying:
            row[k] = f.get(k)
        for col, tkey, skey in HEADLINES:
            v = headline_value(tables[tkey], skey) if tkey in tables else None
            row[col] = v if not isinstance(v, float) or math.isfinite(v) else None
        if oracle is not None:
            row["oracle_all_agree"] = oracle.all_agree
            row["oracle_independent_agree"] = f"{oracle.count.agree}/{oracle.count.independent}"
        for v in verdicts:
            row[v.key] = v.status
        rows.append(row)
    return rows, varying


def write_sweep_report(
    jacobian_dirs: Sequence[str | Path],
    out_dir: str | Path,
    covariance_dirs: Sequence[str | Path | None] | None = None,
) -> dict[str, Path]:
    """sweep_comparison.csv, sweep_report.md and sweep_report.html in out_dir."""
    rows, varying = compare_runs(jacobian_dirs, covariance_dirs)
    out = Path(out_dir)
    cols = list(dict.fromkeys(c for r in rows for c in r))
    pio.write_csv(out / "sweep_comparison.csv", rows, cols)
    intro = f"{len(rows)} runs; config keys that differ across them: {', '.join(varying) or 'none'}."
    pio.write_text(out / "sweep_report.md", f"# Sweep comparison\n\n{intro}\n\n" + markdown_table(cols, rows))
    pio.write_text(out / "sweep_report.html", render_table_page("Sweep comparison", intro, cols, rows))
    return {
        "csv": out / "sweep_comparison.csv",
        "md": out / "sweep_report.md",
        "html": out / "sweep_report.html",
    }
