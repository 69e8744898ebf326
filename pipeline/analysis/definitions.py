"""One definition per quantity the report, the DVC metrics and plots, and docs/outputs-and-columns.md name:
the report's legend prints these, dvc.yaml's plot titles quote them, and a test holds the three together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    symbol: str
    name: str
    definition: str


QUANTITIES: tuple[Quantity, ...] = (
    Quantity(
        "t", "paper timestep", "1-based training timestep, t = diffusers' index + 1; the chain runs t = T → 1"
    ),
    Quantity("λ_k", "patch variance", "top eigenvalue of patch k's data covariance Σ_k (§7.1)"),
    Quantity(
        "f_t(λ)",
        "expansion function",
        "the Gaussian diagonal factor of step t on a direction of variance λ (eq. 26)",
    ),
    Quantity(
        "λ*(t)",
        "expansion threshold",
        "f_t(λ*) = 1: patches with λ_k > λ*(t) expand under a Gaussian score (eq. 27)",
    ),
    Quantity(
        "κ̂_t",
        "global norm",
        "‖JΦ_t‖₂ at x_t, converged: dense SVD where built, else Golub-Kahan-Lanczos (Table 4)",
    ),
    Quantity(
        "κ̂_t (K_PI)",
        "the paper's estimator",
        "K_PI-step power iteration of ‖JΦ_t‖₂ (§7.1, K_PI = 20): a lower bound of κ̂_t",
    ),
    Quantity("κ̂^diag_t", "diagonal norm", "max_k ‖[JΦ_t]_kk‖_op (eq. 18)"),
    Quantity("δ̂^cross_t", "cross-patch coupling", "max_k C_k,t = max_k Σ_{j≠k} ‖[JΦ_t]_kj‖_op (eqs. 16, 18)"),
    Quantity("κ̂^pc_t", "(PC) constant", "κ̂^diag_t + δ̂^cross_t; (PC) holds when < 1 (eq. 19)"),
    Quantity("S_k,t", "suppression field", "f_t(λ_k) − ⟨v_k,[JΦ_t]_kk v_k⟩ (eqs. 30, 32)"),
    Quantity(
        "Λ̂_k / Λ_pred,k",
        "Lyapunov exponents",
        "measured mean_t log ρ_k,t / predicted mean_t E log(f_t(λ_k) − S_k,t) (eqs. 48-49)",
    ),
    Quantity("q", "adjusted p", "Benjamini–Hochberg adjusted p over the t (or cells) tested together"),
)
BY_SYMBOL = {q.symbol: q for q in QUANTITIES}


def plot_title(symbol: str) -> str:
    """The DVC plot title of a quantity: its symbol, name and definition (dvc.yaml quotes it verbatim)."""
    q = BY_SYMBOL[symbol]
    return f"{q.symbol}: {q.name}, {q.definition}"
