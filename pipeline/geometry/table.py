"""The schedule geometry table (Table 1 columns + §6.2 / §7.4 thresholds), one row per chain.

Columns (paper t everywhere, 1-based):
  schedule          row label (the paper's name for the schedule/chain)
  chain             Chain.name (schedule + sampler convention)
  N                 number of DDIM steps in the chain
  mean_L, cv_L      mean and CV (population std / mean) of L*_t over the chain's steps, eq. (10)
  L_finest          L*_t at the finest executed step; finest_t its paper timestep (Table 1)
  min_lambda_star   min_t λ*(t), eq. (27); argmin_t its paper timestep (§6.2, §7.4)
  lambda_starstar   λ**, root of eq. (45) (Thm 25)
  margin            lambda_starstar - min_lambda_star (§7.4)
  interior_max_lambda_star, interior_argmax_t   max of λ*(t) without the finest step and the two coarsest
                    steps; for a full chain that is 2 <= t <= T-2, which reproduces §6.2's interior maxima
  formula           "stable" (exact arithmetic) or "literal" (eqs. as printed, the paper's float64 artefact)
  paper_ref         where the paper prints this row's numbers
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .chains import Chain, full_chain, stride_chain, strided_chain
from .coefficients import contraction_threshold, expansion_threshold
from .moran import moran_threshold
from .schedules import cosine_schedule, linear_schedule

COLUMNS = (
    "schedule",
    "chain",
    "N",
    "mean_L",
    "cv_L",
    "L_finest",
    "finest_t",
    "min_lambda_star",
    "argmin_t",
    "lambda_starstar",
    "margin",
    "interior_max_lambda_star",
    "interior_argmax_t",
    "formula",
    "paper_ref",
)


@dataclass(frozen=True)
class RowSpec:
    label: str
    chain: Chain
    formula: str = "stable"
    paper_ref: str = ""


def geometry_row(label: str, chain: Chain, formula: str = "stable", paper_ref: str = "") -> dict[str, object]:
    """One table row (dict keyed by COLUMNS) for one chain."""
    L = contraction_threshold(chain, formula)
    ls = expansion_threshold(chain, formula)
    mr = moran_threshold(chain, formula=formula)
    ok = np.isfinite(L)
    Lf = L[ok]
    # §6.2 excludes the boundary steps; its printed maxima need t = T-1 excluded as well (λ*(T-1) = 1.5
    # for both cosines), so the interior drops the finest step and the two coarsest ones.
    interior = np.isfinite(ls)
    interior[:2] = False
    interior[-1:] = False
    if interior.any():
        j = int(np.argmax(np.where(interior, ls, -np.inf)))
        imax, it = float(ls[j]), int(chain.timesteps[j])
    else:
        imax, it = float("nan"), -1
    return {
        "schedule": label,
        "chain": chain.name,
        "N": len(chain),
        "mean_L": float(Lf.mean()),
        "cv_L": float(Lf.std() / Lf.mean()),
        "L_finest": float(L[-1]),
        "finest_t": int(chain.timesteps[-1]),
        "min_lambda_star": mr.min_lambda_star,
        "argmin_t": mr.argmin_t,
        "lambda_starstar": mr.lambda_starstar,
        "margin": mr.margin,
        "interior_max_lambda_star": imax,
        "interior_argmax_t": it,
        "formula": formula,
        "paper_ref": paper_ref,
    }


def geometry_table(
    rows: Iterable[RowSpec | Chain | tuple], formula: str = "stable"
) -> list[dict[str, object]]:
    """Rows for many chains: each item a RowSpec, a Chain (label = its name), or (label, chain[, formula])."""
    out = []
    for r in rows:
        if isinstance(r, RowSpec):
            out.append(geometry_row(r.label, r.chain, r.formula, r.paper_ref))
        elif isinstance(r, Chain):
            out.append(geometry_row(r.name, r, formula))
        else:
            label, chain, *rest = r
            out.append(geometry_row(label, chain, rest[0] if rest else formula))
    return out


def default_row_specs() -> Sequence[RowSpec]:
    """Table 1's four rows (rows 1-3 are also §6.2's chains), the §6.2 50-step cosine chain, the 49-step
    Moran chain of §7.4/§7.7, and the linear schedule of the paper's models (ddpm-cifar10-32,
    ddpm-celebahq-256) on that grid and on diffusers' default grid."""
    lin = linear_schedule()
    cos0 = cosine_schedule(s_off=0.0, name="cosine_s0")
    cos8 = cosine_schedule(s_off=0.008, name="cosine")
    ddim = dict(num_steps=50, spacing="trailing", final_alpha_bar=1.0)
    return [
        RowSpec("Linear (DDPM)", full_chain(lin), paper_ref="Table 1 row 1; §6.2; §7.2"),
        RowSpec("Cosine (orig., s_off=0)", full_chain(cos0), paper_ref="Table 1 row 2; §6.2"),
        RowSpec("Cosine (impr., s_off=0.008)", full_chain(cos8), paper_ref="Table 1 row 3; §6.2"),
        RowSpec("50-step DDIM (cosine)", strided_chain(cos0, **ddim), paper_ref="Table 1 row 4 (s_off=0)"),
        RowSpec(
            "50-step DDIM (cosine s_off=0.008)",
            strided_chain(cos8, **ddim),
            paper_ref="§6.2 50-step chain (its lambda** is not §7.4's)",
        ),
        RowSpec(
            "49-step DDIM (cosine s_off=0.008)",
            stride_chain(cos8, 20, start=980),
            paper_ref="§7.4 lambda** and min lambda*; §7.7 lambda**",
        ),
        RowSpec(
            "49-step DDIM (linear)",
            stride_chain(lin, 20, start=980),
            paper_ref="schedule of the paper's DDPM models on the paper's grid",
        ),
        RowSpec(
            "50-step DDIM (linear, diffusers leading)",
            strided_chain(lin, 50, "leading", final_alpha_bar=1.0),
            paper_ref="diffusers default grid (Table 4 step labels)",
        ),
    ]


def default_geometry_rows() -> list[dict[str, object]]:
    """The default `python -m pipeline.geometry` table (also outputs/analysis/schedule_geometry.csv)."""
    return geometry_table(default_row_specs())
