"""Which quantities, timesteps and seeds each reproduced table of §7 needs: the map the presets measure by.

`measure.tables` (conf/measure/default.yaml) names the tables a run is for. The estimators then run only
where some listed table reads what they give (`switches_for_tables`), the measured steps default to what
the tables need (`steps_for_tables`: every chain step, or §7.7's 20 representative steps when every
listed table is satisfied by them), and Table 10's proxy runs only for Table 10. The numeric settings
(K_PI, block K, probes, the block route) stay as configured. docs/configuration.md#protocols shows the map.

Quantities (what a table reads from the jacobian stage's files):
  global_norm_pi  κ̂_t = PowerIter(JΦ_t, K_PI), the paper's estimate (§7.1): global.csv kappa_pi
  global_norm     the converged ‖JΦ_t‖: kappa_dense (exact route) or kappa_lanczos
  rayleigh        ⟨v_k, [JΦ_t]_kk v_k⟩ (eq. 32) and with it S_k,t (eq. 30): patches.csv rayleigh, suppression
  block_op        all M² ‖[JΦ_t]_kj‖_op (eq. 15-19): blocks.csv op_norm, patches.csv diag_norm, coupling
  block_frob      ‖[JΦ_t]_kj‖_F (Table 7's C̄_kj): blocks.csv frob_norm
  attention       the attention entropy H(A_t) (Table 6): attention.csv
  proxy           the eq. 65 paired-difference proxy (Table 10): proxy.csv
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.geometry import representative_timesteps

QUANTITIES = ("global_norm_pi", "global_norm", "rayleigh", "block_op", "block_frob", "attention", "proxy")
REPRESENTATIVE_STEPS = 20  # §7.7: "at 20 representative timesteps, interpolated to the full 49-step chain"


@dataclass(frozen=True)
class TableNeeds:
    """What one reproduced table reads, at which timesteps and over how many seeds (the paper's protocol)."""

    section: str
    quantities: tuple[str, ...]
    steps: str  # "all" (the whole chain) or "representative" (§7.7's 20 of the chain's steps)
    timesteps: str  # the t the paper prints (the analysis matches the chain's nearest steps)
    seeds: int  # the paper's N_seeds for this table
    protocol: str  # the paper's estimator settings


TABLES: dict[str, TableNeeds] = {
    "table_3": TableNeeds(
        "§7.3",
        ("rayleigh",),
        "all",
        "1, 101, 201, 381, 461, 601, 721, 841, 861, 881, 941",
        5,
        "directional VJP along v_k",
    ),
    "table_4": TableNeeds(
        "§7.4",
        ("global_norm_pi", "global_norm"),
        "all",  # ŝ = Π_t κ̂_t runs over the whole chain
        "980, 900, 800, 600, 400, 300, 200, 20 (and ŝ over all 50 steps)",
        7,
        "global power iteration, K_PI = 20",
    ),
    "table_5": TableNeeds(
        "§7.4",
        ("global_norm_pi", "global_norm", "block_op"),
        "all",
        "980, 800, 600, 400, 280, 220, 100, 20",
        4,
        "power iteration per block, K_PI = 10",
    ),
    "table_6": TableNeeds(
        "§7.4", ("block_op", "attention"), "all", "980, 840, 700, 560, 440, 300, 160, 20", 4, "as Table 5"
    ),
    "table_7": TableNeeds(
        "§7.4", ("block_frob",), "all", "all timesteps and trajectories", 4, "Frobenius block norms"
    ),
    "table_8": TableNeeds(
        "§7.5",
        ("block_op", "rayleigh"),
        "all",
        "19 timesteps, 980 ... 40 printed",
        5,
        "power iteration per block, K_PI = 30",
    ),
    "table_9": TableNeeds(
        "§7.5", ("block_op", "rayleigh"), "all", "260, 240, ..., 20 (Regime II)", 5, "as Table 8"
    ),
    "release_times": TableNeeds(
        "§7.5, eq. 33",
        ("rayleigh",),
        "all",
        "every chain step (the first t of each patch's release)",
        5,
        "as Table 8",
    ),
    "table_10": TableNeeds(
        "§7.6", ("proxy",), "all", "999, 990, 980, 960, ..., 300 (14 timesteps)", 0, "N = 200 images per t"
    ),
    "table_11": TableNeeds(
        "§7.7",
        ("rayleigh",),
        "representative",
        "20 representative timesteps interpolated to the 49-step chain",
        8,
        "directional JVP along v_k (signed Rayleigh quotient)",
    ),
}

BLOCK_QUANTITIES = ("block_op", "block_frob")


def needed_quantities(tables: list[str]) -> set[str]:
    """The union of what the listed tables read."""
    return {q for t in tables for q in TABLES[t].quantities}


def switches_for_tables(tables: list[str], blocks: str, frob_probes: int) -> dict:
    """The MeasureConfig switches that measure what the tables read and nothing else.

    The converged global norm (global_lanczos) is free on the exact route, where Lanczos replays on the
    stored Jacobian; the block route keeps its configured value when a table reads blocks, else off.
    """
    need = needed_quantities(tables)
    return {
        "global_power": "global_norm_pi" in need,
        "global_lanczos": "global_norm" in need,
        "rayleigh": "rayleigh" in need,
        "blocks": blocks if need & set(BLOCK_QUANTITIES) else "off",
        "frob_probes": int(frob_probes) if "block_frob" in need else 0,
    }


def steps_for_tables(tables: list[str], timesteps) -> list[int] | None:
    """Paper t to measure for the tables: None (every chain step), or §7.7's representative steps when
    every listed table is satisfied by them (pipeline.geometry.representative_timesteps)."""
    if not tables or any(TABLES[t].steps == "all" and TABLES[t].quantities != ("proxy",) for t in tables):
        return None
    return representative_timesteps(timesteps, REPRESENTATIVE_STEPS)


def runs_proxy(tables: list[str] | None) -> bool:
    """Table 10's proxy runs for Table 10 (always, where no tables are listed)."""
    return tables is None or "table_10" in tables
