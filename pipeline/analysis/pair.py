"""Two jacobian runs side by side (e.g. μ_reg = 0 vs μ_reg > 0, Theorem 15): per paper t, δ̂^cross and the (PC)
margin 1 − κ̂^diag − δ̂^cross as mean ± standard error over seeds, their difference and its z-score.

python -m pipeline.analysis.pair <jacobian run A> <jacobian run B> [--labels A B] [--out pair.md]
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.errors import CommandLineParser
from pipeline.outputs import JacobianFolder

QUANTITIES = {
    "delta_cross": lambda r: r["delta_cross"],
    "pc_margin": lambda r: 1.0 - r["kappa_diag"] - r["delta_cross"],
}


def _by_t(rows: list[dict]) -> dict[int, dict[str, np.ndarray]]:
    out: dict[int, dict[str, list[float]]] = {}
    for r in rows:
        v = {"kappa_diag": float(r["kappa_diag"]), "delta_cross": float(r["delta_cross"])}
        d = out.setdefault(int(r["t"]), {q: [] for q in QUANTITIES})
        for q, f in QUANTITIES.items():
            d[q].append(f(v))
    return {t: {q: np.asarray(v) for q, v in d.items()} for t, d in out.items()}


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")


def pair_rows(global_a: list[dict], global_b: list[dict]) -> list[dict]:
    """Per t present in both runs: mean, SE of each quantity for A and B, B − A and z = (B − A)/√(SE_A² + SE_B²)."""
    a, b = _by_t(global_a), _by_t(global_b)
    rows = []
    for t in sorted(set(a) & set(b), reverse=True):
        row: dict = {
            "t": t,
            "seeds_a": int(a[t]["delta_cross"].size),
            "seeds_b": int(b[t]["delta_cross"].size),
        }
        for q in QUANTITIES:
            (ma, sa), (mb, sb) = _mean_se(a[t][q]), _mean_se(b[t][q])
            row.update(
                {
                    f"{q}_a": ma,
                    f"{q}_a_se": sa,
                    f"{q}_b": mb,
                    f"{q}_b_se": sb,
                    f"{q}_diff": mb - ma,
                    f"{q}_z": (mb - ma) / math.hypot(sa, sb) if math.hypot(sa, sb) > 0 else float("nan"),
                }
            )
        rows.append(row)
    return rows


def pair_markdown(rows: list[dict], labels: tuple[str, str] = ("A", "B")) -> str:
    la, lb = labels
    head = (
        f"| t | seeds | δ̂^cross {la} | δ̂^cross {lb} | Δ (z) | margin {la} | margin {lb} | Δ (z) |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    body = ""
    for r in rows:
        cells = [str(r["t"]), f"{r['seeds_a']}/{r['seeds_b']}"]
        for q in QUANTITIES:
            cells += [
                f"{r[f'{q}_a']:.4f} ± {r[f'{q}_a_se']:.4f}",
                f"{r[f'{q}_b']:.4f} ± {r[f'{q}_b_se']:.4f}",
                f"{r[f'{q}_diff']:+.4f} ({r[f'{q}_z']:+.1f})",
            ]
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def main(argv: list[str] | None = None, prog: str = "python -m pipeline.analysis.pair") -> int:
    ap = CommandLineParser(prog=prog, description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--labels", nargs=2, default=["A", "B"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    tables = []
    for run in (args.run_a, args.run_b):
        if not (run / JacobianFolder.GLOBAL).is_file():
            raise SystemExit(
                f"error: {run} has no global.csv — pass jacobian stage output folders (outputs/jacobian/<key>)"
            )
        tables.append(io.read_csv(run / JacobianFolder.GLOBAL))
    text = pair_markdown(pair_rows(*tables), tuple(args.labels))
    if args.out:
        io.write_text(args.out, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
