"""What the report shows and how: run titles, claims in the run's own terms, readable numbers and headers,
and the verdicts-first summary block. Pure functions from results to plain view data (templates render it)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from pipeline.analysis import paper_values as pv
from pipeline.outputs import JacobianFolder

# The paper's models, by the table they were measured for (§7.2-7.7): Tables 3-10 on CIFAR-10, Table 11 on
# CelebA-HQ. A run of any other model compares with these numbers for reference only.
PAPER_MODELS = ("google/ddpm-cifar10-32", "google/ddpm-celebahq-256")
DATASET_NAMES = {
    "natural_crops": "natural crops",
    "cifar10": "CIFAR-10",
    "celebahq": "CelebA-HQ",
    "gaussian": "Gaussian samples",
    "synthetic": "synthetic data",
}
# Inputs a run kind cannot produce, so their absence is no gap (jacobian file -> why).
CANNOT_PRODUCE = {
    "gaussian_oracle": {
        JacobianFolder.ATTENTION: "the Gaussian oracle has no attention layers (Table 6 needs them)"
    },
}


# ------------------------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class RunSetting:
    """The model, data and patching of one run, read from its resolved config."""

    model_name: str = ""
    model_kind: str = ""
    model_path: str = ""
    dataset: str = ""
    resolution: int | None = None
    patch: int | None = None
    sampler: str = ""
    num_steps: int | None = None
    num_seeds: int | None = None

    @classmethod
    def from_config(cls, cfg: dict | None, model_kind: str = "") -> RunSetting:
        cfg = cfg or {}
        model, ds = cfg.get("model") or {}, cfg.get("dataset") or {}
        sampler = cfg.get("sampler") or {}
        return cls(
            model_name=str(model.get("name") or model_kind or ""),
            model_kind=str(model.get("kind") or model_kind or ""),
            model_path=str(model.get("path") or ""),
            dataset=str(ds.get("name") or ""),
            resolution=_int(ds.get("resolution")),
            patch=_int((cfg.get("patch") or {}).get("size")),
            sampler=str(sampler.get("name") or ""),
            num_steps=_int(sampler.get("num_steps")),
            num_seeds=_int(cfg.get("num_seeds")),
        )

    @property
    def is_oracle(self) -> bool:
        return self.model_kind == "gaussian_oracle"

    @property
    def label(self) -> str:
        """'Gaussian oracle' or 'Learned <model name>'."""
        return "Gaussian oracle" if self.is_oracle else f"Learned {self.model_name or 'model'}"

    @property
    def data(self) -> str:
        name = DATASET_NAMES.get(self.dataset, self.dataset or "unknown data")
        return f"{name} {self.resolution}×{self.resolution}" if self.resolution else name

    @property
    def num_patches(self) -> int | None:
        if self.resolution and self.patch and self.resolution % self.patch == 0:
            return (self.resolution // self.patch) ** 2
        return None

    @property
    def title(self) -> str:
        """Distinct per run: 'Gaussian oracle — natural crops 32×32, P=8'."""
        return f"{self.label} — {self.data}" + (f", P={self.patch}" if self.patch else "")

    @property
    def is_paper_model(self) -> bool:
        return not self.is_oracle and self.model_path in PAPER_MODELS

    def patches_phrase(self) -> str:
        """'16 4×4 patches of natural crops 16×16' (P1's subject, for this run)."""
        if not self.patch:
            return f"patches of {self.data}"
        m = self.num_patches
        return f"{m if m else ''} {self.patch}×{self.patch} patches of {self.data}".strip()


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def paper_model_of(table) -> str:
    """The model a paper table was measured on ('google/ddpm-cifar10-32, ...' -> the hub id)."""
    paper = getattr(table, "paper", None)
    return paper.setting.split(",")[0].strip() if paper is not None else ""


def is_reference(setting: RunSetting, table) -> bool:
    """Paper numbers are a test only for the paper's own model; otherwise they are shown for reference.
    A comparison with no paper table of its own (release times, eq. 36) is a test for either paper model."""
    if setting.is_oracle or setting.model_path not in PAPER_MODELS:
        return True
    model = paper_model_of(table)
    return bool(model) and model != setting.model_path


# ---------------------------------------------------------------------------------------- the claims
PAPER_P1_SUBJECT = "All CIFAR-10 8x8 patches"


def claim_for(key: str, setting: RunSetting) -> str:
    """The §7 prediction in this run's terms (P1 names the run's data and patch size, not CIFAR-10 8×8)."""
    claim = pv.PREDICTIONS.get(key, "")
    if key == "P1" and claim.startswith(PAPER_P1_SUBJECT) and setting.patch:
        claim = "All " + setting.patches_phrase() + claim[len(PAPER_P1_SUBJECT) :]
    return claim


SHORT_CLAIMS = {
    "P1": "λ_k > λ*(t) and S_k,t > 0",
    "P2": "(MM) S_k,t rises with λ_k",
    "P3": "κ̂_t grows; δ̂^cross tracks H(A_t)",
    "P4": "(PC) fails in I, holds in II",
    "P5": "deviation ∝ √ᾱ_t at high noise",
}
PAPER_SAYS = {
    "P1": "§7.2: all 16 patches, every t",
    "P2": "§7.3: ρ > 0 at p < 0.01 (t 461–841)",
    "P3": "§7.4, Tables 4–6",
    "P4": "§7.5, Tables 8–9",
    "P5": "§7.6: slope 0.95 [0.88, 1.02] ∋ 1",
}


# Prose written with ASCII names (verdict evidence, table notes, claims) shown with the paper's symbols.
_SYMBOLS = (
    (r"\bsqrt\(alpha_bar(_t)?\)", "√ᾱ_t"),
    (r"\balpha_bar(_t)?\b", "ᾱ_t"),
    (r"\blambda\*\*\*", "λ***"),
    (r"\blambda\*\*", "λ**"),
    (r"\blambda\*", "λ*"),
    (r"\blambda_", "λ_"),
    (r"\blambda\b", "λ"),
    (r"\bLambda_", "Λ_"),
    (r"\bkappa\^", "κ̂^"),
    (r"\bkappa_", "κ̂_"),
    (r"\bdelta\^", "δ̂^"),
    (r"\bDelta_t\b", "Δ_t"),
    (r"\bgamma_", "γ_"),
    (r"\brho\b", "ρ"),
    (r"\bPhi_", "Φ_"),
    (r" >= ", " ≥ "),
    (r" <= ", " ≤ "),
)


def symbols(text: str) -> str:
    """'rho(lambda_k, kappa^diag)' -> 'ρ(λ_k, κ̂^diag)': the paper's notation in report prose."""
    for pat, sym in _SYMBOLS:
        text = re.sub(pat, sym, text)
    return text


# ------------------------------------------------------------------------------------------- numbers
_NUMERIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
SIG_DIGITS = 4


def as_number(v):
    """A CSV cell's number (int or float) or the value unchanged: tables read from CSV hold strings."""
    if isinstance(v, str):
        s = v.strip()
        if s in ("nan", "NaN"):
            return math.nan
        if s in ("inf", "-inf"):
            return float(s)
        if _NUMERIC.match(s):
            return int(s) if re.fullmatch(r"[+-]?\d+", s) else float(s)
    return v


def fmt(v, digits: int = SIG_DIGITS) -> str:
    """A value to its significant digits: floats to ``digits`` (no 17-digit CSV floats), ints as they are."""
    v = as_number(v)
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—" if math.isnan(v) else ("∞" if v > 0 else "−∞")
        if v == 0.0:
            return "0"
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        out = f"{v:.{digits}g}"
        if "e" in out:
            mant, exp = out.split("e")
            return f"{mant}×10^{int(exp)}"
        return out.replace("-", "−")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x, digits) for x in v) + "]"
    return str(v)


def is_num(v) -> bool:
    v = as_number(v)
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_mean_se(mean: float, se: float) -> str:
    """mean ± se with the standard error to 2 significant digits and the mean to the same decimal place."""
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(se) or se <= 0:
        return fmt(mean)
    se = float(f"{se:.2g}")  # 0.0999999 -> 0.1, so the decimals follow the rounded error
    decimals = max(0, 1 - int(math.floor(math.log10(se))))
    return f"{mean:.{decimals}f} ± {se:.{decimals}f}".replace("-", "−")


# ------------------------------------------------------------------------------------------- headers
HEADERS = {
    "t": "t",
    "k": "k",
    "seed": "seed",
    "seeds": "seeds",
    "step": "step",
    "row": "row",
    "col": "col",
    "regime": "regime",
    "lambda_k": "λ_k",
    "trace": "tr Σ_k",
    "kappa_t": "κ̂_t",
    "kappa_diag": "κ̂^diag",
    "kappa_diag_std": "std κ̂^diag",
    "kappa_global": "global κ̂_t",
    "kappa_global_std": "std κ̂_t",
    "kappa_pc": "κ̂^pc",
    "kappa_pc_std": "std κ̂^pc",
    "delta_cross": "δ̂^cross",
    "delta_cross_std": "std δ̂^cross",
    "pc_margin": "1 − κ̂^diag − δ̂^cross",
    "suppression_mean": "mean S_k,t",
    "f_t_lambda_max": "f_t(λ_max)",
    "kappa_diag_minus_f_t_lambda_max": "κ̂^diag − f_t(λ_max)",
    "rho": "ρ",
    "p_value": "p",
    "rho_rayleigh": "ρ (Rayleigh)",
    "p_rayleigh": "p (Rayleigh)",
    "sig": "sig.",
    "mean": "mean",
    "std": "std",
    "min": "min",
    "max": "max",
    "n_seeds": "seeds",
    "n_seeds_unflagged": "seeds (unflagged)",
    "mean_unflagged": "mean (unflagged)",
    "std_unflagged": "std (unflagged)",
    "mean_lanczos": "mean (Lanczos)",
    "s_hat": "ŝ = ∏ κ̂_t",
    "log_s_hat": "log ŝ",
    "modified_z": "modified z",
    "outlier": "flagged",
    "S_mean": "mean S_k,t",
    "S_min": "min S_k,t",
    "S_max": "max S_k,t",
    "frac_S_positive": "share S > 0",
    "f_spread": "f_t spread",
    "entropy_nats": "H(A_t) [nats]",
    "entropy_std": "std H(A_t)",
    "distance": "Chebyshev distance",
    "n_pairs": "pairs",
    "frac_violated": "share (PC) violated",
    "frac_violated_seed_patch": "share violated (seed, patch)",
    "n_violated": "violated",
    "n_patches": "patches",
    "mean_slack": "mean (PC) slack",
    "min_slack": "min (PC) slack",
    "gamma_min": "min γ_k,t",
    "gamma_max": "max γ_k,t",
    "t_rel": "t_k^rel",
    "t_rel_persistent": "t_k^rel (persistent)",
    "t_rel_seed_median": "t_k^rel (seed median)",
    "complete": "complete",
    "proxy": "E‖Δ̂_t‖₂",
    "proxy_std": "std E‖Δ̂_t‖₂",
    "sqrt_alpha_bar": "√ᾱ_t",
    "alpha_bar": "ᾱ_t",
    "in_fit": "in fit",
    "exact_deviation": "exact ‖Δ_t‖₂",
    "lyap_pred": "Λ_pred",
    "lyap_hat": "Λ̂",
    "lyap_hat_std": "std Λ̂",
    "lyap_pred_from_S": "Λ_pred from S",
    "n_traj": "trajectories",
    "sign_agree": "signs agree",
    "n_steps": "steps",
    "quantity": "quantity",
    "paper": "paper",
    "ours": "this run",
    "kind": "kind",
    "n_decidable": "decidable",
    "n_over": "beyond tol.",
    "max_rel_error": "max |error| / |closed − trivial|",
    "p_adj": "q (BH)",
    "rho_exact": "ρ (exact S)",
    "p_exact": "p (exact S)",
    "S_exact_mean": "mean exact S",
    "frac_expanding": "share f_t > 1",
    "lyap_pred_sparse": "Λ_pred (sparse)",
    "lyap_pred_surrogate": "Λ_pred (eq. 30 surrogate)",
    "lyap_gauss": "Λ(λ_k) Gaussian",
    "lyap_hat_p_adj": "q of Λ̂ (BH)",
    "lyap_hat_sign": "sign of Λ̂",
    "sign_agree_sparse": "signs agree (sparse)",
    "sign_agree_surrogate": "signs agree (surrogate)",
    "sign_agree_gauss": "signs agree (Gaussian)",
    "proxy_over_exact": "proxy / exact",
    "mean_pi": "mean (K_PI power it.)",
    "outcome": "outcome",
    "test": "test",
    "effect": "effect (interval)",
    "correction": "correction",
    "why": "why",
    "part": "part",
    "difference": "difference",
    "tolerance": "tolerance",
    "status": "status",
    "note": "note",
    "closed_form": "closed form",
    "measured": "measured",
    "max_abs_error": "max |error|",
    "diagnostic": "diagnostic",
    # schedule geometry (Tables 1-2)
    "N": "N",
    "mean_L": "mean L*_t",
    "cv_L": "CV of L*_t",
    "L_finest": "L* at finest t",
    "finest_t": "finest t",
    "min_lambda_star": "min λ*(t)",
    "argmin_t": "argmin t",
    "lambda_starstar": "λ**",
    "margin": "λ** − min λ*",
    "interior_max_lambda_star": "interior max λ*(t)",
    "interior_argmax_t": "argmax t",
    "paper_ref": "paper",
}
_TOKENS = (
    ("lambda", "λ"),
    ("kappa", "κ̂"),
    ("delta", "δ̂"),
    ("gamma", "γ"),
    ("sqrt_alpha_bar", "√ᾱ"),
    ("alpha_bar", "ᾱ"),
    ("rho", "ρ"),
    ("sigma", "σ"),
)


def header(col: str) -> str:
    """Readable column header with the paper's symbols (the CSV column id stays in the cell's title)."""
    if col in HEADERS:
        return HEADERS[col]
    out = col
    for raw, sym in _TOKENS:
        out = out.replace(raw, sym)
    return out.replace("_", " ")


# ------------------------------------------------------------------------------------------ statuses
def status_class(status: str) -> str:
    s = str(status).lower()
    if s.startswith("oracle:"):
        return "oracle-bad" if "not" in s else "oracle-ok"
    if s.startswith("reference") or s.startswith("not applicable"):
        return "reference"
    if s.startswith("no ") or s.startswith("not built"):
        return "no-data"
    if s.startswith(("identity", "structural")):
        return "named"
    if s.startswith(("extrapolated", "cannot separate", "not converged")):
        return "partly-supported"
    return re.sub(r"[^a-z-]", "", s.replace(" ", "-"))


def shown_status(status: str, reference: bool) -> str:
    """A comparison row's status as shown: for a non-paper model every status is 'reference: …'."""
    if reference and not str(status).startswith("reference"):
        return f"reference: {status}"
    return str(status)


@dataclass
class Cell:
    text: str
    cls: str = ""
    title: str = ""


@dataclass
class TableView:
    """A table ready for a template: human headers, formatted cells, status colours."""

    columns: list[tuple[str, str, bool]]  # (csv id, header, numeric)
    rows: list[list[Cell]]

    @property
    def n(self) -> int:
        return len(self.rows)


def table_view(
    columns, rows, status_col: str | None = None, reference: bool = False, verbatim: tuple[str, ...] = ()
) -> TableView:
    """Rows as a view; ``verbatim`` columns are shown exactly as given (printed digits, not reformatted)."""
    first = rows[0] if rows else {}
    cols = [(c, header(c), is_num(first.get(c))) for c in columns]
    out = []
    for r in rows:
        cells = []
        for c, _, _ in cols:
            v = r.get(c)
            cls = "" if is_num(v) else "txt"
            text = str(v) if c in verbatim and v is not None else fmt(v)
            if c == status_col and v is not None:
                text = shown_status(v, reference)
                cls += " " + status_class(text)
            cells.append(Cell(text, cls.strip()))
        out.append(cells)
    return TableView(cols, out)


# ------------------------------------------------------------------------------------ summary block
@dataclass
class SummaryRow:
    """One row of the verdicts-first block: a claim or a table, the paper, each run, the verdict."""

    key: str
    item: str
    paper: str
    runs: list[Cell]
    verdict: Cell
    anchor: str = ""
    key_label: str = ""

    def __post_init__(self) -> None:
        if not self.key_label:
            self.key_label = "Oracle" if self.key == "oracle" else self.key


@dataclass
class SummaryBlock:
    run_labels: list[str]
    rows: list[SummaryRow]
    counts: list[str] = field(default_factory=list)


def count_phrase(statuses: list[str]) -> str:
    """'2 supported, 1 partly supported' in first-seen order."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def comparison_counts(
    statuses: list[str], reference: bool, kinds: list[str] | None = None
) -> tuple[str, str]:
    """(text, css class) for one table's paper-vs-run rows: independent rows are scored ('3/5 agree'), the rest
    named by kind after a '+' ('+2 re-derived, 1 identity': shown, never scored); 'ref.: ...' for a non-paper
    model."""
    if not statuses:
        return "built (no paper number)", "no-data"
    kinds = kinds or ["independent"] * len(statuses)
    ind = [s for s, k in zip(statuses, kinds, strict=True) if k.startswith("independent")]
    named = count_phrase([k.split(" (")[0] for k in kinds if not k.startswith("independent")])
    tail = f"; +{named}" if named else ""
    scored = [s for s in ind if s.split(" (")[0] in ("agrees", "differs")]
    agree = sum(s == "agrees" for s in scored)
    if reference or all(s.startswith("reference") for s in ind):
        if scored:
            return f"ref.: {agree}/{len(scored)} within tol.{tail}", "reference"
        return f"ref.: {len(ind)} values{tail}", "reference"
    if not scored:
        return (count_phrase(ind) or "none independent") + tail, "no-data"
    rest = [s for s in ind if s not in ("agrees", "differs")]
    text = f"{agree}/{len(scored)} agree" + (f"; {count_phrase(rest)}" if rest else "") + tail
    cls = "agrees" if agree == len(scored) else "partly-supported" if agree else "differs"
    return text, cls


LEARNED_STATUSES = ("supported", "partly supported", "not supported", "inconclusive")


def claim_verdict(statuses: list[tuple[str, str]]) -> Cell:
    """The row's verdict from (run label, status) pairs: a learned model's test decides; the oracle's
    closed-form check stands only where no learned model was measured."""
    learned = [(lab, s) for lab, s in statuses if s in LEARNED_STATUSES]
    if learned:
        lab, s = learned[0]
        return Cell(s, status_class(s), f"decided by {lab}")
    oracle = [(lab, s) for lab, s in statuses if s.startswith("oracle:")]
    if oracle:
        lab, s = oracle[0]
        return Cell(s[len("oracle: ") :], status_class(s), f"decided by {lab}'s closed form")
    return Cell("not tested", "no-data")
