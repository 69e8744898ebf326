"""Jacobian measurement engine: operators and estimators on ε̂(·, t) at fixed paper timestep t.

Everything acts on ``eps_fn: Tensor[C,H,W] -> Tensor[C,H,W]`` plus the DDIM step coefficients
r_t, b_t, through JΦ_t = r_t I + b_t Jε̂ (eq. 7), never materialised for large n.
"""

from .attention import AttentionEntropy, attention_entropy, patch_attention
from .blocks import (
    BlockNorms,
    block_power_norms,
    dense_block_norms,
    hutchinson_block_frobenius,
    patch_rayleigh,
)
from .deviation import GaussianSurrogate, exact_suppression, score_deviation, score_deviation_proxy
from .lyapunov import (
    BenettinResult,
    KYEstimate,
    PatchExponents,
    benettin_spectrum,
    ky_dimension_partial,
    rayleigh_exponents,
    trajectory_rayleigh,
)
from .measure import (
    MeasureConfig,
    Plan,
    StepMeasurement,
    measure_step,
    measurement_seed,
    plan_measurement,
)
from .operators import JVP_METHODS, MatvecCounter, ScoreLinearization, StepJacobian
from .patches import embed_patches, patch_index, take_patches
from .spectral import (
    BatchedLanczosResult,
    LanczosResult,
    PowerIterationResult,
    golub_kahan,
    golub_kahan_batched,
    power_iteration,
    random_start,
)

__all__ = [
    "AttentionEntropy",
    "BatchedLanczosResult",
    "golub_kahan_batched",
    "BenettinResult",
    "GaussianSurrogate",
    "KYEstimate",
    "PatchExponents",
    "attention_entropy",
    "benettin_spectrum",
    "exact_suppression",
    "ky_dimension_partial",
    "patch_attention",
    "rayleigh_exponents",
    "score_deviation",
    "score_deviation_proxy",
    "trajectory_rayleigh",
    "BlockNorms",
    "JVP_METHODS",
    "LanczosResult",
    "MatvecCounter",
    "MeasureConfig",
    "Plan",
    "PowerIterationResult",
    "ScoreLinearization",
    "StepJacobian",
    "StepMeasurement",
    "block_power_norms",
    "dense_block_norms",
    "embed_patches",
    "golub_kahan",
    "hutchinson_block_frobenius",
    "measure_step",
    "measurement_seed",
    "patch_index",
    "patch_rayleigh",
    "plan_measurement",
    "power_iteration",
    "random_start",
    "take_patches",
]
