"""Model-free schedule geometry of the paper (§2.1, §4.1, §5, §6): b_t, L*_t, f_t, λ*(t), λ**, KY, IG_t.

Paper timesteps t = 1..T with ᾱ_0 = 1; schedules are float64 ᾱ arrays of length T+1; a Chain is the
list of DDIM steps actually run. Everything is vectorised numpy in float64 and needs no model or data.
"""

from .chains import (
    SPACINGS,
    Chain,
    chain_from_config,
    chain_from_timesteps,
    diffusers_timesteps,
    full_chain,
    strided_chain,
)
from .coefficients import (
    FORMULAS,
    StepCoefficients,
    contraction_threshold,
    expansion_function,
    expansion_threshold,
    step_coefficients,
)
from .schedules import (
    Schedule,
    cosine_schedule,
    linear_schedule,
    schedule_from_alpha_bar,
    schedule_from_betas,
    schedule_from_config,
    schedule_from_diffusers_config,
    shifted_schedule,
)

__all__ = [
    "SPACINGS",
    "FORMULAS",
    "Schedule",
    "linear_schedule",
    "cosine_schedule",
    "shifted_schedule",
    "schedule_from_alpha_bar",
    "schedule_from_betas",
    "schedule_from_config",
    "schedule_from_diffusers_config",
    "Chain",
    "full_chain",
    "strided_chain",
    "chain_from_timesteps",
    "chain_from_config",
    "diffusers_timesteps",
    "StepCoefficients",
    "step_coefficients",
    "contraction_threshold",
    "expansion_function",
    "expansion_threshold",
]
