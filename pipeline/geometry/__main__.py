"""`python -m pipeline.geometry [--csv] [--out PATH]`: the model-free schedule geometry table.

Readable (aligned, 6 significant digits) by default; ``--csv`` prints the CSV at full precision and
``--out PATH`` writes it to a file (atomically), as the analysis stage does.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys

from pipeline.errors import CommandLineParser
from pipeline.io import write_csv

from .table import COLUMNS, default_geometry_rows

DESCRIPTION = (
    "The schedule geometry table, no model or data needed: for each schedule and sampler chain of the "
    "paper, the mean and CV of the contraction threshold L*_t (eq. 10), L*_t at the finest step (Table 1), "
    "min_t λ*(t) of eq. 27 and where it falls (§6.2, §7.4), λ** of eq. 45 (Theorem 25) and the margin "
    "between them. Timesteps are the paper's 1-based t. Prints an aligned table with 6 significant "
    "digits; --csv prints the full-precision CSV and --out writes it to a file."
)

# readable headers in the paper's symbols
HEADERS = {
    "schedule": "schedule",
    "chain": "chain",
    "N": "N",
    "mean_L": "mean L*",
    "cv_L": "CV L*",
    "L_finest": "L* finest",
    "finest_t": "t finest",
    "min_lambda_star": "min λ*",
    "argmin_t": "argmin t",
    "lambda_starstar": "λ**",
    "margin": "λ** − min λ*",
    "interior_max_lambda_star": "max λ* interior",
    "interior_argmax_t": "argmax t",
    "formula": "formula",
    "paper_ref": "paper",
}


def format_cell(v: object, digits: int = 6) -> str:
    """Floats to ``digits`` significant digits, trailing zeros kept (1.00250, not 1.0025); NaN as n/a."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:#.{digits}g}".rstrip(".") if math.isfinite(v) else "n/a"
    return str(v)


def text_table(rows: list[dict[str, object]], columns: tuple[str, ...], digits: int = 6) -> str:
    """Rows as an aligned plain-text table: text left-aligned, numbers right-aligned."""
    cells = [[format_cell(r.get(c), digits) for c in columns] for r in rows]
    heads = [HEADERS.get(c, c) for c in columns]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(heads), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out) + "\n"


def csv_text(rows: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})
    return buf.getvalue()


def build_parser(prog: str = "python -m pipeline.geometry") -> argparse.ArgumentParser:
    ap = CommandLineParser(prog=prog, description=DESCRIPTION)
    ap.add_argument("--csv", action="store_true", help="print the CSV (full precision) instead of the table")
    ap.add_argument("--out", default=None, metavar="PATH", help="write the CSV to PATH (atomically)")
    return ap


def main(argv: list[str] | None = None, prog: str = "python -m pipeline.geometry") -> int:
    args = build_parser(prog).parse_args(argv)
    rows = default_geometry_rows()
    if args.out:
        write_csv(args.out, rows, COLUMNS)
        print(f"wrote {args.out}")
        return 0
    text = csv_text(rows) if args.csv else text_table(rows, COLUMNS)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader left; not an error
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
