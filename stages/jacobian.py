"""Stage 3: Jacobian measurements of Φ_t at trajectory points (eq. 7, 16-19, 26, 30).

python -m stages.jacobian [overrides]   → outputs/jacobian/<run-key>/
  global.csv   one row per (seed, step): κ̂_t by power iteration and Lanczos with diagnostics,
               κ̂^diag, δ̂^cross, κ̂^pc
  patches.csv  one row per (seed, step, patch k): λ_k, f_t(λ_k), Rayleigh quotient, S_k,t,
               ‖[JΦ_t]_kk‖, C_k,t, PC slack
  blocks.csv   one row per (seed, step, k, j) when block norms are measured
Timesteps are the paper's t (1-based). Resumable per (seed, step).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pipeline.assemble import jacobian_setup
from pipeline.jacobian.loop import measurement_body
from pipeline.outputs import JacobianFolder
from pipeline.runs import StageResult, run_stage
from pipeline.settings import prepare_config
from stages.cli_errors import in_job, run_cli


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    setup = jacobian_setup(cfg)
    body = measurement_body(setup, cfg)
    return run_stage("jacobian", cfg, body, artifacts=(JacobianFolder.GLOBAL,), inputs=setup.inputs)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
