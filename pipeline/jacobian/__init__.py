"""Jacobian measurement engine: operators and estimators on ε̂(·, t) at fixed paper timestep t.

Everything acts on a batch of S points through the model's own batched call plus the DDIM step
coefficients r_t, b_t, through JΦ_t = r_t I + b_t Jε̂ (eq. 7), materialised only on the exact route.
"""

from .attention import AttentionEntropy, attention_entropy, patch_attention
from .blocks import hutchinson_frobenius, hutchpp_frobenius, patch_rayleigh
from .dense import DenseStep, dense_step
from .deviation import GaussianSurrogate, exact_suppression, score_deviation, score_deviation_proxy
from .estimators import REGISTRY, Estimator
from .lyapunov import (
    BenettinResult,
    KYEstimate,
    PatchExponents,
    benettin_spectrum,
    ky_dimension_partial,
    rayleigh_exponents,
    trajectory_rayleigh,
)
from .measure import MeasureConfig, StepMeasurement, measurement_seed
from .operators import JVP_METHODS, MatvecCounter, PointsStep, ScoreLinearization, StepJacobian
from .patches import embed_patches, patch_index, take_patches
from .plan import Plan, ProtocolPlan, plan_measurement, protocol_plan
from .points import measure_points
from .spectral import LanczosResult, PowerIterationResult, golub_kahan, power_iteration, random_start

__all__ = [
    "AttentionEntropy",
    "BenettinResult",
    "DenseStep",
    "Estimator",
    "GaussianSurrogate",
    "JVP_METHODS",
    "KYEstimate",
    "LanczosResult",
    "MatvecCounter",
    "MeasureConfig",
    "PatchExponents",
    "Plan",
    "PointsStep",
    "PowerIterationResult",
    "ProtocolPlan",
    "REGISTRY",
    "ScoreLinearization",
    "StepJacobian",
    "StepMeasurement",
    "attention_entropy",
    "benettin_spectrum",
    "dense_step",
    "embed_patches",
    "exact_suppression",
    "golub_kahan",
    "hutchinson_frobenius",
    "hutchpp_frobenius",
    "ky_dimension_partial",
    "measure_points",
    "measurement_seed",
    "patch_attention",
    "patch_index",
    "patch_rayleigh",
    "plan_measurement",
    "power_iteration",
    "protocol_plan",
    "random_start",
    "rayleigh_exponents",
    "score_deviation",
    "score_deviation_proxy",
    "take_patches",
    "trajectory_rayleigh",
]
