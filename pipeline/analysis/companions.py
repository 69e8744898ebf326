"""Companion runs in a report: another model's complete analysis (e.g. the shipped learned DDPM beside the
Gaussian oracle), embedded as its P1–P5 verdicts, its per-t block geometry and its sample grid, with a link."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import io
from pipeline.analysis.presentation import RunSetting, fmt_mean_se
from pipeline.outputs import AnalysisFolder, JacobianFolder, TrajectoriesFolder

# per-t columns of the companion's (PC) geometry table (eq. 16-19, Theorem 15)
GEOMETRY_COLUMNS = ["t", "seeds", "kappa_t", "kappa_diag", "delta_cross", "pc_margin", "suppression_mean"]
# A sample grid is shown at least this wide, upscaled by an integer factor with nearest-neighbour so its
# pixels stay visible (a 16x16-pixel model's grid is ~38 px wide as written).
SAMPLES_MIN_WIDTH_PX = 320


@dataclass
class Companion:
    """What the report shows of one companion analysis folder (``found`` False: only ``reason``)."""

    folder: Path
    found: bool
    reason: str = ""
    label: str = ""
    model: str = ""
    setting: str = ""
    report_link: str = ""
    verdicts: list[dict] = field(default_factory=list)
    geometry: list[dict] = field(default_factory=list)
    samples_png: bytes | None = None
    samples_note: str = ""
    setting: RunSetting | None = None
    setting_text: str = ""
    table_status: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _mean_se(values: list[float]) -> str:
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return "n/a"
    se = v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else float("nan")
    return fmt_mean_se(float(v.mean()), se)


def upscale_png(png: bytes, min_width: int = SAMPLES_MIN_WIDTH_PX) -> tuple[bytes, int]:
    """(PNG, factor): the image repeated ``factor`` times along each axis (nearest-neighbour), the smallest
    integer factor that makes it at least ``min_width`` pixels wide; factor 1 returns the bytes unchanged."""
    img = Image.open(BytesIO(png))
    factor = max(1, math.ceil(min_width / img.width))
    if factor == 1:
        return png, 1
    big = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    buf = BytesIO()
    big.save(buf, format="PNG")
    return buf.getvalue(), factor


def pc_geometry_rows(global_rows: list[dict]) -> list[dict]:
    """Per paper t: the converged κ̂_t (dense, else Lanczos, else power), κ̂^diag, δ̂^cross and the (PC) margin
    1 − κ̂^diag − δ̂^cross (Theorem 15 / eq. 19), as mean ± standard error over seeds."""
    by_t: dict[int, list[dict]] = {}
    for r in global_rows:
        by_t.setdefault(int(r["t"]), []).append(r)

    def num(r, k):
        try:
            return float(r.get(k, "nan"))
        except (TypeError, ValueError):
            return float("nan")

    out = []
    for t in sorted(by_t, reverse=True):
        rows = by_t[t]
        # the converged κ̂_t of Table 4: dense SVD where built, else Lanczos, else the paper's power iteration
        kappa = [
            next(
                (num(r, c) for c in ("kappa_dense", "kappa_lanczos", "kappa_pi") if math.isfinite(num(r, c))),
                math.nan,
            )
            for r in rows
        ]
        diag = [num(r, "kappa_diag") for r in rows]
        cross = [num(r, "delta_cross") for r in rows]
        out.append(
            {
                "t": t,
                "seeds": len(rows),
                "kappa_t": _mean_se(kappa),
                "kappa_diag": _mean_se(diag),
                "delta_cross": _mean_se(cross),
                "pc_margin": _mean_se([1 - a - b for a, b in zip(diag, cross, strict=True)]),
                "suppression_mean": _mean_se([num(r, "suppression_mean") for r in rows]),
            }
        )
    return out


def load_companion(folder: str | Path, report_dir: str | Path) -> Companion:
    """Read a finished analysis folder (summary.json, meta.json) and its upstream jacobian/trajectories."""
    folder = Path(folder)
    af = AnalysisFolder(folder)
    summary_path = af / af.SUMMARY
    meta = af.read_meta()
    if not summary_path.is_file() or meta is None:
        return Companion(
            folder,
            False,
            reason=(
                f"{folder} has no finished analysis (summary.json + meta.json); `dvc repro` builds it (the "
                "<stage>@dvc_learned stages), or run the four stages with experiment=learned16 and list that "
                "analysis folder in analysis.companions"
            ),
        )
    summary = json.loads(summary_path.read_text())
    cfg = meta.get("config") or {}
    model = cfg.get("model") or {}
    sampler = cfg.get("sampler") or {}
    run = RunSetting.from_config(cfg, str(summary.get("model_kind") or ""))
    steps = (cfg.get("points") or {}).get("steps")
    setting_text = (
        f"{run.data}, {run.patch}×{run.patch} patches, "
        f"{sampler.get('name', 'sampler')} ({sampler.get('num_steps', '?')} steps), "
        f"{cfg.get('num_seeds')} seeds, measured t = {', '.join(map(str, steps)) if steps else 'every step'}"
    )
    comp = Companion(
        folder,
        True,
        label=str(model.get("name") or summary.get("model_kind")),
        model=f"{model.get('kind')}: {model.get('path', model.get('name', ''))}",
        setting=run,
        setting_text=setting_text,
        report_link=os.path.relpath(af / af.REPORT_HTML, Path(report_dir)),
        verdicts=list(summary.get("verdicts") or []),
        table_status=dict(summary.get("table_status") or {}),
        skipped=dict(summary.get("skipped") or {}),
    )
    # the upstream folders its record names, beside it under the same outputs root
    jac = af.input_folder("jacobian")
    if jac is not None and (jac / JacobianFolder.GLOBAL).is_file():
        comp.geometry = pc_geometry_rows(io.read_csv(jac / JacobianFolder.GLOBAL))
    traj = af.input_folder("trajectories")
    samples = traj / TrajectoriesFolder.SAMPLES if traj is not None else None
    if samples is not None and samples.is_file():
        comp.samples_png, factor = upscale_png(samples.read_bytes())
        comp.samples_note = (
            f"final DDIM samples x_0 of the companion's trajectories ({samples}), "
            f"shown {factor}× with nearest-neighbour upscaling so each model pixel is a visible square"
        )
    return comp
